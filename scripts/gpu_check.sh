#!/usr/bin/env bash
# One-shot GPU check for the cuda_kernels task (about 5-8 minutes on an H200: reference kernels at the gpu preset,
# then 2 x 10 scorings of matmul 4096^3 for the timing spread). Installs nothing: it uses the machine's python3 with
# whatever torch/cupy/triton it has (and bubblewrap if present, else the weak sandbox mode), and says what is missing.
# Usage: bash scripts/gpu_check.sh [--deadline SECONDS] [--quick]
set -u
cd "$(dirname "$0")/.." || exit 1
log="${OUT:-/tmp}/gpu_check.log"
PY="${PYTHON:-python3}"
echo "gpu_check: $(date -u +%FT%TZ) python=$($PY -c 'import sys; print(sys.version.split()[0])' 2>&1) log=$log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader 2>&1 | head -2
command -v nvcc >/dev/null && nvcc --version | tail -1 || echo "nvcc: not found"
PYTHONUNBUFFERED=1 timeout "${GPU_CHECK_TIMEOUT:-500}" "$PY" scripts/gpu_check.py "$@" 2>&1 | tee "$log"
echo "gpu_check: exit ${PIPESTATUS[0]}"
