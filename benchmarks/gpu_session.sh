#!/usr/bin/env bash
# One lent-GPU session for the tiny DiT, as one command that fits one 600 s call: training clips and a held-out
# validation set rendered there (with a deadline), their latents and pixel-space warp inputs through the shipped VAE
# (what the shipped DiT reads), the GPU tests meanwhile, then a fine-tune of the shipped DiT (model/train/gpu_train.sh)
# whose weights are packed into OUT_DIR as soon as it ends. Outputs that must survive a kill are written first.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [TRAIN_MINUTES] [CARRIED_LATENTS] [INIT]
#
# INIT: the weights to fine-tune (default: the shipped DiT). CARRIED_LATENTS: optional comma list of latents.json
# caches that already hold warp inputs (model/train/warps.py). Env: EXPORT_S (render deadline, 75 s), WORKERS (render
# processes, 15), CLIPS (clips per render batch, 20), KINDS (trajectory mix; default: the ninth session's mix with
# turns in place), VAL_CLIPS (held-out clips, 48, scene seeds from 300000: neither training nor benchmark scenes),
# DEVICE (cuda; cpu for a dry run) and gpu_train.sh's OBJECTIVES / BATCH / SCHEDULE / LR / GATE_LR_SCALE / EMA /
# DENOISE.
# OUT_DIR gets gpu_tests.log, caches.txt, the trained weights (half precision), runs.tgz (csv logs, budgets) and
# session.tgz (render, latent and warp logs). The step benchmarks are benchmarks/gpu_check.sh's.
set -uo pipefail
OUT=${1:?usage: gpu_session.sh OUT_DIR [TRAIN_MINUTES] [CARRIED_LATENTS] [INIT]}
MIN=${2:-5.5}
CARRIED=${3:-}
INIT=${4:-model/weights/tiny_dit.safetensors}
export VAE=model/weights/tiny_vae.safetensors
EXPORT_S=${EXPORT_S:-75}
WORKERS=${WORKERS:-15}
KINDS=${KINDS:-walk=0.3,path=0.1,rotation=0.1,look=0.3,revisit=0.1,orbit=0.05,jitter=0.05}
export DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" work
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

# render NAME CLIPS SEED SECONDS: clips of 49 frames, supersampled as the shipped DiT's training clips were
render() {
  timeout "$4" python -m sanawm_env.scenes.export --out "work/clips_$1" --clips "$2" --frames 49 --size 64 --png \
    --supersample 2 --kinds "$KINDS" --clips-per-scene 4 --seed "$3" --no-compile --device "$DEVICE" \
    >> "work/export_$1.log" 2>&1
}
# encode NAME: latents (windows of 9 latents every 8 frames), then their pixel-space warp inputs
encode() {
  python -m model.train.latents --data "work/clips_$1/index.json" --vae $VAE --out "work/lat_$1" --window 9 \
    --stride 8 --device "$DEVICE" --no-progress > "work/lat_$1.log" 2>&1 \
    && python -m model.train.warps --latents "work/lat_$1/latents.json" --vae $VAE --preset tiny64 \
      --device "$DEVICE" --no-progress > "work/warp_$1.log" 2>&1
}

# 1. the validation set, and training clips until the deadline: WORKERS processes rendering batches of CLIPS clips
#    (scene seeds 50000-64999) and encoding each finished batch while rendering the next; a batch cut by the deadline
#    is dropped whole.
stamp render
deadline=$(( t0 + EXPORT_S ))
(render val "${VAL_CLIPS:-48}" 300000 600 && encode val) &
for w in $(seq 0 $((WORKERS - 1))); do
  (j=0
   while [ $(( deadline - $(date +%s) )) -gt 8 ]; do
     if render "${w}_$j" "${CLIPS:-20}" $((50000 + 1000 * w + 5 * j)) $(( deadline - $(date +%s) + 10 )); then
       encode "${w}_$j" &   # beside the next render
     fi
     j=$((j + 1))
   done
   wait) &
done
# 2. the GPU tests meanwhile
[ "$DEVICE" = cuda ] && timeout 120 python -m pytest -m gpu tests/model -q -p no:cacheprovider 2>&1 | tail -30 \
  | tee "$OUT/gpu_tests.log"
wait
caches=$CARRIED
for j in work/lat_[0-9]*/latents.json; do
  grep -q '"warp"' "$j" 2>/dev/null && caches=${caches:+$caches,}$j
done
echo "caches: $caches" | tee "$OUT/caches.txt"
grep -q '"warp"' work/lat_val/latents.json 2>/dev/null || { echo "no validation cache (work/*val*.log)"; exit 1; }

# 3. the fine-tune (weights packed into OUT as soon as training ends)
stamp train
bash model/train/gpu_train.sh "$OUT" "$MIN" "$caches" work/lat_val/latents.json "$INIT"
tar czf "$OUT/session.tgz" work/*.log 2>/dev/null
ls -la "$OUT"
stamp done
