"""Carry a trained DiT to larger frames at the same token grid: the blocks stay, the patch maps are refitted.

    python -m model.train.grow --init model/weights/tiny_dit.safetensors --size 128 \
        --data data/look128_70000/index.json --vae model/weights/tiny_vae.safetensors --out runs/grow128

Why: at 128x128 with patch 4 over 16x16 latents a frame is still 16 tokens, so every block, the camera branch
and the RoPE grid of a 64x64 model (patch 2 over 8x8 latents) apply unchanged; only the maps between latent
patches and tokens see a new size. The VAE's latents of one frame at two sizes are not one map at two scales
(model card, item 15: 44 % apart after 2x2 pooling), so the new maps are fitted, by least squares on frames of
the training data and the same frames area-downsampled: A takes a large-frame patch to the small frame's patch
(what the old embeddings read), B the small patch back to the large one (what the old output layer wrote). Then
x_embedder' = x_embedder A, final' = B final, and the warp embeddings get A on their latent channels (with A's
intercept, so a warp's zero-filled invalid area reads it: rms 0.07 of the unit-variance latents at 128x128). The
per-latent-pixel channels that are smooth in space (Plücker rays, the warp's validity mask) are spread over the
finer grid. The grown model starts where the small one was, and a fine-tune teaches it the detail B cannot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_checkpoint, metadata, save_checkpoint
from ..config import WorldModelConfig
from ..transformer import SanaWMTransformer, build_model
from .common import parse_args, setup_threads
from .data import load_index
from .latents import load_vae


@dataclass
class Args:
    init: str
    """the trained DiT to grow (one of our checkpoints)"""
    size: int
    """new frame height and width in pixels (a multiple of the old size)"""
    data: str
    """an exporter's index.json at the new size: the frames the maps are fitted on"""
    vae: str
    """the VAE both sizes' latents come from"""
    out: str
    """output folder: dit.safetensors and grow.json"""
    name: str = ""
    """name of the grown config (default: the old name + '-SIZE'); e.g. tiny128, the preset a fine-tune uses"""
    frames: int = 1024
    """frames used for the fit (spread over the clips)"""
    ridge: float = 1e-3
    """ridge of the least-squares fits, relative to the mean input energy"""
    threads: int = 0
    """torch CPU threads (0 = torch default)"""
    progress: bool = True
    """tqdm progress bar"""


def grown_config(cfg: WorldModelConfig, size: int, name: str = "") -> WorldModelConfig:
    """The same model at size x size frames and the same token grid (the patch grows with the frame)."""
    if cfg.height != cfg.width or size % cfg.height:
        raise ValueError(f"size must be a multiple of the square frame size {cfg.height}x{cfg.width}, got {size}")
    k = size // cfg.height
    _, ph, pw = cfg.patch_size
    return replace(cfg, name=name or f"{cfg.name}-{size}", height=size, width=size, patch_size=(1, ph * k, pw * k))


def patches(z: torch.Tensor, p: int) -> torch.Tensor:
    """Latents (N, C, h, w) -> token patches (N * h/p * w/p, C * p * p), flattened in Conv3d weight order (c, q, r)."""
    n, c, h, w = z.shape
    z = z.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)          # (N, h/p, w/p, C, p, p)
    return z.reshape(-1, c * p * p)


def lstsq(x: torch.Tensor, y: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y ~ x @ M.T + m by ridge regression in float64 -> (M (dy, dx), m (dy,))."""
    x, y = x.double(), y.double()
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    gram = xc.T @ xc
    lam = ridge * gram.diagonal().mean()
    m = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc).T   # (dy, dx)
    return m, ym - m @ xm


@torch.no_grad()
def fit_maps(vae, frames: torch.Tensor, k: int, p: int, ridge: float, progress: bool = False) -> dict:
    """frames (N, 3, H, W) in [-1, 1] at the large size -> the patch maps A (large -> small), B (small -> large)
    with intercepts, and each fit's relative residual."""
    big, small = [], []
    for i in tqdm(range(0, len(frames), 64), desc="encode pairs", disable=not progress):
        x = frames[i:i + 64]
        big.append(vae.encode_image(x[:, :, None])[:, :, 0])                       # (n, C, h, w)
        small.append(vae.encode_image(F.avg_pool2d(x, k)[:, :, None])[:, :, 0])    # (n, C, h/k, w/k)
    zb, zs = patches(torch.cat(big), p * k), patches(torch.cat(small), p)          # (M, C(pk)^2), (M, Cp^2)
    a, a0 = lstsq(zb, zs, ridge)
    b, b0 = lstsq(zs, zb, ridge)

    def rel(pred, y):
        return float((pred - y.double()).norm() / (y.double() - y.double().mean(0)).norm())
    return {"A": a, "a": a0, "B": b, "b": b0, "pairs": zb.shape[0],
            "residual_A": rel(zb.double() @ a.T + a0, zs), "residual_B": rel(zs.double() @ b.T + b0, zb)}


def _spread(w: torch.Tensor, k: int) -> torch.Tensor:
    """Conv3d weight (O, I, 1, p, p) -> (O, I, 1, pk, pk) that reads the mean of each k x k block as one pixel."""
    return w.repeat_interleave(k, 3).repeat_interleave(k, 4) / (k * k)


def _embed(conv: torch.nn.Conv3d, a: torch.Tensor, a0: torch.Tensor, lat: int, k: int) -> tuple:
    """A patch embedding whose first `lat` channels are latents (through A) and the rest smooth maps (spread)."""
    w, bias = conv.weight.double(), conv.bias.double()                            # (O, I, 1, p, p)
    o, i, _, p, _ = w.shape
    wl = w[:, :lat].reshape(o, lat * p * p) @ a                                   # (O, lat (pk)^2)
    new_w = torch.cat([wl.reshape(o, lat, 1, p * k, p * k), _spread(w[:, lat:], k)], 1)
    return new_w, bias + w[:, :lat].reshape(o, -1) @ a0


@torch.no_grad()
def grow(model: SanaWMTransformer, size: int, maps: dict, name: str = "") -> SanaWMTransformer:
    """A model of `grown_config(model.cfg, size)` with the blocks copied and the patch maps refitted."""
    cfg = grown_config(model.cfg, size, name)
    k = cfg.patch_size[1] // model.cfg.patch_size[1]
    new = build_model(cfg)
    sd = {key: v.clone() for key, v in model.state_dict().items()}
    lat = cfg.in_channels
    for emb in ("x_embedder", "warp_embedder", "sink_embedder"):
        conv = getattr(model, emb, None)
        if conv is not None:
            sd[f"{emb}.proj.weight"], sd[f"{emb}.proj.bias"] = _embed(conv.proj, maps["A"], maps["a"], lat, k)
    for emb in ("plucker_embedder", "raymap_embedder"):
        sd[f"{emb}.proj.weight"] = _spread(getattr(model, emb).proj.weight, k)
    # final linear: rows are (q, r, c) per token (`unpatchify`); B works on (c, q, r) patches as fitted
    lin = model.final_layer.linear
    p = model.cfg.patch_size[1]
    perm_small = torch.arange(p * p * lat).reshape(p, p, lat).permute(2, 0, 1).reshape(-1)        # (c,q,r) -> row
    pk = p * k
    perm_big = torch.arange(pk * pk * lat).reshape(pk, pk, lat).permute(2, 0, 1).reshape(-1)
    w = lin.weight.double()[perm_small]                                            # (C p^2 in (c,q,r), hidden)
    bias = lin.bias.double()[perm_small]
    nw, nb = maps["B"] @ w, maps["B"] @ bias + maps["b"]                           # (C (pk)^2 in (c,q,r), ...)
    inv = torch.empty_like(perm_big)
    inv[perm_big] = torch.arange(len(perm_big))
    sd["final_layer.linear.weight"], sd["final_layer.linear.bias"] = nw[inv], nb[inv]
    new.load_state_dict({n: v.to(new.state_dict()[n].dtype) for n, v in sd.items()}, strict=True)
    return new


def sample_frames(index: str, count: int) -> torch.Tensor:
    """`count` frames spread evenly over an export's clips -> (N, 3, H, W) in [-1, 1]."""
    clips = load_index(index)
    per = max(1, -(-count // len(clips)))
    out = []
    for c in clips:
        idx = torch.linspace(0, len(c.frames) - 1, per).round().long().unique()
        out.append(torch.from_numpy(c.frames[idx.numpy()]))
    x = torch.cat(out)[:count]                                                     # (N, H, W, 3) uint8
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, prog="python -m model.train.grow")
    setup_threads(args.threads, torch.device("cpu"))
    model = load_checkpoint(args.init)
    cfg = grown_config(model.cfg, args.size, args.name)
    vae = load_vae(args.vae)
    frames = sample_frames(args.data, args.frames)
    if frames.shape[-1] != args.size or frames.shape[-2] != args.size:
        raise ValueError(f"{args.data}: frames are {tuple(frames.shape[-2:])}, expected {args.size}x{args.size}")
    k = args.size // model.cfg.height
    maps = fit_maps(vae, frames, k, model.cfg.patch_size[1], args.ridge, args.progress)
    new = grow(model, args.size, maps, args.name)
    out = Path(args.out)
    meta = {k: v for k, v in metadata(args.init).items() if k == "render"}
    save_checkpoint(new, out / "dit.safetensors", {k: json.dumps(v) for k, v in meta.items()})
    report = {"init": args.init, "size": args.size, "config": json.loads(cfg.to_json()), "pairs": maps["pairs"],
              "frames": len(frames), "residual_A": maps["residual_A"], "residual_B": maps["residual_B"]}
    (out / "grow.json").write_text(json.dumps(report, indent=1))
    print(f"grew {args.init} to {args.size}x{args.size} (patch {cfg.patch_size}): {maps['pairs']} patch pairs, "
          f"relative residual A {maps['residual_A']:.3f}, B {maps['residual_B']:.3f} -> {out / 'dit.safetensors'}")


if __name__ == "__main__":
    main()
