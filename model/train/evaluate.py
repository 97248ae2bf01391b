"""Evaluation helpers: PSNR / SSIM, VAE reconstruction on held-out clips, and DiT rollout fidelity on latent windows.

    python -m model.train.evaluate --vae runs/vae/vae.safetensors --data data/val/index.json
    python -m model.train.evaluate --dit runs/dit/dit.safetensors --latents data/val_lat/latents.json \
        --vae runs/vae/vae.safetensors --latents-count 32

Conventions: uint8 images are channels-last (..., H, W, 3), as at the env boundary, with data range 255; float
images are in [-1, 1] (range 2) and their last two dims are (H, W), so a model video (B, 3, F, H, W) goes in as is.
PSNR is 10 log10(range^2 / MSE) over all elements; SSIM is Wang et al. 2004 with an 11-tap Gaussian window
(sigma 1.5, 'valid' borders), averaged over every image plane. Both are torch, so `benchmarks/fidelity.py` reuses them.

DiT fidelity uses the full chunk-causal forward with the model's own history (the `RecomputeGenerator` recipe,
which streaming equals): `sample_chunk` denoises one chunk with the config's few steps given clean history;
`rollout` chains it from the image latent. `dit_fidelity` reports teacher-forced few-step error, autoregressive
rollout error per latent frame, and (with a VAE) PSNR / SSIM of the decoded rollout against the decoded ground truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import WorldModelConfig
from ..transformer import SanaWMTransformer
from ..vae import CausalVAE
from .common import autocast, fit_frames, parse_args, resolve_device, setup_threads, to_uint8, to_unit
from .latents import camera_conditioning

# ----------------------------------------------------------------------------------------------------------------------
# Image metrics


def _pair(a: torch.Tensor, b: torch.Tensor, channels_last: bool | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Two images as float64 in [0, range]; uint8 channels-last moved to channels-first planes."""
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    u8 = (a.dtype == torch.uint8, b.dtype == torch.uint8)
    if channels_last is None:
        channels_last = all(u8)
    if all(u8):
        a, b, rng = a.double(), b.double(), 255.0
    else:  # [-1, 1] shifted to [0, 2] (SSIM's luminance term assumes images start at 0); uint8 scaled to match
        a = a.double() / 127.5 if u8[0] else a.double() + 1
        b = b.double() / 127.5 if u8[1] else b.double() + 1
        rng = 2.0
    if channels_last:
        a, b = a.movedim(-1, -3), b.movedim(-1, -3)
    return a, b, rng


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB over all elements; inf for identical images. uint8 (range 255) or float in [-1, 1] (range 2)."""
    a, b, rng = _pair(a, b, False)
    mse = float((a - b).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(rng * rng / mse)


def _gaussian(size: int, sigma: float, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, channels_last: bool | None = None, window: int = 11,
         sigma: float = 1.5) -> float:
    """Mean SSIM; 1 for identical images. uint8 (..., H, W, 3) or float (..., H, W) in [-1, 1].

    channels_last: default True for uint8 pairs, False otherwise. Windows larger than the image shrink to fit.
    """
    a, b, rng = _pair(a, b, channels_last)
    if a.dim() < 2:
        raise ValueError(f"ssim needs images (..., H, W), got shape {tuple(a.shape)}")
    h, w = a.shape[-2:]
    size = min(window, h, w)
    size -= 1 - size % 2                                                      # odd
    g = _gaussian(size, sigma, a.device)
    k = (g[:, None] * g[None, :])[None, None]                                # (1, 1, k, k)
    x, y = a.reshape(-1, 1, h, w), b.reshape(-1, 1, h, w)

    def blur(t):
        return F.conv2d(t, k)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


# ----------------------------------------------------------------------------------------------------------------------
# VAE


def eval_frames(num_frames: int, wanted: int, t_stride: int) -> int:
    """The longest 1 + s*k <= min(num_frames, wanted)."""
    n = min(num_frames, wanted)
    return 1 + (n - 1) // t_stride * t_stride


@torch.no_grad()
def vae_psnr(vae: CausalVAE, clips, frames: int = 9, max_clips: int = 0, hw: tuple[int, int] | None = None,
             amp: bool = False) -> dict[str, float]:
    """Reconstruction quality of whole frames of held-out clips (data.Clip or uint8 (F, H, W, 3) arrays).

    Each clip's first 1 + 4k <= `frames` frames are encoded and decoded, rounded to uint8 as the generator does,
    and compared with the originals. Returns mean per-clip PSNR and SSIM, and PSNR of frame 0 (encoded alone).
    """
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    ps, ss, p0 = [], [], []
    for i, clip in enumerate(clips):
        if max_clips and i >= max_clips:
            break
        fr = clip.frames if hasattr(clip, "frames") else clip
        fr, _ = fit_frames(fr, None, hw)
        n = eval_frames(len(fr), frames, vae.temporal_factor)
        ref = fr[:n].to(device)[None]                                        # (1, F, H, W, 3)
        with autocast(device, amp):
            rec = vae.decode(vae.encode(to_unit(ref)))
        out = to_uint8(rec.float())                                          # (1, F, H, W, 3)
        ps.append(psnr(out, ref))
        ss.append(ssim(out, ref))
        p0.append(psnr(out[:, 0], ref[:, 0]))
    vae.train(was_training)
    if not ps:
        raise ValueError("vae_psnr: no clips to evaluate")
    finite = [p for p in ps if math.isfinite(p)] or [99.0]
    return {"psnr": sum(finite) / len(finite), "ssim": sum(ss) / len(ss),
            "psnr_first": sum(min(p, 99.0) for p in p0) / len(p0), "clips": len(ps)}


# ----------------------------------------------------------------------------------------------------------------------
# DiT


def chunk_layout(cfg: WorldModelConfig, num_latents: int) -> list[int]:
    """[1, Tc, Tc, ...] for T latent frames: the image latent alone, then chunks of `chunk_frames`."""
    tc = cfg.chunk_frames
    if num_latents < 1 or (num_latents - 1) % tc:
        raise ValueError(f"T = {num_latents} latent frames must be 1 + {tc}k (image latent + chunks of {tc})")
    return [1] + [tc] * ((num_latents - 1) // tc)


def few_step_sigmas(cfg: WorldModelConfig) -> list[float]:
    """The inference sigmas, as `StreamingGenerator` uses them: denoise_timesteps / 1000."""
    return [t / 1000.0 for t in cfg.denoise_timesteps]


def sample_chunk(model: SanaWMTransformer, history: torch.Tensor, cond: torch.Tensor, plucker: torch.Tensor,
                 noise: torch.Tensor, sampler: str = "euler", generator: torch.Generator | None = None,
                 vae: CausalVAE | None = None) -> torch.Tensor:
    """Denoise the next chunk from `noise` (B, C, Tc, h, w) given clean history (B, C, Th, h, w) at t = 0, with the
    config's few steps; cond (B, Th + Tc, 20) and plucker (B, 6s, Th + Tc, h, w) cover history and chunk.

    The same passes as `RecomputeGenerator.step` (which streaming equals); differentiable if grad is enabled.
    "renoise" draws its fresh noise from `generator`. Pixel-space warp models need the `vae`.
    """
    cfg = model.cfg
    b, th, tc = history.shape[0], history.shape[2], noise.shape[2]
    layout = chunk_layout(cfg, th) + [tc]
    sig = few_step_sigmas(cfg)
    x = model.x_embedder.visible(noise)    # as the generator draws it (`visible_noise`)
    zeros = torch.zeros(b, th, device=noise.device)
    warp = model.warp_of(torch.cat([history, x], 2), cond, layout, vae)           # shared by the passes
    for s, nxt in zip(sig[:-1], sig[1:]):
        t = torch.cat([zeros, torch.full((b, tc), 1000.0 * s, device=noise.device)], 1)
        v = model(torch.cat([history, x], 2), t, cond, plucker, chunks=layout, warp=warp)[:, :, -tc:]
        if sampler == "euler" or nxt == 0.0:
            x = x + (nxt - s) * v
        else:
            x0 = x - s * v
            fresh = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = (1.0 - nxt) * x0 + nxt * model.x_embedder.visible(fresh)
    return x


def rollout(model: SanaWMTransformer, z0: torch.Tensor, cond: torch.Tensor, plucker: torch.Tensor,
            generator: torch.Generator | None = None, sampler: str = "euler",
            vae: CausalVAE | None = None) -> torch.Tensor:
    """Autoregressive generation of all T latents (cond (B, T, 20)) from the image latent z0 (B, C, 1, h, w): each
    chunk is denoised given the model's own earlier chunks. Returns (B, C, T, h, w) with latent 0 = z0."""
    cfg = model.cfg
    t_all = cond.shape[1]
    lat = z0
    for size in chunk_layout(cfg, t_all)[1:]:
        th = lat.shape[2]
        noise = torch.randn((z0.shape[0], z0.shape[1], size, *z0.shape[3:]), generator=generator,
                            device=z0.device, dtype=z0.dtype)
        x = sample_chunk(model, lat, cond[:, :th + size], plucker[:, :, :th + size], noise, sampler, generator,
                         vae)
        lat = torch.cat([lat, x], 2)
    return lat


@dataclass
class LatentBatch:
    """Windows on the device: latents (B, C, T, h, w), camera inputs for those T latents, and (for pixel-space warp
    models, when the cache has them) the warp inputs of the ground-truth history (B, warp channels, T, h, w)."""

    latents: torch.Tensor
    cond: torch.Tensor
    plucker: torch.Tensor
    warp: torch.Tensor | None = None

    @staticmethod
    def from_cache(cache, idx: torch.Tensor, cfg: WorldModelConfig, num_latents: int,
                   device: torch.device) -> LatentBatch:
        """Windows `idx` of a `LatentCache`, truncated to their first `num_latents` latents."""
        s = cfg.vae_temporal
        lat = cache.latents[idx, :, :num_latents].to(device)
        c2w = cache.c2w[idx, :1 + s * (num_latents - 1)].to(device)
        cond, pl = camera_conditioning(cfg, c2w, cache.k_lat[idx].to(device), num_latents)
        warp = None
        if cfg.warps_pixels and cache.warp is not None:
            info = cache.meta["warp"]
            if (info["sink"], info["chunk_frames"]) != (cfg.warp_sink, cfg.chunk_frames):
                raise ValueError(f"the cache's warp inputs were made with sink={info['sink']}, chunk_frames="
                                 f"{info['chunk_frames']}; preset {cfg.name!r} has sink={cfg.warp_sink}, "
                                 f"chunk_frames={cfg.chunk_frames}")
            warp = cache.warp[idx, :, :num_latents].to(device).float()
        return LatentBatch(lat, cond, pl, warp)

    def warp_of(self, model: SanaWMTransformer, ctx: torch.Tensor, layout: list[int],
                vae: CausalVAE | None = None) -> torch.Tensor | None:
        """The model's warp input for clean history `ctx`: the cached one when ctx is this batch's ground truth,
        else computed (`model.warp_of`; pixel-space models need the VAE)."""
        if self.warp is not None and ctx is self.latents:
            return self.warp
        return model.warp_of(ctx, self.cond, layout, vae)


@torch.no_grad()
def dit_fidelity(model: SanaWMTransformer, batch: LatentBatch, vae: CausalVAE | None = None, seed: int = 0,
                 sampler: str = "euler", amp: bool = False) -> dict:
    """Few-step fidelity of a DiT on ground-truth latent windows (deterministic for a seed).

    - fewstep_mse: the last chunk sampled with ground-truth history (teacher forcing), latent MSE.
    - rollout_mse: every chunk sampled autoregressively from the image latent, latent MSE over latents 1..T-1;
      rollout_mse_last: of the last chunk only (drift); rollout_mse_per_latent: the curve.
    - with a VAE: rollout_psnr / rollout_ssim of the decoded rollout (frames 1..) against the decoded ground truth,
      and fewstep_psnr likewise for the teacher-forced last chunk.
    """
    device = batch.latents.device
    was_training = model.training
    model.eval()
    x0, cond, pl = batch.latents, batch.cond, batch.plucker
    tc = model.cfg.chunk_frames
    g = torch.Generator(device=device).manual_seed(seed)
    with autocast(device, amp):
        noise = torch.randn(x0[:, :, -tc:].shape, generator=g, device=device)
        tf = sample_chunk(model, x0[:, :, :-tc], cond, pl, noise, sampler, g, vae).float()
        ro = rollout(model, x0[:, :, :1], cond, pl, g, sampler, vae).float()
    per = (ro - x0).square().mean(dim=(0, 1, 3, 4))                               # (T,)
    out = {"fewstep_mse": float((tf - x0[:, :, -tc:]).square().mean()), "rollout_mse": float(per[1:].mean()),
           "rollout_mse_last": float(per[-tc:].mean()), "rollout_mse_per_latent": per.tolist()}
    if vae is not None:
        ref = to_uint8(vae.decode(x0))                                             # (B, F, H, W, 3)
        gen = to_uint8(vae.decode(ro))
        tfv = to_uint8(vae.decode(torch.cat([x0[:, :, :-tc], tf], 2)))
        n_last = tc * vae.temporal_factor
        out.update(rollout_psnr=psnr(gen[:, 1:], ref[:, 1:]), rollout_ssim=ssim(gen[:, 1:], ref[:, 1:]),
                   fewstep_psnr=psnr(tfv[:, -n_last:], ref[:, -n_last:]))
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# CLI


@dataclass
class Args:
    vae: str | None = None
    """VAE safetensors (from vae_train); with --data: held-out PSNR; with --dit: decoded rollout PSNR"""
    data: str | None = None
    """held-out index.json for the VAE reconstruction report"""
    frames: int = 9
    """raw frames per clip for the VAE report (1 + 4k)"""
    max_clips: int = 0
    """VAE report on at most this many clips (0 = all)"""
    dit: str | None = None
    """DiT safetensors (from dit_train)"""
    latents: str | None = None
    """held-out latent cache (latents.json) for the DiT report"""
    latents_count: int = 16
    """windows used for the DiT report"""
    seq: int = 0
    """latent frames per window for the DiT report (0 = the cache's window)"""
    sampler: str = "euler"
    """few-step sampler: euler or renoise (as StreamingGenerator)"""
    seed: int = 0
    """noise seed of the DiT report"""
    device: str = "auto"
    """cuda, cpu or auto"""
    threads: int = 0
    """torch CPU threads (0 = torch default)"""


def main(argv: list[str] | None = None) -> None:
    from ..checkpoint import load_checkpoint
    from .data import load_index
    from .latents import LatentCache, load_vae

    args = parse_args(Args, argv, prog="python -m model.train.evaluate")
    device = resolve_device(args.device)
    setup_threads(args.threads, device)
    vae = load_vae(args.vae, device=device) if args.vae else None
    report = {}
    if args.data:
        if vae is None:
            raise ValueError("--data needs --vae")
        report["vae"] = vae_psnr(vae, load_index(args.data), args.frames, args.max_clips)
    if args.dit:
        if not args.latents:
            raise ValueError("--dit needs --latents (a held-out latent cache)")
        model = load_checkpoint(args.dit, device=device)
        cache = LatentCache.load(args.latents)
        n = min(args.latents_count, len(cache))
        seq = args.seq or cache.window
        batch = LatentBatch.from_cache(cache, torch.arange(n), model.cfg, seq, device)
        report["dit"] = dit_fidelity(model, batch, vae, args.seed, args.sampler)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
