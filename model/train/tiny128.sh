#!/usr/bin/env bash
# The 128x128 candidate from the shipped 64x64 DiT, end to end (eighteenth session; model card item 16):
# render 960 in-place-turn clips at 128x128, their latents and pixel-space warp inputs through the shipped VAE, grow
# the DiT to 128x128 frames at the same token grid, fine-tune it (x0 few-step + 0.5 flow, one pass), then
# train it by self-forcing on its own rollouts.
#
#   bash model/train/tiny128.sh OUT_DIR [MINUTES] [SF_MINUTES]   # x0 (default 43) and self-forcing (default 27)
#
# On this 2-core CPU: render 6 min, latents + warps 16 min, grow 20 s, training as budgeted (a self-forcing step
# costs about 33 s on one thread; each budget is planned after 10 warm-up and CALIB timed steps). Env: LR (3e-4),
# SF_LR (1e-4), INIT (model/weights/tiny_dit.safetensors, the 64x64 weights to grow), THREADS (1 per process),
# SEEDS, CALIB (16), CLIPS (480 per seed). SF_MINUTES 0 stops after the x0 fine-tune.
# Dry run (about 10 min): CLIPS=8 CALIB=2 bash model/train/tiny128.sh OUT 0.5 1.5
set -euo pipefail
OUT=${1:?usage: tiny128.sh OUT_DIR [MINUTES] [SF_MINUTES]}
MIN=${2:-43}
PY=${PY:-python}
VAE=model/weights/tiny_vae.safetensors
SF_MIN=${3:-27}
INIT=${INIT:-model/weights/tiny_dit.safetensors}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$OUT"
caches=()
pids=()
for s in ${SEEDS:-70000 71000}; do
  d=$OUT/look128_$s
  (
    $PY -m sanawm_env.scenes.export --out "$d" --clips "${CLIPS:-480}" --frames 33 --size 128 --png --seed "$s" \
      --clips-per-scene 8 --kinds walk=0.3,path=0.1,rotation=0.1,look=0.3,revisit=0.1,orbit=0.05,jitter=0.05 \
      > /dev/null
    $PY -m model.train.latents --data "$d/index.json" --vae $VAE --out "${d}_lat" --window 9 \
      --threads "$OMP_NUM_THREADS" --no-progress
    $PY -m model.train.warps --latents "${d}_lat/latents.json" --vae $VAE --preset tiny128 \
      --threads "$OMP_NUM_THREADS" --no-progress
  ) > "$OUT/prep_$s.log" 2>&1 &
  pids+=($!)
  caches+=("${d}_lat/latents.json")
done
for p in "${pids[@]}"; do wait "$p"; done    # a bare `wait` returns 0 even when a prep failed; set -e stops here
first=${SEEDS:-70000}; first=${first%% *}
$PY -m model.train.grow --init "$INIT" --size 128 --data "$OUT/look128_$first/index.json" --vae $VAE \
  --out "$OUT/grow" --name tiny128 --frames 1024 --no-progress
# train RUN INIT MINUTES ARGS...: a fine-tune at the one pass the model runs, packed with the grown config
train() {
  local run=$1 init=$2 minutes=$3
  shift 3
  $PY -m model.train.dit_train --latents "$(IFS=,; echo "${caches[*]}")" --vae $VAE --init "$init" --out "$OUT/$run" \
    --preset tiny128 --denoise-timesteps 1000,0 --ema 0.99 --gate-lr-scale 0 --batch 8 --seq-schedule 9:100000 \
    --warmup 10 --minutes "$minutes" --calib-steps "${CALIB:-16}" --ckpt-every 50 --eval-every 100000 --log-every 10 \
    --threads "$OMP_NUM_THREADS" --device cpu --no-progress "$@"
  $PY -m model.train.pack "$OUT" "$OUT/$run" --config-from "$OUT/grow/dit.safetensors"
  cp $VAE "$OUT/${run}_vae.safetensors"
}
train x0 "$OUT/grow/dit.safetensors" "$MIN" --objective x0 --lr "${LR:-3e-4}"
last=x0
if [ "$SF_MIN" != 0 ]; then
  train sf "$OUT/x0/dit.safetensors" "$SF_MIN" --objective self-forcing --sf-every 2 --lr "${SF_LR:-1e-4}"
  last=sf
fi
echo "candidate: $OUT/$last.safetensors; measure: python benchmarks/fidelity.py --checkpoint $OUT/$last.safetensors"
