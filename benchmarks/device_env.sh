# Sourced on the GPU machine, in the repository root, with .device/ carried there (made by
# benchmarks/device_bundle.sh): installs the carried wheels beside the image's own packages.
#   source benchmarks/device_env.sh && python3 benchmarks/vaegan_vs_pythae.py --device cuda
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/whl/*.whl || return 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
