#!/usr/bin/env bash
# One session on the lent GPU machine, as one command: more training clips, the GPU tests, the tiny model's training
# (two few-step objectives side by side), then the step-latency benchmark on a quiet GPU.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [TRAIN_MINUTES] [CARRIED_LATENTS] [VAL_LATENTS]
#
# Expects model/weights/tiny_vae.safetensors (the shipped VAE) and the latent caches named (see model/train/latents.py).
# Everything it reports lands in OUT_DIR: gpu_tests.log, step_latency_cuda.json, bench.log, the two runs' EMA
# weights as half-precision safetensors, runs.tgz (their csv logs, budgets, metrics) and session.tgz (export logs).
set -uo pipefail
OUT=${1:?usage: gpu_session.sh OUT_DIR [TRAIN_MINUTES] [CARRIED_LATENTS] [VAL_LATENTS]}
MIN=${2:-4.5}
CARRIED=${3:-data/train64b_lat16/latents.json}
VAL=${4:-data/heldout64_lat/latents.json}
VAE=model/weights/tiny_vae.safetensors
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" work
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

# 1. more clips (training scene seeds 20000-33049; held-out seeds are >= 100000), ray-cast on the GPU
stamp export
for i in $(seq 0 13); do
  timeout 100 python -m sanawm_env.scenes.export --out work/clips_$i --clips 100 --frames 33 --size 64 --png \
    --seed $((20000 + 1000 * i)) --no-compile --device cuda > work/export_$i.log 2>&1 &
done
# 2. the GPU tests meanwhile
timeout 200 python -m pytest -m gpu tests/model -q -p no:cacheprovider 2>&1 | tail -30 | tee "$OUT/gpu_tests.log"
wait
stamp latents
caches=$CARRIED
for i in $(seq 0 13); do
  if [ -f work/clips_$i/index.json ]; then
    python -m model.train.latents --data work/clips_$i/index.json --vae $VAE --out work/lat_$i --window 9 \
      --device cuda --no-progress > work/lat_$i.log 2>&1 &
  fi
done
wait
for i in $(seq 0 13); do [ -f work/lat_$i/latents.json ] && caches=$caches,work/lat_$i/latents.json; done
echo "caches: $caches" | tee "$OUT/caches.txt"
tail -3 work/export_0.log work/lat_0.log 2>/dev/null | tail -8

# 3. the tiny DiT's training (model/train/gpu_train.sh: two objectives side by side, weights packed into OUT)
stamp train
bash model/train/gpu_train.sh "$OUT" "$MIN" "$caches" "$VAL"

# 4. step latency on the quiet GPU
stamp bench
timeout 150 python benchmarks/step_latency.py --gpu-only --out "$OUT" 2>&1 | tail -25 | tee "$OUT/bench.log"

tar czf "$OUT/session.tgz" work/*.log 2>/dev/null
ls -la "$OUT"
stamp done
