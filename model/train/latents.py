"""Latent cache: encode every clip once with a trained VAE, so the DiT trainer never decodes video in its loop.

    python -m model.train.latents --data data/train/index.json --vae runs/vae/vae.safetensors --out data/train_lat \
        --window 9 --device cuda
    # tiny CPU run
    python -m model.train.latents --data /tmp/d/index.json --vae /tmp/vae/vae.safetensors --out /tmp/lat --window 3

What is stored, and why:
- Windows, not whole clips: each window of W latent frames is encoded from its own 1 + s(W - 1) raw frames, first
  frame alone, exactly as `StreamingGenerator.reset` encodes the start image. So latent 0 of every window is a true
  single-image latent, and any prefix of a window is the encoding of that prefix (the VAE is causal): the DiT trains
  on prefixes of any length. Windows start every `--stride` raw frames.
- Per window: normalised latents (C, W, h, w) float32; the raw camera-to-world poses of its frames relative to its
  first frame, `se3_inverse(P0) @ P_k` in float64 (the generator's own expression and precision); the intrinsics
  of the first frame in frame pixels (`k`) and in latent pixels (`k_lat`, via `scale_intrinsics` as the generator's
  `_k_lat`); the clip and start frame it came from.
- Shards: `shard_00000.safetensors`, ... of up to `--shard` windows each, listed with the VAE and geometry in
  `latents.json`. Real footage in RealEstate10K format goes through the same reader (`model/train/data.py`).

`camera_conditioning` turns cached poses into the DiT's inputs by calling `StreamingGenerator._first_camera` /
`_chunk_camera` themselves, so training and inference share one implementation of the camera maths.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..camera import scale_intrinsics, se3_inverse
from ..checkpoint import FORMAT, read_state_dict
from ..config import WorldModelConfig
from ..generator import StreamingGenerator
from ..vae import CausalVAE, CausalVAEConfig, vae_config
from .common import autocast, fit_frames, parse_args, resolve_device, setup_threads, to_unit
from .data import load_index

CACHE_FORMAT = "sanawm-latents-v1"


@dataclass
class Args:
    data: str
    """index.json of an exported dataset (RealEstate10K-format cameras + mp4 or PNG frames)"""
    vae: str
    """trained VAE safetensors from `model.train.vae_train` (its preset is read from the file's metadata)"""
    out: str
    """output folder for the shards and latents.json"""
    window: int = 9
    """latent frames per window (1 + s(W-1) raw frames); the longest DiT sequence it can train"""
    stride: int = 0
    """raw frames between window starts; 0 = back to back (s(W-1), windows share their boundary frame)"""
    size: int = 0
    """square frame size to resize + centre-crop to (intrinsics follow); 0 = keep the clips' own size"""
    shard: int = 512
    """windows per shard file"""
    batch: int = 8
    """windows encoded per VAE call"""
    preset: str | None = None
    """VAE preset; default: from the VAE file's metadata"""
    max_clips: int = 0
    """use at most this many clips (0 = all)"""
    device: str = "auto"
    """cuda, cpu or auto"""
    threads: int = 0
    """torch CPU threads (0 = torch default)"""
    amp: bool = False
    """bf16 autocast for the encoder on CUDA (fp32 by default: the cache is made once)"""
    progress: bool = True
    """tqdm progress bar"""


# ----------------------------------------------------------------------------------------------------------------------
# VAE files


def save_vae(vae: CausalVAE, path: str | Path, preset: str, extra: dict[str, str] | None = None) -> Path:
    """VAE weights (buffers included: the latent statistics) as safetensors, with its preset in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "kind": "vae", "preset": preset, "config": json.dumps(asdict(vae.config)),
            **(extra or {})}
    save_file({k: v.detach().contiguous().cpu() for k, v in vae.state_dict().items()}, str(path), metadata=meta)
    return path


def load_vae(path: str | Path, preset: str | None = None, device: torch.device | str = "cpu") -> CausalVAE:
    """A CausalVAE from `save_vae` output (or any strict state_dict file of a named preset)."""
    sd, meta = read_state_dict(path)
    preset = preset or meta.get("preset")
    if preset is None:
        raise ValueError(f"{path}: no VAE preset in the metadata; pass one (e.g. --preset tiny)")
    cfg = vae_config(preset)
    if "config" in meta:
        raw = json.loads(meta["config"])
        stored = CausalVAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        if stored != cfg:
            raise ValueError(f"{path}: VAE config in the file {stored} differs from preset {preset!r} {cfg}")
    vae = CausalVAE(cfg)
    vae.load_state_dict(sd)
    vae.preset = preset
    return vae.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------------
# Windows and cache


def window_starts(num_frames: int, window: int, t_stride: int, stride: int = 0) -> list[int]:
    """Raw start frames of the windows of `window` latent frames that fit in a clip of `num_frames` frames."""
    span = 1 + t_stride * (window - 1)
    step = stride if stride > 0 else max(1, t_stride * (window - 1))
    return list(range(0, num_frames - span + 1, step))


def relative_poses(c2w: torch.Tensor) -> torch.Tensor:
    """(F, 4, 4) c2w -> float64 poses relative to frame 0, as `StreamingGenerator` computes them
    (`se3_inverse(pose0)[:, None] @ c2w`)."""
    c2w = torch.as_tensor(c2w, dtype=torch.float64)
    if c2w.dim() != 3 or tuple(c2w.shape[1:]) != (4, 4):
        raise ValueError(f"expected c2w of shape (F, 4, 4), got {tuple(c2w.shape)}")
    pose0 = c2w[:1]                                                   # (1, 4, 4): a batch of one world
    return (se3_inverse(pose0)[:, None] @ c2w[None])[0]              # (F, 4, 4)


@dataclass
class LatentCache:
    """All windows of a cache, in memory. latents (N, C, W, h, w); c2w (N, 1 + s(W-1), 4, 4) float64 relative to
    each window's first frame; k, k_lat (N, 4) float32; clip, start (N,) int64; meta from latents.json."""

    latents: torch.Tensor
    c2w: torch.Tensor
    k: torch.Tensor
    k_lat: torch.Tensor
    clip: torch.Tensor
    start: torch.Tensor
    meta: dict
    warp: torch.Tensor | None = None   # (N, warp channels, W, h, w) pixel-space warp inputs (model.train.warps)

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def window(self) -> int:
        return self.latents.shape[2]

    @property
    def frame_hw(self) -> tuple[int, int]:
        return tuple(self.meta["frame_hw"])

    @staticmethod
    def load(path: str | Path) -> LatentCache:
        """Read latents.json (or its folder) and every shard it lists; "a,b,..." concatenates several caches of
        the same geometry (clip ids are offset so they stay distinct)."""
        if isinstance(path, str) and "," in path:
            return LatentCache.concat([LatentCache.load(p) for p in path.split(",") if p])
        path = Path(path)
        if path.is_dir():
            path = path / "latents.json"
        if not path.is_file():
            raise FileNotFoundError(f"expected a latent cache index (latents.json) at {path}")
        meta = json.loads(path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: expected format {CACHE_FORMAT!r}, got {meta.get('format')!r}")
        parts: dict[str, list[torch.Tensor]] = {}
        for shard in meta["shards"]:
            with safe_open(str(path.parent / shard["file"]), framework="pt") as f:
                for k in f.keys():
                    parts.setdefault(k, []).append(f.get_tensor(k))
        if not parts:
            raise ValueError(f"{path}: the cache holds no windows")
        cache = LatentCache(meta=meta, **{k: torch.cat(v) for k, v in parts.items()})
        cache.latents = cache.latents.float()  # shards may be stored in half precision (smaller to carry)
        if meta.get("warp"):
            warps = []
            for name in meta["warp"]["files"]:
                with safe_open(str(path.parent / name), framework="pt") as f:
                    warps.append(f.get_tensor("warp"))
            cache.warp = torch.cat(warps)                       # kept in half precision: cast per batch
            if cache.warp.shape[0] != len(cache):
                raise ValueError(f"{path}: {cache.warp.shape[0]} warp inputs for {len(cache)} windows; rebuild them "
                                 "with python -m model.train.warps")
        return cache

    @staticmethod
    def concat(caches: list[LatentCache]) -> LatentCache:
        keys = ("vae_preset", "frame_hw", "latent_hw", "latent_channels", "temporal_factor")
        first = caches[0]
        for c in caches[1:]:
            got, want = [c.meta.get(k) for k in keys], [first.meta.get(k) for k in keys]
            if got != want or c.window != first.window:
                raise ValueError(f"latent caches differ: {dict(zip(keys, want))}, window {first.window} vs "
                                 f"{dict(zip(keys, got))}, window {c.window}")
        offsets = torch.tensor([0] + [int(c.clip.max()) + 1 for c in caches[:-1]]).cumsum(0)
        meta = {**first.meta, "windows": sum(len(c) for c in caches),
                "clips": sum(c.meta.get("clips", 0) for c in caches), "sources": [c.meta.get("source") for c in caches]}
        warp = None
        if all(c.warp is not None for c in caches):
            if len({c.meta["warp"]["sink"] for c in caches}) > 1:
                raise ValueError("latent caches have warp inputs with and without the sink; rebuild them alike")
            warp = torch.cat([c.warp for c in caches])
        else:
            meta.pop("warp", None)   # only some have them: the trainer would have to mix sources, so none
        return LatentCache(latents=torch.cat([c.latents for c in caches]), c2w=torch.cat([c.c2w for c in caches]),
                           k=torch.cat([c.k for c in caches]), k_lat=torch.cat([c.k_lat for c in caches]),
                           clip=torch.cat([c.clip + o for c, o in zip(caches, offsets)]),
                           start=torch.cat([c.start for c in caches]), meta=meta, warp=warp)


def clip_render(index_path: str | Path) -> dict | None:
    """How an exporter's clips were rendered ({"supersample", "fov"}), from its index.json; None for footage that does
    not say (real RealEstate10K clips). A model trained on them records it, so its start frames can match."""
    cfg = json.loads(Path(index_path).read_text()).get("config") or {}
    out = {k: cfg[k] for k in ("supersample", "fov") if k in cfg}
    return out or None


@torch.no_grad()
def build_cache(args: Args) -> Path:
    """Encode every window of every clip; returns the path of latents.json."""
    device = resolve_device(args.device)
    setup_threads(args.threads, device)
    vae = load_vae(args.vae, args.preset, device)
    s = vae.temporal_factor
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = load_index(args.data)
    if args.max_clips > 0:
        clips = clips[:args.max_clips]
    hw = (args.size, args.size) if args.size > 0 else None
    shards, pending, n_windows = [], [], 0
    frame_hw = None

    def flush():
        if not pending:
            return
        name = f"shard_{len(shards):05d}.safetensors"
        tensors = {k: torch.cat([p[k] for p in pending]).contiguous() for k in pending[0]}
        save_file(tensors, str(out / name), metadata={"format": CACHE_FORMAT})
        shards.append({"file": name, "count": int(tensors["latents"].shape[0])})
        pending.clear()

    bar = tqdm(clips, desc="encode clips", disable=not args.progress)
    for ci, clip in enumerate(bar):
        frames, k_px = fit_frames(clip.frames, clip.intrinsics, hw)
        fh, fw = frames.shape[1:3]
        if frame_hw is None:
            frame_hw = (fh, fw)
        elif frame_hw != (fh, fw):
            raise ValueError(f"clip {clip.meta.get('name', ci)}: frames are {fh}x{fw} but earlier clips are "
                             f"{frame_hw[0]}x{frame_hw[1]}; pass --size to bring them to one size")
        lat_hw = (fh // vae.spatial_factor, fw // vae.spatial_factor)
        starts = window_starts(len(frames), args.window, s, args.stride)
        span = 1 + s * (args.window - 1)
        for b0 in range(0, len(starts), args.batch):
            st = starts[b0:b0 + args.batch]
            x = to_unit(torch.stack([frames[a:a + span] for a in st]).to(device))    # (B, 3, span, H, W)
            with autocast(device, args.amp):
                z = vae.encode(x)                                                     # (B, C, W, h, w)
            c2w = torch.stack([relative_poses(torch.as_tensor(clip.c2w[a:a + span])) for a in st])
            k = torch.stack([k_px[a] for a in st]).float()                            # (B, 4) frame pixels
            pending.append({"latents": z.float().cpu(), "c2w": c2w, "k": k,
                            "k_lat": scale_intrinsics(k, (fh, fw), lat_hw),
                            "clip": torch.full((len(st),), ci, dtype=torch.int64),
                            "start": torch.tensor(st, dtype=torch.int64)})
            n_windows += len(st)
            if sum(p["latents"].shape[0] for p in pending) >= args.shard:
                flush()
        bar.set_postfix(windows=n_windows)
    flush()
    if not shards:
        raise ValueError(f"no window of {args.window} latent frames ({1 + s * (args.window - 1)} raw frames) fits in "
                         f"the clips of {args.data}; export longer clips or lower --window")
    index = out / "latents.json"
    index.write_text(json.dumps({
        "format": CACHE_FORMAT, "source": str(Path(args.data).resolve()), "vae": str(Path(args.vae).resolve()),
        "vae_preset": vae.preset, "render": clip_render(args.data), "frame_hw": list(frame_hw),
        "latent_hw": [frame_hw[0] // vae.spatial_factor, frame_hw[1] // vae.spatial_factor],
        "latent_channels": vae.latent_channels, "temporal_factor": s, "window": args.window,
        "stride": args.stride, "windows": n_windows, "clips": len(clips), "shards": shards}, indent=1))
    return index


# ----------------------------------------------------------------------------------------------------------------------
# Camera conditioning, shared with inference


class _CameraMaths:
    """Exactly the attributes `StreamingGenerator._chunk_camera` / `_first_camera` read, so both can be called
    without building a generator (and its model)."""

    _chunk_camera = StreamingGenerator._chunk_camera
    _first_camera = StreamingGenerator._first_camera

    def __init__(self, cfg: WorldModelConfig, device: torch.device, dtype: torch.dtype = torch.float32):
        self.cfg, self.device, self.dtype = cfg, device, dtype


def camera_conditioning(cfg: WorldModelConfig, c2w_rel: torch.Tensor, k_lat: torch.Tensor,
                        num_latents: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The DiT's camera inputs for latents 0 .. T-1 of windows, exactly as streaming inference builds them.

    c2w_rel: (B, >= 1 + s(T-1), 4, 4) raw poses relative to the window's first frame; k_lat: (B, 4) latent pixels.
    Latent 0 (the image) gets `_first_camera` (identity window); latents 1 .. T-1 get `_chunk_camera` of raw frames
    1 .. s(T-1), each latent anchored at its last raw frame with its own s frames as the Plücker window. The
    generator calls `_chunk_camera` once per chunk; the maths is per latent, so one call over all chunks is equal.
    Returns (camera_conditions (B, T, 20), plucker (B, 6s, T, h, w)), float32.
    """
    b = c2w_rel.shape[0]
    s = cfg.vae_temporal
    need = 1 + s * (num_latents - 1)
    if c2w_rel.dim() != 4 or c2w_rel.shape[1] < need or tuple(k_lat.shape) != (b, 4):
        raise ValueError(f"camera_conditioning: expected c2w_rel (B, >= {need}, 4, 4) and k_lat (B, 4) for "
                         f"{num_latents} latents; got {tuple(c2w_rel.shape)} and {tuple(k_lat.shape)}")
    maths = _CameraMaths(cfg, c2w_rel.device)
    k_lat = k_lat.float()
    cond, pl = maths._first_camera(b, k_lat)                                     # (B, 1, 20), (B, 6s, 1, h, w)
    if num_latents == 1:
        return cond, pl
    rest_c, rest_p = maths._chunk_camera(c2w_rel[:, 1:need].to(torch.float64), k_lat)
    return torch.cat([cond, rest_c], 1), torch.cat([pl, rest_p], 2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, prog="python -m model.train.latents")
    print(f"wrote {build_cache(args)}")


if __name__ == "__main__":
    main()
