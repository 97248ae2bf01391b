#!/usr/bin/env bash
# One session on the lent GPU machine, as one command that fits one 600 s call: fresh training clips rendered
# there (with a deadline), the GPU tests meanwhile, the tiny DiT's training (model/train/gpu_train.sh), then the
# step-latency benchmark on the quiet GPU. Outputs that must survive a kill are written first.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [TRAIN_MINUTES] [CARRIED_LATENTS] [VAL_LATENTS] [INIT]
#
# Env: EXPORT_S (render deadline, default 75 s), WORKERS (render processes, 15), BENCH_S (benchmark limit, 110 s),
# DEVICE (cuda; cpu for a dry run) and gpu_train.sh's OBJECTIVES / BATCH / SCHEDULE / LR. Expects model/weights/tiny_vae.safetensors (the shipped
# VAE) and the carried latent caches (model/train/latents.py). OUT_DIR gets gpu_tests.log, the trained weights
# (half precision), runs.tgz (csv logs, budgets), session.tgz (render and latent logs), bench.log and
# step_latency_cuda.json.
set -uo pipefail
OUT=${1:?usage: gpu_session.sh OUT_DIR [TRAIN_MINUTES] [CARRIED_LATENTS] [VAL_LATENTS] [INIT]}
MIN=${2:-5.5}
CARRIED=${3:-data/train64c_lat16/latents.json}
VAL=${4:-data/heldout64_lat/latents.json}
INIT=${5:-}
VAE=model/weights/tiny_vae.safetensors
EXPORT_S=${EXPORT_S:-75}
WORKERS=${WORKERS:-15}
export DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" work
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

# 1. training clips until the deadline: WORKERS processes, each rendering batches of CLIPS (20) clips of 49 frames on
#    the GPU (scene seeds 50000-64999, 4 clips a scene; held-out seeds are >= 100000) and encoding each finished
#    batch to latents (windows of 9 latents every 8 frames) while it renders the next; a batch cut by the deadline
#    is dropped whole.
stamp render
deadline=$(( t0 + EXPORT_S ))
for w in $(seq 0 $((WORKERS - 1))); do
  (j=0
   while [ $(( deadline - $(date +%s) )) -gt 8 ]; do
     name=${w}_$j
     if timeout $(( deadline - $(date +%s) + 10 )) python -m sanawm_env.scenes.export --out work/clips_$name \
          --clips "${CLIPS:-20}" --frames 49 --size 64 --png --seed $((50000 + 1000 * w + 5 * j)) --no-compile \
          --device "$DEVICE" >> work/export_$w.log 2>&1; then
       python -m model.train.latents --data work/clips_$name/index.json --vae $VAE --out work/lat_$name --window 9 \
         --stride 8 --device "$DEVICE" --no-progress > work/lat_$name.log 2>&1 &
     fi
     j=$((j + 1))
   done
   wait) &
done
# 2. the GPU tests meanwhile
timeout 120 python -m pytest -m gpu tests/model -q -p no:cacheprovider 2>&1 | tail -30 | tee "$OUT/gpu_tests.log"
wait
caches=$CARRIED
for j in work/lat_*/latents.json; do [ -f "$j" ] && caches=$caches,$j; done
echo "caches: $caches" | tee "$OUT/caches.txt"

# 3. the tiny DiT (weights packed into OUT as soon as training ends)
stamp train
bash model/train/gpu_train.sh "$OUT" "$MIN" "$caches" "$VAL" "$INIT"
tar czf "$OUT/session.tgz" work/*.log 2>/dev/null

# 4. step latency on the quiet GPU
stamp bench
timeout "${BENCH_S:-110}" python benchmarks/step_latency.py --gpu-only --gpu-presets tiny --out "$OUT" 2>&1 \
  | tail -25 | tee "$OUT/bench.log"
ls -la "$OUT"
stamp done
