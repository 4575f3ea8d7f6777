#!/usr/bin/env bash
# The GPU check, for a session that is lent a GPU (the `device` tool) or any CUDA host:
# the training engine's CUDA path on a 16,384-run sweep, in run-steps per second, with
# the CPU path's rate on a slice of the same sweep in the same process for the ratio.
# It needs only python3 with numpy and a CUDA build of torch (the device's image has
# both; the gpu image of docker-compose.yml too:
#   docker run --rm --gpus all -v "$PWD:/src" -w /src benignity-gpu:latest deploy/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PY
PYTHONUNBUFFERED=1 timeout "${GPU_CHECK_SECONDS:-480}" \
  python3 bench/training_gpu.py --runs "${RUNS:-16384}" --epochs "${EPOCHS:-20000}"
