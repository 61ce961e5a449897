#!/usr/bin/env bash
# B3 on a bare NVIDIA H200 machine: fresh venv, the newest CUDA build of MXNet 1.9.1, a convolution check on
# the GPU, then U-Net and ENet trained for a fixed number of seconds each (images/s, held-out Dice).
#
#   benchmarks/gpu_h200.sh COHORT_DIR [SECONDS_PER_NETWORK]     # on the GPU machine, from the repo root
#   benchmarks/gpu_h200.sh --dry-run                            # here: no install, CPU, tiny dataset
#
# Sized for 15 minutes of device time all told: venv + install ~3-5 min (MXNet ~0.5 GB, CUDA 11 runtime
# wheels ~2 GB), check <1 min, 2 x SECONDS (default 150 s) of training plus a probe and the test split each.
# Results: $OUT/b3_gpu.json if $OUT is set (the device tool's output folder), else benchmarks/results/.
#
# Why these packages: MXNet 1.9.1 is the last release; its newest CUDA build on PyPI is mxnet-cu117 (CUDA
# 11.7, `pip index versions mxnet-cu117`). It loads the CUDA 11 runtime, cuBLAS, cuDNN 8, cuFFT, cuRAND,
# cuSOLVER, cuSPARSE, NVRTC and NCCL as shared libraries, which the nvidia-*-cu11 wheels provide; their lib
# folders go on LD_LIBRARY_PATH. It needs numpy < 1.24 (it uses np.bool), hence a Python <= 3.11.
# Hopper (compute capability 9.0) is newer than the architectures CUDA 11.7 compiles for (up to 8.6, plus
# PTX only where the build kept it): if the check says "no kernel image is available", MXNet 1.9.1 cannot run
# on this GPU and the script stops there, saying so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${OUT:-$ROOT/benchmarks/results}"

if [[ "${1:-}" == "--dry-run" ]]; then
    # The same driver on the CPU with the project's own environment: checks the script's logic, not the GPU.
    exec "${PYTHON:-python3}" benchmarks/gpu_train.py --dry-run --out "${2:-$OUT_DIR}"
fi

DATA="${1:?usage: benchmarks/gpu_h200.sh COHORT_DIR [SECONDS_PER_NETWORK] | --dry-run}"
SECONDS_PER_NETWORK="${2:-150}"
MXNET_PKG="${MXNET_PKG:-mxnet-cu117==1.9.1}"
VENV="${VENV:-/tmp/segqa-gpu-venv}"

PY=""
for candidate in python3.11 python3.10; do
    if command -v "$candidate" >/dev/null; then PY="$candidate"; break; fi
done
if [[ -z "$PY" ]]; then
    echo "gpu_h200: MXNet 1.9.1 needs numpy < 1.24, which has no wheels for $(python3 -V 2>&1); no Python <= 3.11" \
         "here, so MXNet cannot be installed on this machine" | tee "$OUT_DIR/b3_gpu_failed.txt" >&2
    exit 2
fi

echo "== fresh venv ($PY) in $VENV"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "== installing $MXNET_PKG and the CUDA 11 runtime wheels"
if ! "$VENV/bin/python" -m pip install -q "$MXNET_PKG" "numpy<1.24" "scipy<1.11" pillow \
        nvidia-cuda-runtime-cu11 nvidia-cublas-cu11 "nvidia-cudnn-cu11<9" nvidia-cufft-cu11 nvidia-curand-cu11 \
        nvidia-cusolver-cu11 nvidia-cusparse-cu11 nvidia-cuda-nvrtc-cu11 nvidia-nccl-cu11; then
    echo "gpu_h200: pip could not install $MXNET_PKG and the CUDA 11 wheels (no registry reachable?)" \
        | tee "$OUT_DIR/b3_gpu_failed.txt" >&2
    exit 2
fi
LIBS="$("$VENV/bin/python" - <<'EOF'
import glob, os, site
paths = set()
for base in site.getsitepackages():
    for lib in glob.glob(os.path.join(base, "nvidia", "*", "lib")):
        paths.add(lib)
print(":".join(sorted(paths)))
EOF
)"
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv || true

echo "== check and train (${SECONDS_PER_NETWORK} s per network)"
PYTHONUNBUFFERED=1 "$VENV/bin/python" benchmarks/gpu_train.py --data "$DATA" --seconds "$SECONDS_PER_NETWORK" \
    --context gpu --out "$OUT_DIR"
