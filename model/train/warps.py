"""Pixel-space warp inputs of a latent cache, computed once, so the DiT trainer never decodes or encodes in its loop.

    python -m model.train.warps --latents data/train_lat/latents.json --vae model/weights/tiny_vae.safetensors \
        --preset tiny64

Why: a `warp_space="pixel"` model (model/warp.py) reads, for every latent, the decoded last frame of the chunk
before and the decoded frame 0, warped into the latent's view and re-encoded. Under teacher forcing the history is
the ground-truth latents, so these inputs depend only on the window: `sequence_warp(..., vae=)` of the whole window
gives them for every prefix too (the VAE is causal). Computing them per step would cost a decode and 2(W-1) image
encodes per window, about as much as the DiT step itself on a CPU.

Writes `warp_00000.safetensors`, ... (one per latent shard, key "warp", half precision) and lists them under "warp"
in latents.json; `LatentCache.load` reads them and `LatentBatch.from_cache` hands them to the losses. For presets
with `warp_skip_target="chunk"` (tiny, tiny64) they also hold the skip's chunk targets (twice the channels), so
caches written before that flag must be written again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..config import get_config
from ..warp import WarpDepth, sequence_warp
from .common import parse_args, resolve_device, setup_threads
from .evaluate import chunk_layout
from .latents import LatentCache, camera_conditioning, load_vae


@dataclass
class Args:
    latents: str
    """latents.json of a cache from model.train.latents (one cache, not a comma list)"""
    vae: str
    """the VAE the cache was encoded with (its decoder makes the frames, its encoder re-encodes the warps)"""
    preset: str = "tiny64"
    """DiT preset: its chunk layout and whether the sink is warped too"""
    inverse_depth: float | None = None
    """warp_inverse_depth (1 / metres) of the model these inputs are for; none = the preset's"""
    floor: float | None = None
    """warp_floor (metres below the first camera) of the model these inputs are for; none = the preset's"""
    batch: int = 32
    """windows per VAE call"""
    device: str = "auto"
    """cuda, cpu or auto"""
    threads: int = 0
    """torch CPU threads (0 = torch default)"""
    progress: bool = True
    """tqdm progress bar"""


def depth_overrides(args) -> dict:
    """The config fields of `--inverse-depth` / `--floor` that were given (this trainer's and dit_train's)."""
    given = {"warp_inverse_depth": args.inverse_depth, "warp_floor": args.floor}
    return {k: v for k, v in given.items() if v is not None}


def check_depth(meta: dict, cfg, name: str) -> None:
    """Warp inputs cached at another depth than the model's would train it on inputs it never sees."""
    made = meta.get("warp") or {}
    made = (made.get("inverse_depth", 0.0), made.get("floor", 0.0))
    want = (cfg.warp_inverse_depth, cfg.warp_floor)
    if made != want:
        raise ValueError(f"{name}: cached warp inputs were made at (inverse depth, floor) {made}, the model warps at "
                         f"{want}; rebuild them with python -m model.train.warps --inverse-depth {want[0]} "
                         f"--floor {want[1]}")


@torch.no_grad()
def build_warps(args: Args) -> Path:
    """Compute and store the warp inputs of every window; returns the path of latents.json."""
    device = resolve_device(args.device)
    setup_threads(args.threads, device)
    cfg = get_config(args.preset, warp_condition=True, warp_space="pixel", **depth_overrides(args))
    path = Path(args.latents)
    path = path / "latents.json" if path.is_dir() else path
    cache = LatentCache.load(path)
    if (cache.meta["latent_channels"], tuple(cache.meta["latent_hw"])) != (cfg.in_channels, cfg.latent_hw):
        raise ValueError(f"{path}: cache latents are {cache.meta['latent_channels']} x {cache.meta['latent_hw']}, "
                         f"preset {args.preset!r} expects {cfg.in_channels} x {list(cfg.latent_hw)}")
    vae = load_vae(args.vae, device=device)
    layout = chunk_layout(cfg, cache.window)
    meta = json.loads(path.read_text())
    files, start = [], 0
    bar = tqdm(total=len(cache), desc="warp windows", disable=not args.progress)
    for i, shard in enumerate(meta["shards"]):
        out = []
        for a in range(start, start + shard["count"], args.batch):
            idx = torch.arange(a, min(a + args.batch, start + shard["count"]))
            lat = cache.latents[idx].to(device)                                       # (b, C, W, h, w)
            cond, _ = camera_conditioning(cfg, cache.c2w[idx].to(device), cache.k_lat[idx].to(device), cache.window)
            out.append(sequence_warp(lat, cond, layout, cfg.warp_sink, vae, cfg.warp_targets,
                                     WarpDepth.of(cfg)).half().cpu())                       # (b, warp ch, W, h, w)
            bar.update(len(idx))
        name = f"warp_{i:05d}.safetensors"
        save_file({"warp": torch.cat(out).contiguous()}, str(path.parent / name))
        files.append(name)
        start += shard["count"]
    bar.close()
    meta["warp"] = {"space": "pixel", "sink": cfg.warp_sink, "chunk_frames": cfg.chunk_frames,
                    "inverse_depth": cfg.warp_inverse_depth, "floor": cfg.warp_floor,
                    "vae": str(Path(args.vae).resolve()), "files": files}
    path.write_text(json.dumps(meta, indent=1))
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, prog="python -m model.train.warps")
    print(f"wrote the warp inputs of {build_warps(args)}")


if __name__ == "__main__":
    main()
