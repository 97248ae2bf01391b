"""Train the SANA-WM DiT chunk-causally on cached VAE latents, with a few-step objective for streaming.

    # 1. latents of the training and held-out clips (once)
    python -m model.train.latents --data data/train/index.json --vae runs/vae/vae.safetensors --out data/train_lat \
        --window 9 --device cuda
    python -m model.train.latents --data data/val/index.json --vae runs/vae/vae.safetensors --out data/val_lat \
        --window 9 --device cuda
    # 2. the DiT (one GPU); --objective flow | x0 | self-forcing
    python -m model.train.dit_train --latents data/train_lat/latents.json --val data/val_lat/latents.json \
        --vae runs/vae/vae.safetensors --out runs/dit --preset tiny --objective x0 --steps 30000 --batch 32 \
        --seq-schedule 2:5000,4:15000,8:30000 --device cuda
    # resume after a kill: the same command plus --resume
    # several processes (gloo on CPU, nccl on CUDA); --batch is per process
    torchrun --nproc_per_node=2 -m model.train.dit_train --latents data/train_lat/latents.json --out runs/dit --ddp
    # tiny CPU run (seconds), after the tiny VAE and latents runs in their docstrings
    OMP_NUM_THREADS=1 python -m model.train.dit_train --latents /tmp/lat/latents.json --out /tmp/dit \
        --preset micro --steps 20 --batch 2 --seq-schedule 2:10,3:20 --device cpu --objective x0

The result, `out/dit.safetensors` (EMA weights, config in the metadata) with `out/vae.safetensors` beside it, loads
with `StreamingGenerator.from_pretrained("out/dit.safetensors")`.

Training form, and why:
- A sample is a prefix of T latents of a cached window, laid out chunk-causally as [1, Tc, Tc, ...]: latent 0 is the
  clean image latent (timestep 0), exactly what `StreamingGenerator.reset` writes; captions are null.
- Camera inputs come from `latents.camera_conditioning`, which calls the generator's own `_first_camera` /
  `_chunk_camera`: relative c2w anchored at each latent's last raw frame, Plücker of its own raw frames, UCPE rays
  built inside the model from the same conditions.
- Progressive sequence scaling: `--seq-schedule T:until_step[:batch],...` (short sequences first).
- Flow matching (x_sigma = (1 - sigma) x0 + sigma noise, v = noise - x0) with one sigma per chunk, independent
  (diffusion forcing: each chunk learns to denoise given history at any noise level), logit-normal with a shift;
  a --teacher-forcing fraction of samples has all history clean and only the last chunk noised, which is exactly
  what streaming sees. Sigmas are snapped to the integer timesteps the model reads (it truncates to integers).
- EMA weights are the release; AdamW, warmup + cosine LR, gradient clipping, bf16 autocast on CUDA, optional
  gradient checkpointing. Resumable from `last.pt` (model, EMA, optimizer, step); LR and randomness are functions
  of the step, so a resumed run is bit-identical on CPU to an uninterrupted one.

Few-step objectives (`--objective`), each one small function below:
- flow: plain diffusion-forcing flow matching; inference uses the config's few `denoise_timesteps` as they are.
- x0: trains at exactly the inference sigmas with the sampler in the loop. Each target chunk gets a step index i;
  its input at sigma_i is produced by the model's own few-step sampler from noise (no grad), the way it will be at
  inference, and the loss is on x0 = x_sigma - sigma v (one Euler step to clean) against the data. Plus
  --flow-weight x flow matching as a regulariser.
- self-forcing: the x0 objective, and every --sf-every steps the history is the model's own autoregressive rollout
  (full chunk-causal forward with its generated chunks, as streaming runs) instead of ground truth; the last chunk
  is trained against ground truth, so the model learns to recover from its own drift.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import load_into, read_state_dict, save_checkpoint
from ..config import WorldModelConfig, get_config
from ..schedule import add_noise, sample_train_sigmas, velocity_target
from ..transformer import SanaWMTransformer, build_model
from .common import (
    CSVLog,
    Dist,
    RunArgs,
    StopFlag,
    Throughput,
    allreduce_grads,
    allreduce_mean,
    any_rank,
    args_dict,
    autocast,
    broadcast_module,
    check_resume_args,
    cosine_lr,
    ema_update_,
    load_state,
    parse_args,
    resolve_device,
    rng_state,
    save_state,
    seed_everything,
    set_lr,
    set_rng_state,
    setup_ddp,
    setup_threads,
    state_hash,
    step_generator,
    teardown_ddp,
)
from .evaluate import LatentBatch, chunk_layout, dit_fidelity, few_step_sigmas, rollout
from .latents import LatentCache, load_vae
from .warps import check_depth, depth_overrides

OBJECTIVES = ("flow", "x0", "self-forcing")
SAMPLERS = ("euler", "renoise")


@dataclass
class Args(RunArgs):
    latents: str
    """training latent cache (latents.json from `model.train.latents`); "a.json,b.json" concatenates caches"""
    out: str = "runs/dit"
    """run folder: last.pt, train.csv, eval.csv, dit.safetensors (+ vae.safetensors), dit.json"""
    val: str | None = None
    """held-out latent cache for evaluation; none = no evaluation"""
    vae: str | None = None
    """the VAE of the caches: copied next to dit.safetensors, and decodes evaluation rollouts for PSNR"""
    init: str | None = None
    """start from these weights (a dit.safetensors or a last.pt), e.g. x0 fine-tuning of a flow model"""
    preset: str = "tiny"
    """model preset (model.config.PRESETS)"""
    denoise_timesteps: tuple[int, ...] | None = None
    """few-step timesteps of the x0 levels, the self-forcing rollouts and evaluation, written into the release
    config (e.g. 1000,0 to train the one pass that ships); none = the preset's"""
    inverse_depth: float | None = None
    """the warps' inverse depth (WorldModelConfig.warp_inverse_depth, 1 / metres), written into the release config;
    none = the preset's. Cached warp inputs must have been made with the same (python -m model.train.warps)"""
    floor: float | None = None
    """the warps' floor (WorldModelConfig.warp_floor, metres below the first camera), as --inverse-depth"""
    objective: str = "flow"
    """flow, x0 or self-forcing (see the module docstring)"""
    steps: int = 30000
    """total optimizer steps"""
    batch: int = 16
    """windows per step and process (a --seq-schedule entry may override it)"""
    seq_schedule: str = "2:5000,4:15000,8:30000"
    """latent frames per sample up to a step: T:until_step[:batch],...; the last T holds afterwards"""
    lr: float = 3e-4
    """peak learning rate"""
    min_lr_ratio: float = 0.1
    """final LR as a fraction of --lr"""
    warmup: int = 1000
    """linear warmup steps"""
    ema: float = 0.999
    """EMA decay of the release weights"""
    gate_lr_scale: float = 30.0
    """LR multiplier of the warp-skip gates (warp_skip presets): they start at 0 and need to reach ~1; 0 keeps
    them as --init has them (a fine-tune around hand-set gates)"""
    shift: float = 1.0
    """timestep shift of the training sigmas (s > 1: more high-noise training)"""
    logit_mean: float = 0.0
    """logit-normal mean of the training sigmas"""
    logit_std: float = 1.0
    """logit-normal std of the training sigmas"""
    teacher_forcing: float = 0.25
    """fraction of samples whose history is all clean (only the last chunk is a target)"""
    flow_weight: float = 0.5
    """x0 / self-forcing: weight of the flow-matching regulariser (0 = none, one forward less)"""
    sampler: str = "euler"
    """few-step sampler in the x0 pre-roll, rollouts and evaluation: euler or renoise (as StreamingGenerator)"""
    sf_every: int = 4
    """self-forcing: a rollout step every this many steps"""
    grad_ckpt: bool = False
    """gradient checkpointing of the blocks (less memory, ~30% more compute)"""
    eval_every: int = 1000
    """evaluation interval in steps (EMA weights, held-out cache)"""
    eval_count: int = 16
    """held-out windows per evaluation"""
    minutes: float = 0.0
    """wall-clock budget: after --calib-steps timed steps, --steps and the --seq-schedule are scaled down to fit
    (0 = off); the resolved values are written to budget.json"""
    calib_steps: int = 40
    """steps timed (after 10 warm-up steps) to plan a --minutes budget"""


TRAIN_FIELDS = ["step", "loss", "main", "flow_reg", "lr", "grad_norm", "seq", "batch", "rollout", "samples_per_s",
                "elapsed_s"]
EVAL_FIELDS = ["step", "val_flow", "fewstep_mse", "rollout_mse", "rollout_mse_last", "fewstep_psnr", "rollout_psnr",
               "rollout_ssim"]
RESUME_KEYS = ("preset", "objective", "denoise_timesteps", "inverse_depth", "floor")


# ----------------------------------------------------------------------------------------------------------------------
# Sequence schedule


def parse_seq_schedule(text: str, cfg: WorldModelConfig, default_batch: int) -> list[tuple[int, int, int]]:
    """"T:until[:batch],..." -> [(T, until, batch)], checked: T = 1 + Tc k >= 2, until increasing."""
    out = []
    for part in [p for p in text.replace(" ", "").split(",") if p]:
        bits = part.split(":")
        if len(bits) not in (2, 3) or not all(b.isdigit() for b in bits):
            raise ValueError(f"--seq-schedule entries are T:until_step[:batch], got {part!r} in {text!r}")
        t, until = int(bits[0]), int(bits[1])
        batch = int(bits[2]) if len(bits) == 3 else default_batch
        chunk_layout(cfg, t)
        if t < 2 or batch < 1:
            raise ValueError(f"--seq-schedule: T must be >= 2 (image latent + a chunk) and batch >= 1, got {part!r}")
        if out and until <= out[-1][1]:
            raise ValueError(f"--seq-schedule: steps must increase, got {text!r}")
        out.append((t, until, batch))
    if not out:
        raise ValueError(f"--seq-schedule is empty: {text!r}")
    return out


def seq_at(schedule: list[tuple[int, int, int]], step: int) -> tuple[int, int]:
    """(T, batch) in force at `step`."""
    for t, until, batch in schedule:
        if step < until:
            return t, batch
    return schedule[-1][0], schedule[-1][2]


# ----------------------------------------------------------------------------------------------------------------------
# Objectives


@dataclass
class Draws:
    """This step's random streams: `cpu` for indices and levels, `dev` for noise (on the model's device)."""

    cpu: torch.Generator
    dev: torch.Generator


def _frame_chunks(layout: list[int], device) -> torch.Tensor:
    """(T,) chunk index of every latent frame."""
    return torch.repeat_interleave(torch.arange(len(layout)), torch.tensor(layout)).to(device)


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """err (B, C, T, h, w) -> mean over the frames where mask (B, T) is True."""
    per = err.float().mean(dim=(1, 3, 4))                                        # (B, T)
    m = mask.float()
    return (per * m).sum() / m.sum().clamp_min(1.0)


def loss_flow(model: SanaWMTransformer, b: LatentBatch, args: Args, rng: Draws, vae=None) -> torch.Tensor:
    """Diffusion-forcing flow matching: a sigma per chunk; teacher-forced rows keep their history clean."""
    x0 = b.latents
    bsz, t_all = x0.shape[0], x0.shape[2]
    layout = chunk_layout(model.cfg, t_all)
    n = len(layout)
    sig = sample_train_sigmas(bsz * (n - 1), rng.cpu, shift=args.shift, logit_mean=args.logit_mean,
                              logit_std=args.logit_std).view(bsz, n - 1)
    t_chunk = (sig * 1000).floor().clamp(1, 1000)                               # integer timesteps, as the model reads
    tf = torch.rand(bsz, generator=rng.cpu) < args.teacher_forcing
    t_chunk[tf, :-1] = 0
    t = torch.cat([torch.zeros(bsz, 1), t_chunk], 1)[:, _frame_chunks(layout, "cpu")].to(x0.device)   # (B, T)
    noise = model.x_embedder.visible(torch.randn(x0.shape, generator=rng.dev, device=x0.device))  # as sampled
    x = add_noise(x0, noise, t / 1000)
    with autocast(x0.device, args.amp):
        v = model(x, t, b.cond, b.plucker, chunks=layout, warp=b.warp_of(model, x0, layout, vae))  # clean x0
    return _masked_mean((v.float() - velocity_target(x0, noise)).square(), t > 0)


def loss_x0(model: SanaWMTransformer, b: LatentBatch, args: Args, rng: Draws,
            history: torch.Tensor | None = None, vae=None) -> torch.Tensor:
    """Few-step x0 loss at the inference sigmas, with the model's own sampler producing the intermediate inputs.

    history: latents (B, C, T, h, w) to use as clean history instead of the ground truth (self-forcing); then
    only the last chunk is a target (a pixel-space warp model then needs the `vae` to warp that history).
    """
    cfg = model.cfg
    x0 = b.latents
    dev = x0.device
    bsz, t_all = x0.shape[0], x0.shape[2]
    layout = chunk_layout(cfg, t_all)
    n = len(layout)
    sig = few_step_sigmas(cfg)                                                   # e.g. [1.0, 0.75, 0.0]
    levels = len(sig) - 1
    t_of = torch.tensor([1000.0 * s for s in sig])                              # exactly the generator's timesteps
    lvl = torch.randint(levels, (bsz, n - 1), generator=rng.cpu)                # step index per target chunk
    clean_hist = torch.rand(bsz, generator=rng.cpu) < args.teacher_forcing
    if history is not None:
        clean_hist[:] = True
    lvl[clean_hist, :-1] = -1                                                    # -1: clean history at t = 0
    lvl = torch.cat([torch.full((bsz, 1), -1), lvl], 1)[:, _frame_chunks(layout, "cpu")]   # (B, T)
    target = (lvl >= 0).to(dev)
    noise = model.x_embedder.visible(torch.randn(x0.shape, generator=rng.dev, device=dev))   # as the generator's
    ctx = x0 if history is None else torch.cat([history[:, :, :t_all - layout[-1]], x0[:, :, -layout[-1]:]], 2)
    x = torch.where(target[:, None, :, None, None], noise, ctx)                 # targets start from pure noise
    warp = b.warp_of(model, ctx, layout, vae)  # from the clean history, even where a history chunk is noised

    def level_t(level):                                                          # (B, T) timesteps, 0 for history
        return torch.where(level >= 0, t_of[level.clamp_min(0)], 0.0).to(dev)

    with torch.no_grad(), autocast(dev, args.amp):                               # the sampler, as at inference
        for j in range(int(lvl.max())):
            cur = torch.minimum(lvl, torch.tensor(j))
            v = model(x, level_t(cur), b.cond, b.plucker, chunks=layout, warp=warp).float()
            move = ((lvl > j).to(dev))[:, None, :, None, None]
            s, nxt = sig[j], sig[j + 1]
            if args.sampler == "euler" or nxt == 0.0:
                stepped = x + (nxt - s) * v
            else:
                fresh = model.x_embedder.visible(torch.randn(x.shape, generator=rng.dev, device=dev))
                stepped = (1.0 - nxt) * (x - s * v) + nxt * fresh
            x = torch.where(move, stepped, x)
    t = level_t(lvl)
    with autocast(dev, args.amp):
        v = model(x, t, b.cond, b.plucker, chunks=layout, warp=warp)
    x0_hat = x - (t / 1000)[:, None, :, None, None] * v.float()                 # one Euler step to sigma = 0
    loss = _masked_mean((x0_hat - x0).square(), target)
    return loss


def loss_self_forcing(model: SanaWMTransformer, b: LatentBatch, args: Args, rng: Draws,
                      step: int, vae=None) -> tuple[torch.Tensor, bool]:
    """Every --sf-every steps: history = the model's own rollout from the image latent (no grad), last chunk
    trained against ground truth with the x0 loss; otherwise the plain x0 loss. Returns (loss, rolled_out)."""
    if args.sf_every <= 0 or step % args.sf_every:
        return loss_x0(model, b, args, rng, vae=vae), False
    th = b.latents.shape[2] - chunk_layout(model.cfg, b.latents.shape[2])[-1]   # history before the last chunk
    with torch.no_grad(), autocast(b.latents.device, args.amp):
        own = rollout(model, b.latents[:, :, :1], b.cond[:, :th], b.plucker[:, :, :th], rng.dev, args.sampler, vae)
    own = torch.cat([own.float(), b.latents[:, :, th:]], 2)                      # last chunk: ground truth slot
    return loss_x0(model, b, args, rng, history=own, vae=vae), True


def objective_loss(model: SanaWMTransformer, b: LatentBatch, args: Args, rng: Draws,
                   step: int, vae=None) -> tuple[torch.Tensor, dict[str, float]]:
    """The selected objective (+ the flow regulariser for x0 / self-forcing)."""
    rolled = False
    if args.objective == "flow":
        main = loss_flow(model, b, args, rng, vae)
    elif args.objective == "x0":
        main = loss_x0(model, b, args, rng, vae=vae)
    elif args.objective == "self-forcing":
        main, rolled = loss_self_forcing(model, b, args, rng, step, vae)
    else:
        raise ValueError(f"--objective must be one of {OBJECTIVES}, got {args.objective!r}")
    loss, stats = main, {"main": float(main.detach()), "rollout": float(rolled)}
    if args.objective != "flow" and args.flow_weight > 0:
        reg = loss_flow(model, b, args, rng, vae)
        loss = loss + args.flow_weight * reg
        stats["flow_reg"] = float(reg.detach())
    stats["loss"] = float(loss.detach())
    return loss, stats


# ----------------------------------------------------------------------------------------------------------------------
# Steps, evaluation, the run


def make_optimizer(model: SanaWMTransformer, args: Args) -> torch.optim.AdamW:
    """AdamW; matrices decay, norms / biases / tables do not. Unused checkpoint-layout parameters never get a
    gradient and so are never updated."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n != "warp_gate"]
    decay = [p for n, p in params if p.dim() > 1 and "scale_shift_table" not in n]
    rest = [p for n, p in params if not (p.dim() > 1 and "scale_shift_table" not in n)]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if model.cfg.warp_skip:  # a few gains in [0, ~1.5]: Adam moves them lr per step
        groups.append({"params": [model.warp_gate], "weight_decay": 0.0, "lr_scale": args.gate_lr_scale})
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99))


def train_step(model: SanaWMTransformer, opt: torch.optim.Optimizer, b: LatentBatch, args: Args, rng: Draws,
               step: int, dist: Dist, vae=None) -> dict[str, float]:
    """One optimizer step; returns scalar stats (loss, parts, grad norm)."""
    loss, stats = objective_loss(model, b, args, rng, step, vae)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {step}: loss is {float(loss)} ({stats}); lower --lr or check the cache")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    allreduce_grads(params, dist)
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
        params, args.grad_clip if args.grad_clip > 0 else float("inf")))
    opt.step()
    return stats


def sample_batch(cache: LatentCache, cfg: WorldModelConfig, seq: int, batch: int, gen: torch.Generator, dist: Dist,
                 device: torch.device) -> LatentBatch:
    """A global batch drawn with the shared per-step generator; this rank takes its contiguous slice."""
    idx = torch.randint(len(cache), (batch * dist.world,), generator=gen)[dist.rank * batch:(dist.rank + 1) * batch]
    return LatentBatch.from_cache(cache, idx, cfg, seq, device)


@torch.no_grad()
def evaluate(ema: SanaWMTransformer, val: LatentCache, args: Args, seq: int, vae, device) -> dict[str, float]:
    """Held-out flow loss (fixed draws) and few-step fidelity of the EMA weights on the first --eval-count windows."""
    n = min(args.eval_count, len(val))
    b = LatentBatch.from_cache(val, torch.arange(n), ema.cfg, seq, device)
    rng = Draws(step_generator(args.seed, -2), step_generator(args.seed, -2, device=device))
    flow = float(loss_flow(ema, b, args, rng, vae))
    fid = dit_fidelity(ema, b, vae, seed=args.seed, sampler=args.sampler, amp=args.amp)
    return {"val_flow": flow, **{k: v for k, v in fid.items() if not isinstance(v, list)}}


def check_cache(cache: LatentCache, cfg: WorldModelConfig, longest: int, name: str) -> None:
    """The cache must match the model's latent geometry and hold windows as long as the longest sequence."""
    m = cache.meta
    got = (m["latent_channels"], tuple(m["latent_hw"]), m["temporal_factor"])
    want = (cfg.in_channels, cfg.latent_hw, cfg.vae_temporal)
    if got != want:
        raise ValueError(f"{name}: cache has (channels, latent hw, temporal factor) {got}, preset {cfg.name!r} "
                         f"expects {want}")
    if m.get("vae_preset") not in (None, cfg.vae):
        raise ValueError(f"{name}: cache was made with VAE preset {m['vae_preset']!r}, preset {cfg.name!r} uses "
                         f"{cfg.vae!r}")
    if cache.warp is not None:
        check_depth(m, cfg, name)
    if cache.window < longest:
        raise ValueError(f"{name}: windows hold {cache.window} latents but --seq-schedule needs {longest}; "
                         f"rebuild the cache with --window {longest}")


def load_init(model: SanaWMTransformer, path: str) -> None:
    """Weights from one of our safetensors or a last.pt (its EMA if present). A model that adds a warp branch
    (previous frame, sink, output skip) to weights trained without it starts with that branch silent (zeros)."""
    if str(path).endswith(".pt"):
        state = load_state(path)
        sd = state.get("ema") or state["model"]
    else:
        sd, _ = read_state_dict(path)
    keys = {"warp_embedder": ("warp_embedder.proj.weight", "warp_embedder.proj.bias"),
            "sink_embedder": ("sink_embedder.proj.weight", "sink_embedder.proj.bias"), "warp_gate": ("warp_gate",)}
    absent = [m for m in keys if hasattr(model, m) and not any(k in sd for k in keys[m])]
    load_into(model, sd, optional=tuple(k for m in absent for k in keys[m]), source=str(path))
    with torch.no_grad():
        for m in absent:
            for k in keys[m]:
                model.get_parameter(k).zero_()


def train(args: Args, on_step=None) -> Path:
    """Run (or resume) a DiT training; returns the run folder. `on_step(step)` is called after every step (tests)."""
    if args.objective not in OBJECTIVES or args.sampler not in SAMPLERS:
        raise ValueError(f"--objective must be one of {OBJECTIVES} and --sampler one of {SAMPLERS}, got "
                         f"{args.objective!r} and {args.sampler!r}")
    dist = setup_ddp(args.ddp, args.device)
    try:
        return _train(args, dist, on_step)
    finally:
        teardown_ddp(dist)


def _train(args: Args, dist: Dist, on_step) -> Path:
    device = resolve_device(args.device, dist)
    setup_threads(args.threads, device)
    over = {"denoise_timesteps": args.denoise_timesteps} if args.denoise_timesteps else {}
    cfg = get_config(args.preset, **over, **depth_overrides(args))
    schedule = parse_seq_schedule(args.seq_schedule, cfg, args.batch)
    longest = max(t for t, _, _ in schedule)
    out = Path(args.out)
    cache = LatentCache.load(args.latents)
    check_cache(cache, cfg, longest, args.latents)
    if args.data_on_device and device.type == "cuda":
        cache.latents, cache.c2w, cache.k_lat = (t.to(device) for t in (cache.latents, cache.c2w, cache.k_lat))
        cache.warp = None if cache.warp is None else cache.warp.to(device)
    val = LatentCache.load(args.val) if args.val and dist.main else None
    if val is not None:
        check_cache(val, cfg, 2, args.val)
    pixel = cfg.warps_pixels   # every rank may have to decode and re-encode
    vae = load_vae(args.vae, device=device) if args.vae and (dist.main or pixel) else None
    if pixel and vae is None and (cache.warp is None or args.objective == "self-forcing" or val is not None):
        raise ValueError(f"preset {cfg.name!r} warps in pixel space: pass --vae (only a run without --val, not "
                         "self-forcing, on a cache with warp inputs from python -m model.train.warps can do without)")

    seed_everything(args.seed)
    model = build_model(cfg, device=device)
    if args.init and not args.resume:
        load_init(model, args.init)
    model.gradient_checkpointing = args.grad_ckpt
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = make_optimizer(model, args)
    step, metrics = 0, {}
    if args.resume:
        state = load_state(out / "last.pt")
        check_resume_args(state["args"], args, RESUME_KEYS)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step, metrics = int(state["step"]), dict(state.get("metrics", {}))
    broadcast_module(model, dist)
    broadcast_module(ema, dist)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(args_dict(args), indent=1))
    train_log = CSVLog(out / "train.csv", TRAIN_FIELDS, dist.main, step if args.resume else None)
    eval_log = CSVLog(out / "eval.csv", EVAL_FIELDS, dist.main, step if args.resume else None)
    eval_seq = min(longest, val.window) if val is not None else 0

    def checkpoint():
        if dist.main:
            save_state(out / "last.pt", {"step": step, "model": model.state_dict(), "ema": ema.state_dict(),
                                         "optimizer": opt.state_dict(), "rng": rng_state(), "args": args_dict(args),
                                         "metrics": metrics})

    def run_eval():
        r = evaluate(ema, val, args, eval_seq, vae, device)
        metrics.update(r)
        eval_log.write({"step": step, **r})

    model.train()
    speed, t_start = Throughput(), time.perf_counter()
    bar = tqdm(total=args.steps, initial=step, desc=f"dit {args.objective}",
               disable=not (args.progress and dist.main), dynamic_ncols=True)
    budget = {"start": step, "t0": None} if args.minutes > 0 else None
    planned = out / "budget.json"
    if budget is not None and args.resume and planned.exists():  # keep the interrupted run's plan (and its LR curve)
        plan = json.loads(planned.read_text())
        args.steps, schedule, budget = int(plan["steps"]), [tuple(s) for s in plan["schedule"]], None
        bar.total = args.steps
    with StopFlag() as stop:
        while step < args.steps:
            if budget is not None:
                schedule = _apply_budget(budget, schedule, step, args, out, dist, t_start, bar)
            lr = cosine_lr(step, args.lr, args.warmup, args.steps, args.min_lr_ratio)
            set_lr(opt, lr)
            seq, batch = seq_at(schedule, step)
            b = sample_batch(cache, cfg, seq, batch, step_generator(args.seed, step), dist, device)
            rng = Draws(step_generator(args.seed, step, dist.rank, 1),
                        step_generator(args.seed, step, dist.rank, 2, device=device))
            stats = train_step(model, opt, b, args, rng, step, dist, vae)
            ema_update_(ema, model, args.ema, step)
            step += 1
            speed.add(batch * dist.world)
            if step % args.log_every == 0 or step == args.steps:
                stats = allreduce_mean(stats, dist, device)
                train_log.write({"step": step, "lr": lr, "seq": seq, "batch": batch, "samples_per_s": speed.rate(),
                                 "elapsed_s": time.perf_counter() - t_start, **stats})
                bar.set_postfix(loss=f"{stats['loss']:.4f}", T=seq)
            if val is not None and args.eval_every and step % args.eval_every == 0:
                run_eval()
            bar.update(1)
            if on_step is not None:
                on_step(step)
            stopping = any_rank(stop.requested, dist, device)
            if step % args.ckpt_every == 0 or stopping:
                checkpoint()
            if stopping:
                bar.close()
                if dist.main:
                    print(f"stopped at step {step}; wrote {out / 'last.pt'} (resume with --resume)")
                _write_rank_hash(out, dist, model)
                return out
    bar.close()
    checkpoint()
    _write_rank_hash(out, dist, model)
    if dist.main:
        if val is not None and (not args.eval_every or step % args.eval_every):
            run_eval()
        meta = {"objective": args.objective, "steps": str(step), "seq_schedule": args.seq_schedule,
                **({"render": json.dumps(cache.meta["render"])} if cache.meta.get("render") else {}),
                "sampler": args.sampler, "train_args": json.dumps(args_dict(args))}
        save_checkpoint(ema, out / "dit.safetensors", meta)
        if args.vae:
            shutil.copyfile(args.vae, out / "vae.safetensors")
        (out / "dit.json").write_text(json.dumps({"preset": args.preset, "objective": args.objective, "steps": step,
                                                  "metrics": metrics, "args": args_dict(args)}, indent=1))
        print(f"wrote {out / 'dit.safetensors'}")
    return out


def _apply_budget(budget: dict, schedule, step: int, args: Args, out: Path, dist: Dist, t_start: float, bar):
    """--minutes: time --calib-steps steps after a warm-up, then scale --steps and the schedule's boundaries by
    one factor f so the rest fits the budget (a step's cost taken as T x batch)."""
    warm = budget["start"] + 10
    if step == warm:
        budget["t0"] = time.perf_counter()
    if step != warm + args.calib_steps or budget["t0"] is None:
        return schedule
    calib = time.perf_counter() - budget["t0"]
    left = args.minutes * 60.0 - (time.perf_counter() - t_start)
    t_now, b_now = seq_at(schedule, step - 1)
    per_unit = calib / (args.calib_steps * t_now * b_now)

    def scaled(f):
        return [(t, max(step + 1, int(round(u * f))), b) for t, u, b in schedule], max(step + 1,
                                                                                        int(round(args.steps * f)))

    def seconds(f):
        sch, total = scaled(f)
        bounds = [step] + [min(max(u, step), total) for _, u, _ in sch[:-1]] + [total]
        return per_unit * sum((bounds[i + 1] - bounds[i]) * t * b for i, (t, _, b) in enumerate(sch))

    lo, hi = 0.0, 1.0
    if seconds(1.0) > left:
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if seconds(mid) <= left else (lo, mid)
    else:
        lo = 1.0
    new, args.steps = scaled(lo)
    bar.total = args.steps
    bar.refresh()
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "budget.json").write_text(json.dumps({"minutes": args.minutes, "calib_s": calib,
                                                      "calib_steps": args.calib_steps, "factor": lo,
                                                      "steps": args.steps, "schedule": new}, indent=1))
    return new


def _write_rank_hash(out: Path, dist: Dist, model: SanaWMTransformer) -> None:
    """Under DDP every rank records a hash of its final weights (ranks must agree; the DDP test compares them)."""
    if dist.active:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{dist.rank}.sha256").write_text(state_hash(model) + "\n")


def main(argv: list[str] | None = None) -> None:
    train(parse_args(Args, argv, prog="python -m model.train.dit_train"))


if __name__ == "__main__":
    main()
