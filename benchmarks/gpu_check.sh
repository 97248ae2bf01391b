#!/usr/bin/env bash
# The streaming generator's GPU checks as one command for a lent GPU machine (about 3 minutes on an H100 until the
# fused-block rows came; budget 9): the GPU tests, then the tiny step rows (eager, graph, graph with fused kernels,
# per function and per block) and the published preset's streamed step
# with its profile. Each part has its own deadline; the benchmarks write their JSON as rows come.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# The env's GPU test needs gymnasium, which the GPU image lacks: fetch it here first with
# ../shared/tools/device-wheels.sh and pass carry=[".whl"]; without .whl/ only tests/model's GPU tests run.
# OUT_DIR gets gpu_tests.log, bench.log, step_latency_cuda.json, published.log and published_pass_cuda.json.
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
tests=tests/model
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH && tests="tests/model tests/env"
fi
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
stamp tests
timeout 150 python -m pytest -m gpu $tests -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -8
stamp tiny
timeout 180 python benchmarks/step_latency.py --gpu-only --gpu-presets tiny --out "$OUT" 2>&1 | grep -v "it/s" \
  | tee "$OUT/bench.log" | tail -16
stamp published
timeout 240 python benchmarks/published_pass.py --out "$OUT" 2>&1 | grep -v "Warning\|warn(" \
  | tee "$OUT/published.log" | tail -60
stamp done
