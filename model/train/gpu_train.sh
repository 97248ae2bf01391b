#!/usr/bin/env bash
# The tiny DiT's training on a lent GPU, as one short command: two few-step objectives side by side on carried latent
# caches (the GPU interleaves two small models), EMA weights returned in half precision.
#
#   bash model/train/gpu_train.sh OUT_DIR MINUTES CACHES VAL_CACHE [INIT]
#
# CACHES: comma-separated latents.json files (model/train/latents.py; fp16 shards are fine). INIT: optional weights
# to start from. BATCH (default 128): the step is launch-bound on a GPU, so a bigger batch costs little time (memory:
# about 1 GB per 1k tokens of a batch in fp32). Each budget (--minutes) includes its calibration; logs: runs.tgz.
set -uo pipefail
OUT=${1:?usage: gpu_train.sh OUT_DIR MINUTES CACHES VAL_CACHE [INIT]}
MIN=${2:?minutes}
CACHES=${3:?caches}
VAL=${4:?val cache}
INIT=${5:-}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" work
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for obj in x0 flow; do
  python -m model.train.dit_train --latents "$CACHES" --val "$VAL" --out work/dit_$obj --preset tiny64 \
    --objective $obj --steps 40000 --batch "${BATCH:-128}" --seq-schedule 2:3000:128,5:10000,9:40000 --warmup 100 --lr 5e-4 \
    --eval-every 1000000 --eval-count 16 --ckpt-every 1000000 --log-every 25 --minutes "$MIN" --calib-steps 30 \
    --device cuda --no-amp --no-progress ${INIT:+--init "$INIT"} > work/dit_$obj.log 2>&1 &
done
wait
python -m model.train.pack "$OUT" work/dit_*
tar czf "$OUT/runs.tgz" work/dit_*/*.csv work/dit_*/*.json work/*.log 2>/dev/null
for obj in x0 flow; do echo "== $obj"; tail -3 work/dit_$obj.log; cat work/dit_$obj/budget.json 2>/dev/null | head -7; cat work/dit_$obj/eval.csv 2>/dev/null; done
