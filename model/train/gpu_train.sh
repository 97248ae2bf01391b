#!/usr/bin/env bash
# The tiny DiT's training on a lent GPU, as one short command on carried latent caches; EMA weights returned in
# half precision.
#
#   bash model/train/gpu_train.sh OUT_DIR MINUTES CACHES VAL_CACHE [INIT]
#
# CACHES: comma-separated latents.json files (model/train/latents.py; fp16 shards are fine). INIT: optional weights
# to start from. Env:
# - OBJECTIVES (default "x0"): one run per objective, side by side on the one GPU (e.g. "x0 flow" to compare);
# - BATCH (default 256) and SCHEDULE (default "9:40000", T:until_step[:batch]): the step is launch-bound below a
#   few hundred windows, and a T=9 window keeps about 165 MiB of activations in fp32 (x0 + flow regulariser), so
#   256 windows need about 42 GiB;
# - LR (default 3e-4), GATE_LR_SCALE (default 0: the output skip's gates stay as INIT has them), EMA (0.99);
# - VAE: the caches' VAE (pixel-space warp models need it for evaluation and self-forcing);
# - DENOISE (default 1000,0, the one pass the shipped model runs; empty = the preset's schedule): the timesteps of
#   the x0 levels and self-forcing rollouts, written into the release config (stage 14 trained this way);
# - PRESET (default tiny64): tiny128 trains a grown model (model/train/tiny128.sh) on 128x128 caches.
# Each budget (--minutes) includes its calibration; logs and budgets go into OUT/runs.tgz.
set -uo pipefail
OUT=${1:?usage: gpu_train.sh OUT_DIR MINUTES CACHES VAL_CACHE [INIT]}
MIN=${2:?minutes}
CACHES=${3:?caches}
VAL=${4:?val cache}
INIT=${5:-}
DENOISE=${DENOISE-1000,0}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" work
for obj in ${OBJECTIVES:-x0}; do
  python -m model.train.dit_train --latents "$CACHES" --val "$VAL" --out work/dit_$obj --preset "${PRESET:-tiny64}" \
    --objective "$obj" --steps 40000 --batch "${BATCH:-256}" --seq-schedule "${SCHEDULE:-9:40000}" --warmup 100 \
    --lr "${LR:-3e-4}" --eval-every 1000000 --eval-count 16 --ckpt-every 1000000 --log-every 25 --minutes "$MIN" \
    --calib-steps 30 --device "${DEVICE:-cuda}" --no-amp --no-progress ${INIT:+--init "$INIT"} ${VAE:+--vae "$VAE"} \
    --gate-lr-scale "${GATE_LR_SCALE:-0}" --ema "${EMA:-0.99}" ${DENOISE:+--denoise-timesteps "$DENOISE"} \
    > work/dit_$obj.log 2>&1 &
done
wait
python -m model.train.pack "$OUT" work/dit_*/
tar czf "$OUT/runs.tgz" work/dit_*/*.csv work/dit_*/*.json work/*.log 2>/dev/null
for obj in ${OBJECTIVES:-x0}; do
  echo "== $obj"; tail -3 work/dit_$obj.log; cat work/dit_$obj/budget.json 2>/dev/null | head -7
  tail -4 work/dit_$obj/train.csv 2>/dev/null; cat work/dit_$obj/eval.csv 2>/dev/null
done
