"""The main job of `make demo`: the embedded world model driven through each scene family, next to the oracle.

    python -m agents.demo --out demo_out [--keys "w-32,d-16,w-32,a-16,w-32"] [--seed 0] [--oracle-frames 96]

Per family (indoor, outdoor): the `tiny` world model starts from the oracle's first frame of a held-out scene and
is driven by a key string (`sanawm rollout --backend model --compare-oracle`): `model_<family>.mp4` + contact sheet,
`model_<family>_vs_oracle.mp4` + sheet (model | oracle for the same actions) and per-frame PSNR in the JSON.
Then the oracle alone at 128 px along a shortest walkable path (`oracle_<family>.mp4` + sheet).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sanawm_env.scenes import RenderConfig, Renderer, intrinsics_from_fov, make_scene
from sanawm_env.scenes.geometry import SceneGeometry
from sanawm_env.scenes.media import contact_sheet, have_video, save_png, write_frames_png, write_video
from sanawm_env.scenes.trajectories import path_walk


@dataclass
class Args:
    out: str = "demo_out"
    """output folder"""
    keys: str = "w-32,d-16,w-32,a-16,w-16,s-16"
    """model rollout: key string (keys-frames, comma separated; see `sanawm rollout --help`)"""
    model: str = "tiny"
    """model backend checkpoint: tiny (embedded), micro or a path"""
    frames: int = 96
    """oracle walk: frames per rollout (16 fps)"""
    size: int = 128
    """square frame size in pixels"""
    seed: int = 0
    """scene and walk seed"""


def rollout(family: str, args: Args) -> dict:
    scene = make_scene(family, args.seed)
    geom = SceneGeometry(scene)
    rng = np.random.default_rng(args.seed)
    start, goal, _ = geom.sample_start_goal(rng, min_geodesic=6.0)
    c2w = path_walk(geom, start, goal, args.frames)
    renderer = Renderer(scene, RenderConfig(args.size, args.size, supersample=2))
    k = intrinsics_from_fov(args.size, args.size, 90.0)
    frames = []
    for s in tqdm(range(0, args.frames, 16), desc=f"oracle {family}", leave=False):
        frames.append(renderer.render(torch.from_numpy(c2w[s:s + 16]), k).rgb.numpy())
    frames = np.concatenate(frames)
    out = Path(args.out)
    stem = f"oracle_{family}"
    if have_video():
        media = write_video(out / f"{stem}.mp4", frames, fps=16)
    else:
        media = write_frames_png(out / stem, frames)
    sheet = save_png(out / f"{stem}_sheet.png", contact_sheet(frames, cols=8, max_frames=8))
    np.save(out / f"{stem}_poses.npy", c2w.astype(np.float32))
    travelled = float(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum())
    return {"family": family, "media": str(media), "sheet": str(sheet), "frames": len(frames),
            "metres": travelled}


def model_rollout(family: str, args: Args) -> dict:
    """The world model along a key string from the oracle's start frame, side by side with the oracle."""
    from sanawm_env.backends import model_frame_size

    from .rollout import RolloutArgs, run

    summary = run(RolloutArgs(backend="model", model=args.model, scene=family, seed=100000 + args.seed,
                              size=model_frame_size(args.model), keys=args.keys, compare_oracle=True,
                              out=args.out, name=f"model_{family}", progress=True))
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m agents.demo", description=__doc__.split("\n\n")[0])
    for name, default in vars(Args()).items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default), default=default)
    args = Args(**vars(p.parse_args(argv)))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for family in ("indoor", "outdoor"):
        m = model_rollout(family, args)
        print(f"{family:>8}: world model {m['frames']} frames, mean PSNR vs oracle "
              f"{m['compare_oracle']['mean_psnr']:.2f} dB -> {m['video']}, {m['compare_oracle']['side_by_side_video']}")
    for family in ("indoor", "outdoor"):
        r = rollout(family, args)
        print(f"{r['family']:>8}: {r['frames']} frames, {r['metres']:.1f} m walked -> {r['media']}, {r['sheet']}")


if __name__ == "__main__":
    main()
