"""Train the frame upscaler (model/upscale.py): the world model's decoded frames -> frames `scale` times larger.

    # tiny: 64x64 decodes -> 128x128, on clips rendered at both sizes from the same seeds and poses
    python -m sanawm_env.scenes.export --out data/look64_70000 --size 64 --seed 70000 ...   # and --size 128
    python -m model.train.sr_train --low data/look64_70000/index.json --high data/look128_70000/index.json \
        --val-low data/heldout64/index.json --val-high data/heldout128/index.json \
        --vae model/weights/tiny_vae.safetensors --out runs/sr --minutes 40 --threads 2
    # resume after a kill
    python -m model.train.sr_train ... --resume

What it does, and why:
- Inputs are what the upscaler will see in the generator: the low-size clips through the VAE (a whole-clip encode
  and decode, rounded to uint8 as the generator does), not the rendered low-size frames; with --rollout, also the
  world model's own frames along the clips' poses, from their first frames. --no-round-trip without --rollout
  trains on the rendered frames (an upscaler for any frames). Targets are the high-size renders of the same poses.
- Lists of index files are comma-separated.
- Samples: single frames, random crops of --crop low-size pixels (and the matching high-size crop), random flips.
- Loss: the VAE trainer's L1 + L1 of image gradients (`vae_train.recon_loss`).
- Evaluation: PSNR / SSIM of whole held-out frames against the high-size renders, for the upscaler and for its
  bilinear part alone (the baseline it starts at: its last conv starts at zero); eval.csv, and sr.json at the end.
- Resumable: `last.pt` every --ckpt-every steps and on SIGTERM / Ctrl-C; --resume continues exactly. --minutes
  stops the run early (its cosine schedule still spans --steps) and writes the outputs as at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..generator import StreamingGenerator
from ..upscale import FrameUpscaler, UpscalerConfig, save_upscaler
from .common import (
    CSVLog,
    RunArgs,
    StopFlag,
    Throughput,
    args_dict,
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
    setup_threads,
    step_generator,
    to_uint8,
    to_unit,
)
from .data import load_index
from .evaluate import eval_frames, psnr, ssim
from .latents import load_vae
from .vae_train import make_optimizer, recon_loss


@dataclass
class Args(RunArgs):
    low: tuple[str, ...]
    """index.json files of the low-size clips"""
    high: tuple[str, ...]
    """index.json files of the same clips rendered `scale` times larger, in the same order"""
    out: str = "runs/sr"
    """run folder: last.pt, train.csv, eval.csv, sr.safetensors, sr.json"""
    vae: str | None = None
    """VAE whose round trip makes the inputs (the world model's); required unless --no-round-trip"""
    round_trip: bool = True
    """inputs are the low-size clips encoded and decoded by --vae"""
    rollout: str | None = None
    """also (or with --no-round-trip, only) this world model's rollouts along the low clips' poses ("tiny" or a
    checkpoint path; its own upscaler is left out)"""
    rollout_steps: int = 0
    """rollout steps per clip (0 = as many as the clip holds)"""
    val_low: str | None = None
    """held-out low-size index.json (other scene seeds); none = no evaluation"""
    val_high: str | None = None
    """the held-out clips at the high size"""
    channels: int = 32
    """residual branch width (UpscalerConfig)"""
    blocks: int = 2
    """residual blocks (UpscalerConfig)"""
    detail_only: bool = False
    """the residual averages to zero over each input pixel (UpscalerConfig): detail, never a colour shift"""
    steps: int = 3000
    """total optimizer steps (the LR schedule's length)"""
    minutes: float = 0.0
    """stop after this many minutes of this process, and write the outputs (0 = run all --steps)"""
    batch: int = 32
    """frames per step"""
    crop: int = 32
    """square crop in low-size pixels (even)"""
    lr: float = 1e-3
    """peak learning rate"""
    warmup: int = 100
    """linear warmup steps"""
    grad_weight: float = 1.0
    """weight of the L1 loss on image gradients"""
    max_clips: int = 0
    """use at most this many clips of each low / high pair (0 = all)"""
    eval_every: int = 500
    """held-out evaluation interval in steps"""


TRAIN_FIELDS = ["step", "loss", "l1", "grad", "lr", "grad_norm", "samples_per_s", "elapsed_s"]
EVAL_FIELDS = ["step", "psnr", "ssim", "psnr_bilinear", "ssim_bilinear", "gain", "frames"]
RESUME_KEYS = ("channels", "blocks", "detail_only", "crop", "round_trip", "vae", "rollout", "rollout_steps")


# ----------------------------------------------------------------------------------------------------------------------
# Data


@torch.no_grad()
def round_trip(vae, frames: torch.Tensor) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> the VAE's whole-clip decode of it, uint8 (F', H, W, 3), F' the longest 1 + 4k <= F."""
    n = eval_frames(len(frames), len(frames), vae.temporal_factor)
    return to_uint8(vae.decode(vae.encode(to_unit(frames[None, :n]))).float())[0]


def load_pairs(low: tuple[str, ...], high: tuple[str, ...], vae, max_clips: int = 0, desc: str = "pairs",
               gen=None, rollout_steps: int = 0, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of matching clips: inputs (N, h, w, 3) and targets (N, H, W, 3), uint8; H = scale * h. The clips
    both indexes list first are paired (as many as the shorter has), and must agree in name and poses.

    Inputs: with `vae`, its whole-clip round trip of each low clip; with `gen` (a StreamingGenerator without an
    upscaler), its rollout from the clip's first frame along the clip's poses (frames 1 .. 1 + K * steps, as the
    fidelity benchmark drives it; `rollout_steps` 0 = as many as fit), in batches of `batch` clips; with both, both
    sets; with neither, the low renders themselves."""
    if len(low) != len(high) or not low:
        raise ValueError(f"--low and --high need the same number of index files, got {len(low)} and {len(high)}")
    xs, ys = [], []
    for lo, hi in zip(low, high):
        a, b = load_index(lo), load_index(hi)
        n = min(len(a), len(b), max_clips or len(a))   # an export's first clips are the same in a shorter one
        a, b = a[:n], b[:n]
        if [c.meta["name"] for c in a] != [c.meta["name"] for c in b]:
            raise ValueError(f"{lo} and {hi} do not list the same clips")
        for ca, cb in zip(a, b):
            if not torch.allclose(torch.from_numpy(ca.c2w), torch.from_numpy(cb.c2w), atol=1e-6):
                raise ValueError(f"{ca.meta['name']}: the low and high clips have different poses")
        if vae is not None or gen is None:
            for ca, cb in tqdm(list(zip(a, b)), desc=desc, dynamic_ncols=True):
                x, _ = fit_frames(ca.frames, None, None)
                x = x if vae is None else round_trip(vae, x)
                xs.append(x)
                ys.append(torch.from_numpy(cb.frames[:len(x)]))
        if gen is not None:
            for i in tqdm(range(0, len(a), batch), desc=desc + " (rollouts)", dynamic_ncols=True):
                x, n = rollout(gen, a[i:i + batch], rollout_steps, seed=i)
                xs.extend(x.flatten(0, 1).unbind(0))
                ys.extend(torch.from_numpy(c.frames[1:1 + n]) for c in b[i:i + batch])
    x = torch.cat([t.reshape(-1, *t.shape[-3:]) for t in xs])
    y = torch.cat([t.reshape(-1, *t.shape[-3:]) for t in ys])
    if y.shape[1] % x.shape[1] or y.shape[1] // x.shape[1] != y.shape[2] // x.shape[2] or y.shape[1] == x.shape[1]:
        raise ValueError(f"high frames must be a whole multiple (>= 2) of the low ones, got {tuple(x.shape[1:3])} "
                         f"and {tuple(y.shape[1:3])}")
    return x, y


@torch.no_grad()
def rollout(gen, clips: list, steps: int = 0, seed: int = 0) -> tuple[torch.Tensor, int]:
    """The world model's frames along clips of one length from their first frames: (B, n, h, w, 3) uint8, n."""
    k = gen.frames_per_step
    most = (min(len(c.frames) for c in clips) - 1) // k
    steps = most if steps <= 0 else min(steps, most)
    if steps < 1:
        raise ValueError(f"clips need at least 1 + {k} frames for a rollout step")
    first = torch.from_numpy(np.stack([c.frames[0] for c in clips]))                 # (B, h, w, 3)
    c2w = torch.from_numpy(np.stack([c.c2w[:1 + steps * k] for c in clips]))        # (B, 1 + nK, 4, 4)
    k_px = torch.from_numpy(np.stack([c.intrinsics[0] for c in clips])).float()      # (B, 4)
    state = gen.reset_rows(gen.new_state(len(clips)), torch.ones(len(clips), dtype=torch.bool), first, k_px,
                           seed=seed, c2w0=c2w[:, 0])
    out = [gen.step(state, c2w[:, 1 + s * k:1 + (s + 1) * k]).cpu() for s in range(steps)]   # (B, K, h, w, 3)
    return torch.cat(out, 1), steps * k


def sample(x: torch.Tensor, y: torch.Tensor, batch: int, crop: int, gen: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops: inputs (B, 3, 1, c, c) and targets (B, 3, 1, sc, sc) in [-1, 1]; draws from `gen` only."""
    s = y.shape[1] // x.shape[1]
    h, w = x.shape[1:3]
    idx = torch.randint(len(x), (batch,), generator=gen)
    y0 = torch.randint(h - crop + 1, (batch,), generator=gen)
    x0 = torch.randint(w - crop + 1, (batch,), generator=gen)
    flip = torch.rand(batch, generator=gen) < 0.5
    xs, ys = [], []
    for i, a, b, f in zip(idx.tolist(), y0.tolist(), x0.tolist(), flip.tolist()):
        xi = x[i, a:a + crop, b:b + crop]
        yi = y[i, s * a:s * (a + crop), s * b:s * (b + crop)]
        xs.append(xi.flip(1) if f else xi)
        ys.append(yi.flip(1) if f else yi)
    return to_unit(torch.stack(xs)[:, None]), to_unit(torch.stack(ys)[:, None])   # (B, 3, 1, ...)


@torch.no_grad()
def evaluate(up: FrameUpscaler, x: torch.Tensor, y: torch.Tensor, chunk: int = 64) -> dict[str, float]:
    """Mean per-frame PSNR / SSIM of whole frames, the upscaler's and its bilinear part's."""
    was = up.training
    up.eval()
    out = {"psnr": [], "ssim": [], "psnr_bilinear": [], "ssim_bilinear": []}
    for i in range(0, len(x), chunk):
        xi = to_unit(x[i:i + chunk][:, None])                       # (n, 3, 1, h, w)
        ref = y[i:i + chunk]
        for key, pred in (("", up(xi)), ("_bilinear", up.base(xi))):
            got = to_uint8(pred)[:, 0]                              # (n, H, W, 3)
            for g, r in zip(got, ref):
                out["psnr" + key].append(psnr(g[None], r[None]))
                out["ssim" + key].append(ssim(g[None], r[None]))
    up.train(was)
    res = {k: sum(v) / len(v) for k, v in out.items()}
    res["gain"] = res["psnr"] - res["psnr_bilinear"]
    res["frames"] = len(x)
    return res


# ----------------------------------------------------------------------------------------------------------------------
# The run


def train(args: Args, on_step=None) -> Path:
    """Run (or resume) an upscaler training; returns the run folder."""
    device = resolve_device(args.device)
    setup_threads(args.threads, device)
    if args.crop < 2 or args.crop % 2:
        raise ValueError(f"--crop must be even and >= 2, got {args.crop}")
    if args.round_trip and not args.vae:
        raise ValueError("--round-trip needs --vae (the world model's VAE); or pass --no-round-trip")
    out = Path(args.out)
    seed_everything(args.seed)
    vae = load_vae(args.vae).eval() if args.round_trip else None
    gen = StreamingGenerator.from_pretrained(args.rollout, upscaler=None, trace=True) if args.rollout else None
    x, y = load_pairs(args.low, args.high, vae, args.max_clips, gen=gen, rollout_steps=args.rollout_steps)
    scale = y.shape[1] // x.shape[1]
    val = load_pairs((args.val_low,), (args.val_high,), vae, desc="held out", gen=gen,
                     rollout_steps=args.rollout_steps) if args.val_low and args.val_high else None
    cfg = UpscalerConfig(scale=scale, channels=args.channels, blocks=args.blocks, detail_only=args.detail_only)
    up = FrameUpscaler(cfg).to(device)
    opt = make_optimizer(up, args)
    step, metrics = 0, {}
    if args.resume:
        state = load_state(out / "last.pt")
        check_resume_args(state["args"], args, RESUME_KEYS)
        up.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step, metrics = int(state["step"]), dict(state.get("metrics", {}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(args_dict(args), indent=1))
    train_log = CSVLog(out / "train.csv", TRAIN_FIELDS, True, step if args.resume else None)
    eval_log = CSVLog(out / "eval.csv", EVAL_FIELDS, True, step if args.resume else None)

    def checkpoint():
        save_state(out / "last.pt", {"step": step, "model": up.state_dict(), "optimizer": opt.state_dict(),
                                     "rng": rng_state(), "args": args_dict(args), "metrics": metrics})

    def run_eval():
        if val is not None:
            metrics.update(evaluate(up, *val))
            eval_log.write({"step": step, **metrics})

    if not args.resume:
        run_eval()   # step 0: the upscaler is its bilinear part
    up.train()
    speed, t0 = Throughput(), time.perf_counter()
    bar = tqdm(total=args.steps, initial=step, desc="sr", disable=not args.progress, dynamic_ncols=True)
    with StopFlag() as stop:
        while step < args.steps:
            lr = cosine_lr(step, args.lr, args.warmup, args.steps)
            set_lr(opt, lr)
            xb, yb = sample(x, y, args.batch, args.crop, step_generator(args.seed, step))
            loss, parts = recon_loss(up(xb.to(device)), yb.to(device), args.grad_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(up.parameters(), args.grad_clip if args.grad_clip > 0
                                                else float("inf"))
            opt.step()
            step += 1
            speed.add(args.batch)
            if step % args.log_every == 0 or step == args.steps:
                train_log.write({"step": step, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(gn),
                                 "samples_per_s": speed.rate(), "elapsed_s": time.perf_counter() - t0, **parts})
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", gain=f"{metrics.get('gain', float('nan')):+.2f}")
            if args.eval_every and step % args.eval_every == 0:
                run_eval()
            bar.update(1)
            if on_step is not None:
                on_step(step)
            if step % args.ckpt_every == 0 or stop.requested:
                checkpoint()
            if stop.requested:
                bar.close()
                print(f"stopped at step {step}; wrote {out / 'last.pt'} (resume with --resume)")
                return out
            if args.minutes and time.perf_counter() - t0 > 60 * args.minutes:
                break
    bar.close()
    checkpoint()
    if not args.eval_every or step % args.eval_every:
        run_eval()
    up.eval()
    save_upscaler(up.cpu(), out / "sr.safetensors", {"steps": str(step)})
    (out / "sr.json").write_text(json.dumps({"config": asdict(cfg), "steps": step, "metrics": metrics,
                                             "args": args_dict(args)}, indent=1))
    print(f"wrote {out / 'sr.safetensors'}" + (f" (held-out PSNR {metrics['psnr']:.2f} dB, "
                                              f"{metrics['gain']:+.2f} over bilinear)" if "gain" in metrics else ""))
    return out


def main(argv: list[str] | None = None) -> None:
    train(parse_args(Args, argv, prog="python -m model.train.sr_train"))


if __name__ == "__main__":
    main()
