#!/usr/bin/env bash
# The one call on a lent GPU machine (see benchmarks/gpu_run.py for the stages and what comes
# back). Prepare here with `bash benchmarks/device_bundle.sh`, then with the device tool:
#   run(carry=[".device"], command="bash benchmarks/gpu_run.sh", timeout_s=570)
# Rehearse here on the CPU (tests/test_gpu_run.py does):
#   bash benchmarks/gpu_run.sh --rehearse [--out DIR]
#
# On the GPU machine this installs the carried wheels beside the image's packages (into
# /tmp/site, on PYTHONPATH) and unpacks the carried Fashion-MNIST files; the install's log is
# $OUT/install.log. PYTHON names the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ " $* " != *" --rehearse "* ]]; then
    : "${OUT:?OUT must name the folder whose files come back}"
    mkdir -p "$OUT"
    {
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .device/whl/*.whl && echo "installed $(ls .device/whl | wc -l) wheels"
        for packed in .device/data/*/*.xz; do
            [[ -e $packed ]] || continue
            "$PYTHON" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[1][:-3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 22)' "$packed" && rm "$packed" && echo "unpacked $packed"
        done
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    } >"$OUT/install.log" 2>&1 || echo "install failed: see install.log (the stages still run)"
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" benchmarks/gpu_run.py "$@"
