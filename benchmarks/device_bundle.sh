#!/usr/bin/env bash
# Packs .device/ for benchmarks/gpu_run.sh on a lent GPU machine (no package index there; see the
# device tool's README), and checks that everything that travels fits:
#   .device/whl   wheels (CPython 3.12, manylinux x86-64) of what the machine's image lacks: the
#                 closure in uv.lock of this project's runtime dependencies and the benchmarks group
#                 (Pythae), with mlflow-skinny (the tracking client and its SQL store: SQLAlchemy,
#                 Alembic) in place of full mlflow (its web UI is most of its 30 MB, and the GPU run
#                 needs no server), minus the packages the image already has;
#   .device/data  the real Fashion-MNIST files (/usr/share/datasets/fashion-mnist, ~31 MB).
# Then prints the total that travels (the working tree, tracked and untracked-not-ignored, plus
# .device) and fails above 60 MiB (the tool's limit is 64 MiB a call). With the device tool:
#   run(carry=[".device"], command="bash benchmarks/gpu_run.sh", timeout_s=570)
#
#   bash benchmarks/device_bundle.sh            # writes .device/
#
# The image's packages (torch, torchvision, numpy, pandas, matplotlib, pyarrow, jinja2, click, ...)
# are used as they are; IMAGE below lists them as the device README read them on 2026-11-17. The
# versions of the wheels are uv.lock's.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=" absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio
h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions
nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp "
# a Python 3.6 backport that would shadow the stdlib (pythae asks for it without a marker)
NOT_HERE=" dataclasses "

mkdir -p .git/info
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
rm -rf .device && mkdir -p .device/whl

LIMIT_MIB=60
FASHION=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
# the packages to leave out: the image's, and full mlflow (skinny replaces it). The Databricks SDK
# travels without its dependencies (google-auth ...): mlflow only looks its namespace up.
export SKIP="$IMAGE $NOT_HERE mlflow "
mapfile -t wanted < <(python3 - <<'PY'
import os, tomllib
lock = {p["name"]: p for p in tomllib.load(open("uv.lock", "rb"))["package"]}
skip = set(os.environ["SKIP"].split())
no_deps = {"databricks-sdk"}
project = next(p for p in lock.values() if p.get("source", {}).get("editable") == ".")
# the tracking client and its SQL store; mlflow's registry tables import cryptography's Fernet
roots = [d["name"] for d in project["dependencies"]]
roots += ["mlflow-skinny", "sqlalchemy", "alembic", "cryptography"]
roots += [d["name"] for d in project.get("dev-dependencies", {}).get("benchmarks", [])]
seen, stack = set(), list(roots)
while stack:
    name = stack.pop()
    if name in seen or name in skip or name.startswith(("nvidia-", "cuda-")):
        continue
    seen.add(name)
    for dep in [] if name in no_deps else lock[name].get("dependencies", []):
        if "win32" not in dep.get("marker", "") and "< '3.12'" not in dep.get("marker", ""):
            stack.append(dep["name"])
for name in sorted(seen):
    versions = [lock[name]["version"]] if "version" in lock[name] else []
    print(f"{name}=={versions[0]}" if versions else name)
PY
)
echo "downloading ${#wanted[@]} wheels: ${wanted[*]}"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .device/whl "${wanted[@]}" 2>&1 | grep -v 'is ignored' || true
du -sh .device/whl

# xz packs the IDX files 4 MB tighter than their gzip; gpu_run.sh unpacks them there
mkdir -p .device/data/fashion-mnist
for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
    t10k-labels-idx1-ubyte; do
    [[ -f $FASHION/$stem.gz ]] || { echo "error: no $FASHION/$stem.gz: set FASHION_MNIST" >&2; exit 1; }
    gzip -dc "$FASHION/$stem.gz" | xz -9e -T2 >".device/data/fashion-mnist/$stem.xz"
done

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
    | awk '{s += $1} END {print s + 0}')
wheels=$(du -sb .device/whl | cut -f1)
data=$(du -sb .device/data | cut -f1)
total=$((tree + wheels + data))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "travels: working tree $(mib "$tree") + wheels $(mib "$wheels") + data $(mib "$data") = $(mib "$total") (limit $LIMIT_MIB MiB)"
if ((total > LIMIT_MIB * 1048576)); then
    echo "error: $(mib "$total") is over $LIMIT_MIB MiB: slim the wheels or the tree" >&2
    exit 1
fi
