"""Rollouts: run agents through episodes (`run_episode`, `evaluate`) and `sanawm rollout`, the headless renderer.

    sanawm rollout --keys "w-16,a-8,wd-8" --out runs/rollout                      # a key string (our keymap)
    sanawm rollout --keys "w-16,a-8" --keymap sana-wm                             # SANA-WM's keys (a/d yaw)
    sanawm rollout --actions actions.npy                                          # (T, 6) env actions
    sanawm rollout --trajectory cams.npy --traj-scale 1.0                         # (F, 4, 4) c2w poses
    sanawm rollout --replay runs/drive/drive_0001.json --frames-npy               # a `sanawm drive` recording
    sanawm rollout --backend model --model micro --size 32 --keys w-32 --compare-oracle

Outputs in --out (default runs/rollout), named by --name: `<name>.mp4` (or a PNG folder without imageio-ffmpeg),
`<name>_sheet.png` (contact sheet), `<name>_poses.npy` ((F, 4, 4) float32 c2w of every frame), `<name>.json` (the
command's summary). With --compare-oracle: `<name>_vs_oracle.mp4` (model | oracle side by side) and per-frame PSNR
in the JSON.

How each source drives the world:
- --actions and --keys step the env (`env.step`), so collisions, pitch limits and the task's measures apply. A
  key segment `<keys>-<frames>` holds its keys for ceil(frames / K) steps (K = frames per step).
- --trajectory drives the world by poses: the camera file is anchored at the episode's start pose (poses relative
  to the first one, translations times --traj-scale), every frame's relative motion is resolved against the
  scene with `SceneGeometry.move` (metric, never through walls: a blocked move stops at contact and the rest of the
  trajectory continues from there), and each group of K resolved poses goes straight to the backend
  (`env.unwrapped.backend.step`), so the model sees exactly the K camera poses of every chunk. The env's own
  measures are not updated in this mode. `--via-env` instead follows the trajectory with `TrajectoryFollower`
  through `env.step` (one target pose per step; the env interpolates the frames in between).
- --replay re-runs a drive log's timeline (resets, steps, forks) and writes the recorded frames: the same frames,
  bit for bit, as the recording (checked against the logged poses).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sanawm_env.env import VIDEO_FPS

from .common import (
    EnvArgs,
    add_dataclass_args,
    arg,
    episode_of,
    from_namespace,
    key_string_actions,
    load_image,
    load_intrinsics,
    make_env,
    make_parser,
    write_media,
)
from .scripted import ActionReplay, Agent, TrajectoryFollower

MEASURE_KEYS = ("success", "spl", "soft_spl", "distance_to_goal", "collisions", "path_length", "coverage")


# ---------------------------------------------------------------------- episodes


@dataclass
class EpisodeResult:
    """One episode: totals, the final measures, and (if recorded) every frame with its pose."""

    seed: int | None
    steps: int
    reward: float
    terminated: bool
    truncated: bool
    measures: dict[str, float]
    frames: np.ndarray | None = None   # (F, H, W, 3) uint8: the reset frame, then the K frames of every step
    poses: np.ndarray | None = None    # (F, 4, 4) float32 c2w of those frames
    actions: np.ndarray | None = None  # (T, 6) float32 continuous actions sent to the env


def run_episode(env, agent: Agent, seed: int | None = None, options: dict | None = None, max_steps: int | None = None,
                record: bool = False) -> EpisodeResult:
    """Reset `env` (with `seed`), let `agent` act until the episode ends (terminated, truncated, the agent runs out
    of actions, or `max_steps`), and return the result; `record` keeps the frames and poses."""
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(env, obs, info)
    frames = [obs["rgb"][None]] if record else None
    poses = [np.asarray(info["pose"], np.float32)[None]] if record else None
    actions, total, steps, terminated, truncated = [], 0.0, 0, False, False
    while not (terminated or truncated) and (max_steps is None or steps < max_steps):
        if getattr(agent, "done", False):
            break
        action = agent.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(np.asarray(action, np.float32).reshape(-1))
        total += float(reward)
        steps += 1
        if record:
            frames.append(info["frames"])
            poses.append(np.asarray(info["poses"], np.float32))
    measures = {k: float(info[k]) for k in MEASURE_KEYS if k in info}
    return EpisodeResult(seed=seed, steps=steps, reward=total, terminated=terminated, truncated=truncated,
                         measures=measures, frames=np.concatenate(frames) if record else None,
                         poses=np.concatenate(poses) if record else None,
                         actions=np.stack(actions) if actions else np.zeros((0, 6), np.float32))


def evaluate(env, agent: Agent, episodes: int = 10, seed: int = 0, videos: int = 0, out: str | Path | None = None,
             max_steps: int | None = None, progress: bool = True, name: str | None = None) -> dict[str, Any]:
    """Mean success, SPL, soft SPL, reward, steps and collisions of `agent` over `episodes` episodes with seeds
    seed, seed + 1, ... (so every agent meets the same episodes); mp4s of the first `videos` episodes go to `out`."""
    name = name or agent.name
    rows = []
    for i in tqdm(range(episodes), desc=f"eval {name}", disable=not progress, leave=False):
        record = i < videos
        r = run_episode(env, agent, seed=seed + i, max_steps=max_steps, record=record)
        if record and out is not None:
            write_media(out, f"{name}_ep{i:03d}", r.frames, fps=VIDEO_FPS, sheet=False)
        rows.append(r)
    summary: dict[str, Any] = {"agent": name, "episodes": episodes}
    for k in ("success", "spl", "soft_spl", "collisions"):
        if all(k in r.measures for r in rows):
            summary[k] = float(np.mean([r.measures[k] for r in rows]))
    summary["reward"] = float(np.mean([r.reward for r in rows]))
    summary["steps"] = float(np.mean([r.steps for r in rows]))
    return summary


# ---------------------------------------------------------------------- pose-driven rollouts


def anchor_trajectory(traj: np.ndarray, start: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(F, 4, 4) camera-to-world poses re-expressed relative to the first and placed at `start` (4, 4), with
    translations scaled by `scale` (the published camera files carry no unit)."""
    t = np.asarray(traj, dtype=np.float64).copy()
    t[:, :3, 3] *= scale
    return start[None] @ np.linalg.inv(t[0])[None] @ t


def resolve_trajectory(geometry, poses: np.ndarray) -> tuple[np.ndarray, int]:
    """Replay each frame's relative motion from the previously resolved pose through `geometry.move` (sweeps the
    body, stops at contact); returns ((F, 4, 4) resolved poses, number of frames that collided)."""
    out = np.empty_like(poses)
    out[0] = poses[0]
    hits = 0
    for f in range(1, len(poses)):
        target = out[f - 1] @ np.linalg.inv(poses[f - 1]) @ poses[f]
        out[f], collided = geometry.move(out[f - 1], target)
        hits += bool(collided)
    return out, hits


def drive_poses(env, poses: np.ndarray, progress: bool = True) -> np.ndarray:
    """Feed resolved poses (1 + T*K, 4, 4) to the reset env's backend, K per step; returns the (T*K, H, W, 3)
    frames. Uses the env's public `backend` (the Backend protocol's `step`); the env's own pose and measures are
    left behind, so close the env afterwards."""
    backend = env.unwrapped.backend
    k = env.unwrapped.frames_per_step
    out = []
    for t in tqdm(range((len(poses) - 1) // k), desc="backend steps", disable=not progress, leave=False):
        out.append(backend.step(poses[1 + t * k:1 + (t + 1) * k][None])[0])  # (K, H, W, 3)
    return np.concatenate(out)


# ---------------------------------------------------------------------- the command


@dataclass
class RolloutArgs(EnvArgs):
    """`sanawm rollout`: headless rollouts from actions, key strings, trajectories or drive logs."""

    actions: str = arg("", "(T, 6) float actions .npy to step the env with", metavar="NPY")
    keys: str = arg("", "a key string: comma-separated <keys>-<frames>, e.g. 'w-16,a-8,wd-4'", metavar="STRING")
    keymap: str = arg("ours", "keys of --keys: ours (WASD translate, arrows yaw/pitch) or sana-wm (w/s forward/back, "
                              "a/d yaw, i/k pitch, j/l strafe)", choices=("ours", "sana-wm"))
    trajectory: str = arg("", "(F, 4, 4) camera-to-world poses .npy (the SANA-WM camera format)", metavar="NPY")
    traj_scale: float = arg(1.0, "metres per unit of the trajectory's translations")
    via_env: bool = arg(False, "--trajectory: follow the poses through env.step (one target per step) instead of "
                               "feeding every pose to the backend")
    replay: str = arg("", "a `sanawm drive` log (.json) to reproduce frame for frame", metavar="JSON")
    image: str = arg("", "start image (model backend): centre-cropped and resized to the frame size", metavar="PNG")
    intrinsics: str = arg("", "fx, fy, cx, cy (.npy/.json, (4,) or 3x3, in --image pixels if given, else frame "
                              "pixels)", metavar="FILE")
    compare_oracle: bool = arg(False, "model backend: also render the oracle along the same poses; writes both side "
                                      "by side and per-frame PSNR")
    out: str = arg("runs/rollout", "output folder")
    name: str = arg("rollout", "file name stem of the outputs")
    frames_npy: bool = arg(False, "also save the raw frames as <name>_frames.npy (exact, for comparisons)")
    progress: bool = arg(True, "progress bars")


def _reset_options(args: RolloutArgs, size: tuple[int, int]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    k = load_intrinsics(args.intrinsics) if args.intrinsics else None
    if args.image:
        img, (sx, sy, ox, oy) = load_image(args.image, size)
        opts["start_image"] = img
        if k is not None:
            k = np.array([k[0] * sx, k[1] * sy, (k[2] - ox) * sx, (k[3] - oy) * sy])
    if k is not None:
        opts["intrinsics"] = k.astype(np.float32)
    return opts


def _source(args: RolloutArgs) -> str:
    given = [n for n in ("actions", "keys", "trajectory", "replay") if getattr(args, n)]
    if len(given) != 1:
        raise SystemExit(f"sanawm rollout: give exactly one of --actions, --keys, --trajectory or --replay (got "
                         f"{', '.join('--' + g for g in given) or 'none'})")
    return given[0]


def _frames_of(env, args: RolloutArgs, source: str, opts: dict, trajectory_poses: np.ndarray | None = None):
    """Run one rollout in `env`; returns (frames, poses, summary)."""
    if source == "trajectory" and not args.via_env:
        obs, info = env.reset(seed=args.seed, options=opts)
        ep = episode_of(env)
        k = env.unwrapped.frames_per_step
        if trajectory_poses is None:
            traj = np.load(args.trajectory)
            if traj.ndim != 3 or traj.shape[1:] != (4, 4) or len(traj) < 1 + k:
                raise SystemExit(f"--trajectory must hold (F, 4, 4) camera-to-world poses with F >= 1 + K = {1 + k}, "
                                 f"got {traj.shape}")
            usable = 1 + (len(traj) - 1) // k * k
            if usable < len(traj):
                print(f"note: {len(traj) - usable} trailing poses dropped (F - 1 must be a multiple of K = {k})")
            poses, hits = resolve_trajectory(ep.geometry, anchor_trajectory(traj[:usable], ep.start, args.traj_scale))
        else:
            poses, hits = trajectory_poses, 0
        frames = np.concatenate([obs["rgb"][None], drive_poses(env, poses, progress=args.progress)])
        return frames, poses.astype(np.float32), {"steps": (len(poses) - 1) // k, "collided_frames": hits,
                                                  "resolved_poses": poses}
    if source == "trajectory":
        agent: Agent = TrajectoryFollower(np.load(args.trajectory)[::env.unwrapped.frames_per_step])
        agent.poses = agent.poses.copy()
        agent.poses[:, :3, 3] *= args.traj_scale
    elif source == "actions":
        agent = ActionReplay(np.load(args.actions))
    else:
        agent = ActionReplay(key_string_actions(args.keys, env.unwrapped.frames_per_step, args.keymap))
    r = run_episode(env, agent, seed=args.seed, options=opts, record=True)
    summary = {"steps": r.steps, "reward": r.reward, "terminated": r.terminated, "truncated": r.truncated,
               **r.measures, "actions": r.actions}
    if isinstance(agent, TrajectoryFollower):
        summary["clipped_steps"] = agent.clipped_steps
    if source != "trajectory" and not getattr(agent, "done", True):
        print(f"note: the episode ended after {r.steps} of {len(agent.actions)} actions "
              f"({'terminated' if r.terminated else 'truncated'})")
    return r.frames, r.poses, summary


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of two (F, H, W, 3) uint8 stacks; inf where identical."""
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d.reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def run(args: RolloutArgs) -> dict[str, Any]:
    """Run `sanawm rollout`; returns the summary written to <out>/<name>.json."""
    source = _source(args)
    out = Path(args.out)
    if source == "replay":
        from .drive import load_log, replay_log

        log = load_log(args.replay)
        frames, poses, check = replay_log(log, progress=args.progress)
        fps = int(log.get("fps", 16))
        summary: dict[str, Any] = {"source": "replay", "log": args.replay, "frames": len(frames), **check}
        print(f"replayed {args.replay}: {len(frames)} frames, poses match the log: {check['poses_match']}")
        if not check["poses_match"]:
            print("warning: the replayed poses differ from the logged ones (another machine or code version?)",
                  file=sys.stderr)
    else:
        kw = args.env_kwargs()
        if args.compare_oracle and kw["backend"] != "model":
            raise SystemExit("--compare-oracle compares the model backend with the oracle: add --backend model")
        env = make_env(**kw)
        k = env.unwrapped.frames_per_step
        fps = VIDEO_FPS
        opts = _reset_options(args, env.unwrapped.config.size)
        frames, poses, summary = _frames_of(env, args, source, opts)
        env.close()
        summary = {"source": source, "env_kwargs": kw, "seed": args.seed, "frames": len(frames), **summary}
        if args.compare_oracle:
            summary["compare_oracle"] = _compare(args, kw, k, source, summary, frames, out, fps)
        summary.pop("resolved_poses", None)
        actions = summary.pop("actions", None)
        if actions is not None:
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"{args.name}_actions.npy", actions)
    paths = write_media(out, args.name, frames, fps=fps)
    np.save(out / f"{args.name}_poses.npy", np.asarray(poses, np.float32))
    if args.frames_npy:
        np.save(out / f"{args.name}_frames.npy", frames)
    summary.update(paths)
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    print(f"{len(frames)} frames -> {paths['video']}, {paths['sheet']}, {out / (args.name + '_poses.npy')}")
    return summary


def _compare(args: RolloutArgs, kw: dict, k: int, source: str, summary: dict, frames: np.ndarray, out: Path,
             fps: int) -> dict[str, Any]:
    """The oracle along the same actions / poses (same seed: same scene and start), side by side with `frames`,
    and per-frame PSNR."""
    okw = {key: v for key, v in kw.items() if key != "model"}
    # the model's frame size and chunk, rendered as its training clips were (and so as its start frames are)
    from model.generator import StreamingGenerator  # only the model backend gets here

    render = StreamingGenerator.render_of(kw["model"])
    okw.update(backend="oracle", size=tuple(frames.shape[1:3]), frames_per_step=k,
               supersample=int(render.get("supersample", okw.get("supersample", 1))))
    env = make_env(**okw)
    opts = _reset_options(args, env.unwrapped.config.size)
    opts.pop("start_image", None)  # the oracle renders its first frame from the scene
    oracle, _, _ = _frames_of(env, args, source, opts, trajectory_poses=summary.get("resolved_poses"))
    env.close()
    n = min(len(oracle), len(frames))
    p = psnr(frames[:n], oracle[:n])
    side = np.concatenate([frames[:n], oracle[:n]], axis=2)
    media = write_media(out, f"{args.name}_vs_oracle", side, fps=fps, sheet=True)
    finite = p[np.isfinite(p)]
    print(f"model vs oracle: mean PSNR {finite.mean() if len(finite) else float('inf'):.2f} dB over {n} frames "
          f"(first {p[0]:.2f}, last {p[n - 1]:.2f}) -> {media['video']}")
    return {"psnr": [float(x) if np.isfinite(x) else None for x in p],  # None: identical frames
            "mean_psnr": float(finite.mean()) if len(finite) else None,
            **{f"side_by_side_{k}": v for k, v in media.items()}}


def _json_default(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


def build_parser(parser=None):
    parser = parser or make_parser("sanawm rollout", __doc__, 'sanawm rollout --keys "w-16,a-8,wd-8" --out '
                                                              "runs/rollout")
    add_dataclass_args(parser, RolloutArgs)
    return parser


def main(argv=None) -> dict[str, Any]:
    return run(from_namespace(RolloutArgs, build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()


__all__ = ["EpisodeResult", "RolloutArgs", "anchor_trajectory", "evaluate", "psnr",
           "resolve_trajectory", "run", "run_episode"]
