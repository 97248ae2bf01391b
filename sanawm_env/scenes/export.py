"""Dataset export: rendered clips as mp4 (or PNG frames) plus RealEstate10K-format camera files.

    python -m sanawm_env.scenes.export --out DIR --clips N --frames F --size 128 --seed S

Camera file (one per clip, RealEstate10K layout): the first line is an identifier
(`sanawm://<family>/<scene seed>/<trajectory>`); then one line per frame:
`timestamp_us fx fy cx cy 0 0 <12 numbers: world-to-camera 3x4, row-major>`, with fx, fy, cx, cy
normalised by the image width / height. `model/train/data.py` reads it back, so the same training
code can read real footage in this format.

Scene seeds run from --seed upward (a new scene every --clips-per-scene clips, families
alternating), so a held-out set is simply another seed range.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import make_scene
from .geometry import SceneGeometry
from .media import have_video, write_frames_png, write_video
from .poses import intrinsics_from_fov, pose
from .render import RenderConfig, Renderer
from .trajectories import KINDS, make_trajectory, open_heading

DEFAULT_KIND_WEIGHTS = {"walk": 0.4, "path": 0.15, "rotation": 0.15, "revisit": 0.1, "orbit": 0.1, "jitter": 0.1}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_kinds(text: str) -> dict[str, float]:
    """'walk=0.3,look=0.2' -> {'walk': 0.3, 'look': 0.2}: the trajectory mix of an export."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, w = item.partition("=")
        if name not in KINDS or not _is_number(w):
            raise ValueError(f"expected kind=weight with kind in {KINDS} and a number, got {item!r}")
        out[name] = float(w)
    if not out or min(out.values()) < 0 or sum(out.values()) <= 0:
        raise ValueError(f"expected non-negative weights with a positive sum, got {text!r}")
    return out


@dataclass
class ExportConfig:
    out: str
    clips: int = 8
    frames: int = 32
    size: int = 128
    seed: int = 0
    fps: int = 16
    fov: float = 90.0
    families: tuple[str, ...] = ("indoor", "outdoor")
    clips_per_scene: int = 4
    supersample: int = 2
    png: bool = False            # PNG frame folders instead of mp4
    depth: bool = False          # also write depth as uint16 millimetres (npz)
    compile: bool = True         # fused renderer (falls back to eager without a compiler)
    batch: int = 32              # frames rendered per renderer call
    device: str = "cpu"          # where the ray caster runs (cuda: many exporter processes share one GPU)
    kinds: dict[str, float] | None = None  # trajectory mix; None = DEFAULT_KIND_WEIGHTS


def format_re10k(identifier: str, timestamps_us, intrinsics_norm, c2w) -> str:
    """Text of one RealEstate10K camera file. c2w (F, 4, 4) is inverted exactly as a rigid transform."""
    c2w = np.asarray(c2w, dtype=np.float64)
    r, t = c2w[:, :3, :3], c2w[:, :3, 3]
    w2c = np.concatenate([r.transpose(0, 2, 1), -np.einsum("fji,fj->fi", r, t)[..., None]], axis=2)  # (F, 3, 4)
    lines = [identifier]
    for ts, k, m in zip(timestamps_us, np.asarray(intrinsics_norm, dtype=np.float64), w2c):
        nums = [*k, 0.0, 0.0, *m.reshape(-1)]
        lines.append(f"{int(ts)} " + " ".join(format(float(x), ".17g") for x in nums))
    return "\n".join(lines) + "\n"


def export_clips(cfg: ExportConfig, progress: bool = True) -> Path:
    """Render `cfg.clips` clips into `cfg.out`; returns the path of the index.json that lists them."""
    if cfg.clips < 1 or cfg.frames < 1 or cfg.size < 8:
        raise ValueError(f"need clips >= 1, frames >= 1, size >= 8; got {cfg.clips}, {cfg.frames}, {cfg.size}")
    bad = [f for f in cfg.families if f not in ("indoor", "outdoor")]
    if bad:
        raise ValueError(f"unknown scene families {bad}; expected indoor and/or outdoor")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    use_png = cfg.png or not have_video()
    k_px = intrinsics_from_fov(cfg.size, cfg.size, cfg.fov)
    k_norm = (k_px / torch.tensor([cfg.size, cfg.size, cfg.size, cfg.size])).double().numpy()
    mix = cfg.kinds or DEFAULT_KIND_WEIGHTS
    kinds = list(mix)
    weights = np.array([mix[k] for k in kinds], dtype=np.float64)
    entries = []
    scene = geom = renderer = None
    for c in tqdm(range(cfg.clips), desc="export clips", disable=not progress):
        scene_no = c // cfg.clips_per_scene
        family = cfg.families[scene_no % len(cfg.families)]
        scene_seed = cfg.seed + scene_no
        if scene is None or (scene.family, scene.seed) != (family, scene_seed):
            scene = make_scene(family, scene_seed)
            geom = SceneGeometry(scene)
            renderer = Renderer(scene, RenderConfig(cfg.size, cfg.size, supersample=cfg.supersample,
                                                    compile=cfg.compile), device=cfg.device)
        rng = np.random.default_rng([cfg.seed, c, 7])
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        position = geom.sample_free_position(rng)
        start = pose(position, yaw=open_heading(geom, position, rng))
        c2w = make_trajectory(kind, geom, start, cfg.frames, rng)
        rgb, depth = [], []
        for s in range(0, cfg.frames, cfg.batch):
            r = renderer.render(torch.from_numpy(c2w[s:s + cfg.batch]), k_px)
            rgb.append(r.rgb.cpu().numpy())
            depth.append(r.depth.cpu().numpy())
        rgb = np.concatenate(rgb)
        name = f"clip_{c:05d}"
        if use_png:
            write_frames_png(out / name, rgb)
            media = name
        else:
            write_video(out / f"{name}.mp4", rgb, fps=cfg.fps)
            media = f"{name}.mp4"
        timestamps = (np.arange(cfg.frames) * (1_000_000 // cfg.fps)).astype(np.int64)
        ident = f"sanawm://{family}/{scene_seed}/{kind}"
        (out / f"{name}.txt").write_text(format_re10k(ident, timestamps, np.tile(k_norm, (cfg.frames, 1)), c2w))
        if cfg.depth:
            d = np.concatenate(depth)
            mm = np.where(np.isfinite(d), np.clip(d * 1000.0 + 0.5, 0, 65535), 0).astype(np.uint16)
            np.savez_compressed(out / f"{name}_depth.npz", depth_mm=mm)
        entries.append({"name": name, "media": media, "cameras": f"{name}.txt", "family": family,
                        "scene_seed": scene_seed, "trajectory": kind, "frames": cfg.frames,
                        "size": cfg.size, "fps": cfg.fps})
    index = out / "index.json"
    index.write_text(json.dumps({"format": "re10k", "config": asdict(cfg), "clips": entries}, indent=1))
    return index


def parse_args(argv=None) -> ExportConfig:
    p = argparse.ArgumentParser(prog="python -m sanawm_env.scenes.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--clips", type=int, default=8, help="number of clips")
    p.add_argument("--frames", type=int, default=32, help="frames per clip")
    p.add_argument("--size", type=int, default=128, help="square frame size in pixels")
    p.add_argument("--seed", type=int, default=0, help="first scene seed; also seeds the trajectories")
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--fov", type=float, default=90.0, help="horizontal field of view, degrees")
    p.add_argument("--families", default="indoor,outdoor", help="comma-separated scene families")
    p.add_argument("--clips-per-scene", type=int, default=4)
    p.add_argument("--supersample", type=int, default=2, choices=(1, 2))
    p.add_argument("--png", action="store_true", help="PNG frame folders instead of mp4")
    p.add_argument("--depth", action="store_true", help="also write depth (uint16 mm, npz)")
    p.add_argument("--no-compile", action="store_true", help="eager renderer (no C++ compiler needed)")
    p.add_argument("--device", default="cpu", help="where the ray caster runs (cpu, cuda)")
    p.add_argument("--kinds", default=None,
                   help=f"trajectory mix as kind=weight,... (kinds: {', '.join(KINDS)}); default "
                        + ",".join(f"{k}={w}" for k, w in DEFAULT_KIND_WEIGHTS.items()))
    a = p.parse_args(argv)
    return ExportConfig(out=a.out, clips=a.clips, frames=a.frames, size=a.size, seed=a.seed, fps=a.fps, fov=a.fov,
                        families=tuple(f.strip() for f in a.families.split(",") if f.strip()),
                        clips_per_scene=a.clips_per_scene, supersample=a.supersample, png=a.png, depth=a.depth,
                        compile=not a.no_compile, device=a.device,
                        kinds=parse_kinds(a.kinds) if a.kinds else None)


def main(argv=None) -> None:
    index = export_clips(parse_args(argv))
    print(f"wrote {index}")


if __name__ == "__main__":
    main()
