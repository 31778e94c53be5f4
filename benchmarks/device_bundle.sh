#!/usr/bin/env bash
# Packs .device/ for a run on a lent GPU machine (no package index there; see the device tool's
# README): wheels (CPython 3.12, manylinux x86-64) of this project's pinned runtime and benchmark
# dependencies that the machine's image lacks (~36 MiB). Then, with the device tool:
#   run(carry=[".device"], command="source benchmarks/device_env.sh && python3 benchmarks/...")
#
#   bash benchmarks/device_bundle.sh            # writes .device/whl
#
# No dataset travels (the 64 MiB carry limit): on that machine the benchmarks fall back to the
# synthetic dataset, which has the real sets' shapes and so costs the same compute per step.
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

wanted=()
while read -r pin; do
    name=${pin%%==*}
    case "$IMAGE$NOT_HERE" in *" $name "* | *$'\n'"$name "* | *" $name"$'\n'*) continue ;; esac
    case $name in nvidia-* | cuda-*) continue ;; esac
    wanted+=("$pin")
done < <(uv export --frozen --no-hashes --no-emit-project --no-dev --group benchmarks \
    --format requirements-txt | grep -E '^[a-z0-9]' | grep -v "sys_platform == 'win32'" \
    | sed 's/ *;.*//' | sort -u)

echo "downloading ${#wanted[@]} wheels: ${wanted[*]}"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .device/whl "${wanted[@]}" 2>&1 | grep -v 'is ignored' || true
du -sh .device/whl
