"""Train the causal VAE for reconstruction (first frame alone, then strides of 4).

    # the tiny VAE on exported scenes, on the GPU
    python -m sanawm_env.scenes.export --out data/train --clips 2000 --frames 33 --size 128 --seed 0
    python -m sanawm_env.scenes.export --out data/val --clips 64 --frames 33 --size 128 --seed 100000
    python -m model.train.vae_train --data data/train/index.json --val data/val/index.json --out runs/vae \
        --steps 20000 --batch 16 --size 128 --device cuda
    # resume after a kill (same step counter, same LR schedule, same data order)
    python -m model.train.vae_train --data data/train/index.json --val data/val/index.json --out runs/vae \
        --steps 20000 --batch 16 --size 128 --device cuda --resume
    # several GPUs / processes
    torchrun --nproc_per_node=2 -m model.train.vae_train --data data/train/index.json --out runs/vae --ddp
    # fine-tune the decoder of a shipped VAE (the encoder and latent statistics stay, so its DiT keeps working)
    python -m model.train.vae_train --data data/train64b/index.json --val data/heldout64/index.json --out runs/vae_dec \
        --init model/weights/tiny_vae.safetensors --freeze-encoder --time-weight 1 --frames 5,9,17 --size 64 --lr 2e-4
    # tiny CPU run (seconds)
    python -m sanawm_env.scenes.export --out /tmp/d --clips 4 --frames 9 --size 32 --png --no-compile --supersample 1
    OMP_NUM_THREADS=1 python -m model.train.vae_train --data /tmp/d/index.json --val /tmp/d/index.json \
        --out /tmp/vae --preset micro --steps 20 --batch 2 --size 32 --eval-every 10 --device cpu

What it does, and why:
- Samples: random temporal crops of F = 1 + 4k frames (k from --frames, single frames included, since every
  stream starts with one image encoded alone), random spatial crops of --size, random horizontal flips; frames in
  [-1, 1], (B, 3, F, H, W). One F per step keeps a batch a single tensor.
- Loss: L1 + --grad-weight x L1 of the finite-difference image gradients (edges; L1 alone blurs them), optional L2,
  optional --time-weight x L1 of the error's frame-to-frame difference (the motion a per-frame loss lets blur).
  No perceptual network: nothing is downloaded and the term did not pay at this size.
- AdamW, linear warmup then cosine decay, gradient clipping, bf16 autocast on CUDA.
- Every --eval-every steps: PSNR / SSIM of whole held-out clips (eval.csv); training loss in train.csv.
- At the end: the latent normalisation is fitted on raw latents of training windows (`set_latent_stats_`), then
  `vae.safetensors` (state_dict with its buffers, preset in the metadata) and `vae.json` (config, metrics) are written.
- Resumable: `last.pt` every --ckpt-every steps and on SIGTERM / Ctrl-C; --resume continues exactly.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..vae import CausalVAE, vae_config
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
    fit_frames,
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
    step_generator,
    teardown_ddp,
    to_unit,
)
from .data import load_index
from .evaluate import vae_psnr
from .latents import load_vae, save_vae


@dataclass
class Args(RunArgs):
    data: str
    """training index.json (sanawm_env.scenes.export output, or real footage in RealEstate10K format)"""
    out: str = "runs/vae"
    """run folder: last.pt, train.csv, eval.csv, vae.safetensors, vae.json"""
    val: str | None = None
    """held-out index.json for PSNR (other scene seeds); none = no evaluation"""
    preset: str = "tiny"
    """VAE preset (model.vae.VAE_PRESETS)"""
    steps: int = 20000
    """total optimizer steps"""
    batch: int = 16
    """clips per step and process"""
    size: int = 128
    """square training crop in pixels (a multiple of the VAE's spatial factor)"""
    frame_size: int = 0
    """resize + centre-crop clips to this square size when loading (0 = keep their size; real footage)"""
    frames: tuple[int, ...] = (1, 5, 9)
    """raw frames per sample, each 1 + 4k, drawn uniformly per step"""
    lr: float = 5e-4
    """peak learning rate"""
    min_lr_ratio: float = 0.05
    """final LR as a fraction of --lr"""
    warmup: int = 500
    """linear warmup steps"""
    grad_weight: float = 1.0
    """weight of the L1 loss on image gradients (finite differences in x and y)"""
    l2_weight: float = 0.0
    """weight of an extra L2 term"""
    hflip: bool = True
    """random horizontal flips"""
    eval_every: int = 1000
    """held-out evaluation interval in steps"""
    eval_clips: int = 16
    """held-out clips per evaluation (0 = all)"""
    eval_frames: int = 17
    """raw frames per held-out clip (1 + 4k)"""
    stats_windows: int = 64
    """training windows whose raw latents fit the latent mean / std at the end"""
    max_clips: int = 0
    """use at most this many training clips (0 = all)"""
    time_weight: float = 0.0
    """weight of the L1 loss on the error's frame-to-frame difference (motion between frames; 0 = off)"""
    init: str | None = None
    """start from these VAE weights (save_vae output) instead of a random init; ignored with --resume"""
    freeze_encoder: bool = False
    """train the decoder alone: the encoder and the latent statistics stay as loaded, so a DiT trained on this
    VAE's latents keeps working with the new decoder (needs --init)"""


TRAIN_FIELDS = ["step", "loss", "l1", "grad", "time", "lr", "grad_norm", "frames", "samples_per_s", "elapsed_s"]
EVAL_FIELDS = ["step", "psnr", "ssim", "psnr_first", "clips"]
RESUME_KEYS = ("preset", "size", "frames", "freeze_encoder")


# ----------------------------------------------------------------------------------------------------------------------
# Data


class ClipStore:
    """Decoded clips as uint8 tensors (F, H, W, 3), sampled as random crops."""

    def __init__(self, clips: list[torch.Tensor], device: torch.device | str = "cpu"):
        if not clips:
            raise ValueError("no clips to train on")
        self.clips = [c.to(device) for c in clips]
        self.lengths = torch.tensor([len(c) for c in clips])

    @staticmethod
    def from_index(path: str, frame_size: int = 0, max_clips: int = 0) -> ClipStore:
        clips = load_index(path)
        if max_clips > 0:
            clips = clips[:max_clips]
        hw = (frame_size, frame_size) if frame_size > 0 else None
        return ClipStore([fit_frames(c.frames, None, hw)[0] for c in clips])

    def sample(self, batch: int, frame_choices: tuple[int, ...], size: int, gen: torch.Generator,
               hflip: bool = True) -> torch.Tensor:
        """A batch (B, 3, F, size, size) in [-1, 1]; draws come from `gen` (CPU) only."""
        f = frame_choices[int(torch.randint(len(frame_choices), (1,), generator=gen))]
        ok = (self.lengths >= f).nonzero().squeeze(1)
        if len(ok) == 0:
            raise ValueError(f"no clip has {f} frames (longest {int(self.lengths.max())}); lower --frames")
        out = []
        for _ in range(batch):
            ci = int(ok[torch.randint(len(ok), (1,), generator=gen)])
            clip = self.clips[ci]
            n, h, w = clip.shape[:3]
            if h < size or w < size:
                raise ValueError(f"clip {ci} is {h}x{w}, smaller than --size {size}; use --frame-size")
            t0 = int(torch.randint(n - f + 1, (1,), generator=gen))
            y0 = int(torch.randint(h - size + 1, (1,), generator=gen))
            x0 = int(torch.randint(w - size + 1, (1,), generator=gen))
            crop = clip[t0:t0 + f, y0:y0 + size, x0:x0 + size]
            if hflip and bool(torch.rand(1, generator=gen) < 0.5):
                crop = crop.flip(2)
            out.append(crop)
        return to_unit(torch.stack(out))                                     # (B, 3, F, S, S)


# ----------------------------------------------------------------------------------------------------------------------
# Loss and one step


def recon_loss(rec: torch.Tensor, x: torch.Tensor, grad_weight: float = 1.0, l2_weight: float = 0.0,
               time_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + grad_weight * L1 of finite differences along x and y (+ l2_weight * L2, + time_weight * L1 of the
    difference along frames, which L1 per frame lets a decoder blur: a smeared copy of the last frame costs little
    per frame but erases the 1-4 px a turn moves); rec, x (B, 3, F, H, W)."""
    rec, x = rec.float(), x.float()
    diff = rec - x
    l1 = diff.abs().mean()
    grad = torch.diff(diff, dim=-1).abs().mean() + torch.diff(diff, dim=-2).abs().mean()
    loss = l1 + grad_weight * grad
    if l2_weight:
        loss = loss + l2_weight * diff.square().mean()
    dt = torch.diff(diff, dim=2).abs().mean() if diff.shape[2] > 1 else diff.new_zeros(())
    if time_weight:
        loss = loss + time_weight * dt
    return loss, {"l1": float(l1.detach()), "grad": float(grad.detach()), "time": float(dt.detach())}


def make_optimizer(vae: torch.nn.Module, args) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (args: lr, weight_decay); norms and biases are not decayed. The
    upscaler's trainer uses it too."""
    decay = [p for p in vae.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in vae.parameters() if p.requires_grad and p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))


def train_step(vae: CausalVAE, opt: torch.optim.Optimizer, x: torch.Tensor, args: Args, dist: Dist,
               device: torch.device) -> dict[str, float]:
    """One optimizer step on a batch x (B, 3, F, H, W); returns scalar stats."""
    with autocast(device, args.amp):
        rec = vae(x)
    loss, parts = recon_loss(rec, x, args.grad_weight, args.l2_weight, args.time_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in vae.parameters() if p.requires_grad]
    allreduce_grads(params, dist)
    gn = torch.nn.utils.clip_grad_norm_(params, args.grad_clip if args.grad_clip > 0 else float("inf"))
    opt.step()
    return {"loss": float(loss.detach()), "grad_norm": float(gn), **parts}


# ----------------------------------------------------------------------------------------------------------------------
# The run


@torch.no_grad()
def fit_latent_stats(vae: CausalVAE, store: ClipStore, args: Args, device: torch.device) -> None:
    """Fit latents_mean / latents_std on raw latents of `stats_windows` training crops (a fixed draw)."""
    gen = step_generator(args.seed, -1)
    zs = []
    remaining = args.stats_windows
    while remaining > 0:
        b = min(remaining, max(1, args.batch))
        x = store.sample(b, (max(args.frames),), args.size, gen, hflip=False).to(device)
        with autocast(device, args.amp):
            zs.append(vae.encode(x, normalize=False).float())
        remaining -= b
    vae.set_latent_stats_(torch.cat(zs))


def train(args: Args, on_step=None) -> Path:
    """Run (or resume) a VAE training; returns the run folder. `on_step(step)` is called after every step (tests)."""
    dist = setup_ddp(args.ddp, args.device)
    try:
        return _train(args, dist, on_step)
    finally:
        teardown_ddp(dist)


def _train(args: Args, dist: Dist, on_step) -> Path:
    device = resolve_device(args.device, dist)
    setup_threads(args.threads, device)
    cfg = vae_config(args.preset)
    bad = [f for f in args.frames if f < 1 or (f - 1) % cfg.temporal_factor]
    if bad or args.size % cfg.spatial_factor:
        raise ValueError(f"--frames must be 1 + {cfg.temporal_factor}k (got {args.frames}) and --size a multiple of "
                         f"{cfg.spatial_factor} (got {args.size})")
    if args.freeze_encoder and not args.init and not args.resume:
        raise ValueError("--freeze-encoder needs --init: a random encoder would stay random")
    out = Path(args.out)
    seed_everything(args.seed)
    vae = load_vae(args.init, args.preset) if args.init and not args.resume else CausalVAE(cfg)
    vae = vae.to(device)
    if args.freeze_encoder:
        vae.encoder.requires_grad_(False)
    opt = make_optimizer(vae, args)
    step, metrics = 0, {}
    if args.resume:
        state = load_state(out / "last.pt")
        check_resume_args(state["args"], args, RESUME_KEYS)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step, metrics = int(state["step"]), dict(state.get("metrics", {}))
    broadcast_module(vae, dist)
    store = ClipStore.from_index(args.data, args.frame_size, args.max_clips)
    if args.data_on_device and device.type == "cuda":
        store = ClipStore(store.clips, device)
    val = load_index(args.val) if args.val and dist.main else None
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(args_dict(args), indent=1))
    train_log = CSVLog(out / "train.csv", TRAIN_FIELDS, dist.main, step if args.resume else None)
    eval_log = CSVLog(out / "eval.csv", EVAL_FIELDS, dist.main, step if args.resume else None)

    def checkpoint():
        if dist.main:
            save_state(out / "last.pt", {"step": step, "model": vae.state_dict(), "optimizer": opt.state_dict(),
                                         "rng": rng_state(), "args": args_dict(args), "metrics": metrics})

    def evaluate():
        if val is not None:
            r = vae_psnr(vae, val, args.eval_frames, args.eval_clips, (args.frame_size,) * 2 if args.frame_size
                         else None, args.amp)
            metrics.update(r)
            eval_log.write({"step": step, **r})

    vae.train()
    speed, t_start = Throughput(), time.perf_counter()
    bar = tqdm(total=args.steps, initial=step, desc="vae", disable=not (args.progress and dist.main),
               dynamic_ncols=True)
    with StopFlag() as stop:
        while step < args.steps:
            lr = cosine_lr(step, args.lr, args.warmup, args.steps, args.min_lr_ratio)
            set_lr(opt, lr)
            x = store.sample(args.batch, args.frames, args.size, step_generator(args.seed, step, dist.rank),
                             args.hflip).to(device, non_blocking=True)
            stats = train_step(vae, opt, x, args, dist, device)
            step += 1
            speed.add(args.batch * dist.world)
            if step % args.log_every == 0 or step == args.steps:
                stats = allreduce_mean(stats, dist, device)
                train_log.write({"step": step, "lr": lr, "frames": x.shape[2], "samples_per_s": speed.rate(),
                                 "elapsed_s": time.perf_counter() - t_start, **stats})
                bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{metrics.get('psnr', float('nan')):.2f}")
            if args.eval_every and step % args.eval_every == 0 and dist.main:
                evaluate()
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
                return out
    bar.close()
    checkpoint()
    if dist.main:
        vae.eval()
        if not args.freeze_encoder:
            fit_latent_stats(vae, store, args, device)
        if val is not None and (not args.eval_every or step % args.eval_every):
            evaluate()
        save_vae(vae, out / "vae.safetensors", args.preset, {"steps": str(step)})
        (out / "vae.json").write_text(json.dumps({
            "preset": args.preset, "config": asdict(cfg), "steps": step, "metrics": metrics,
            "latents_mean": vae.latents_mean.tolist(), "latents_std": vae.latents_std.tolist(),
            "args": args_dict(args)}, indent=1))
        print(f"wrote {out / 'vae.safetensors'}" + (f" (held-out PSNR {metrics['psnr']:.2f} dB)" if "psnr" in metrics
                                                     else ""))
    return out


def main(argv: list[str] | None = None) -> None:
    train(parse_args(Args, argv, prog="python -m model.train.vae_train"))


if __name__ == "__main__":
    main()
