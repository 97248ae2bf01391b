"""SanaWMEnv: the Gymnasium environment around a streaming world (the oracle's procedural worlds, or the model).

- One implementation steps N worlds together (`WorldBatch`); the single env is that machinery with N = 1 and
  `SanaWMVectorEnv` (vector.py) the same with N worlds in one backend batch, so stepping is written once.
- One step: validate the action (nothing changes if it is refused), scale it, apply it in the camera frame, clamp the
  pitch, resolve the translation against the scene with `SceneGeometry.move` (never through walls), interpolate K
  poses from the current pose to the resolved one, hand them to the backend for K frames, then let the task score
  the new pose against the episode's scene.
- Everything random comes from the seed given to reset (each world has its own `np.random.Generator`): the same
  seed and actions give bit-identical observations on CPU. Generated scenes and their geometry are cached
  (`SceneCache`): a pure function of (family, seed), so the cache changes speed, never results.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from .actions import (
    ActionConfig,
    action_space,
    check_actions,
    interpolate_poses,
    keys_to_action,
    pitch_of,
    target_poses,
)
from .backends import make_backend
from .scenes import FAMILIES, Scene, SceneGeometry, check_c2w, intrinsics_from_fov, make_scene
from .tasks import TASKS, Episode, GoalViews, Measurements, StepData, Task, TaskConfig, make_task

VIDEO_FPS = 16  # raw frames per second of the worlds' video; an env step covers frames_per_step of them


@dataclass
class EnvConfig:
    task: str = "freeroam"                    # "freeroam", "pointnav", "imagenav", "explore"
    backend: str = "oracle"                   # "oracle" or "model"
    model: str = "tiny"                       # model backend: preset name or checkpoint path
    model_timesteps: Sequence[int] | None = None  # model backend: denoising schedule, e.g. (1000, 0) for one pass
    scene: str | Scene = "indoor"             # "indoor", "outdoor", "mixed" (family drawn per episode) or a Scene
    size: int | tuple[int, int] = 128         # frame size: int (square) or (height, width)
    device: str = "cpu"
    fov: float = 90.0                         # horizontal field of view (degrees) of the default intrinsics
    frames_per_step: int = 4                  # K raw frames per step (oracle; the model's chunk fixes it)
    max_translation: float = 0.25             # metres per step at |action| = 1
    max_rotation: float = math.radians(10.0)  # radians per step at |action| = 1
    pitch_limit: float = math.radians(60.0)   # radians; the pitch is clamped to +- this
    max_episode_steps: int | None = None      # truncate after this many steps (None: no limit; see TimeLimit)
    clip_actions: bool = True                 # clip out-of-range actions (info["clipped"]) instead of raising
    scene_seeds: int | Sequence[int] | None = None  # scene seeds to draw from: None any, n -> range(n), or a list
    compile: bool = False                     # torch.compile: the oracle's ray caster and the model's step (CPU) or
                                              # its fused kernels (CUDA, inside the step's CUDA graph)
    supersample: int = 1                      # oracle: 1 or 2 (anti-aliasing)

    def __post_init__(self):
        if isinstance(self.size, (int, np.integer)):
            self.size = (int(self.size), int(self.size))
        self.size = tuple(int(s) for s in self.size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be an int or (height, width) of positive ints, got {self.size}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if not isinstance(self.scene, Scene) and self.scene not in (*FAMILIES, "mixed"):
            raise ValueError(f"scene must be one of {[*sorted(FAMILIES), 'mixed']} or a Scene, got {self.scene!r}")
        if not (0.0 < self.fov < 180.0):
            raise ValueError(f"fov must be in (0, 180) degrees, got {self.fov}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive int or None, got {self.max_episode_steps}")
        if isinstance(self.scene_seeds, (int, np.integer)):
            if self.scene_seeds < 1:
                raise ValueError(f"scene_seeds as an int is a pool size and must be >= 1, got {self.scene_seeds}")
            self.scene_seeds = tuple(range(int(self.scene_seeds)))
        elif self.scene_seeds is not None:
            self.scene_seeds = tuple(int(s) for s in self.scene_seeds)
            if not self.scene_seeds:
                raise ValueError("scene_seeds must not be empty")
        if self.model_timesteps is not None:   # checked by the generator (falls strictly from <= 1000 to 0)
            self.model_timesteps = tuple(int(t) for t in self.model_timesteps)

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split constructor kwargs into EnvConfig fields and task options (TaskConfig fields); unknown names raise."""
    env_names = {f.name for f in fields(EnvConfig)}
    task_names = {f.name for f in fields(TaskConfig)}
    unknown = [k for k in kwargs if k not in env_names | task_names]
    if unknown:
        raise TypeError(f"unknown SanaWM env argument(s) {unknown}; env arguments: {sorted(env_names)}, task "
                        f"options: {sorted(task_names)}")
    return ({k: v for k, v in kwargs.items() if k in env_names}, {k: v for k, v in kwargs.items() if k in task_names})


class SceneCache:
    """LRU of generated scenes and their SceneGeometry, keyed by (family, seed).

    Both are pure functions of the key and never change after construction, so sharing them between worlds and
    envs is safe; generating one costs 0.1-2 s. `SCENES` is the process-wide instance the envs use.
    """

    def __init__(self, max_size: int = 16):
        self.max_size = max_size
        self._items: OrderedDict[tuple, tuple[Scene, SceneGeometry]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, family: str, seed: int) -> tuple[Scene, SceneGeometry]:
        key = (family, int(seed))
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        scene = make_scene(family, int(seed))
        item = (scene, SceneGeometry(scene))
        self._items[key] = item
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)
        return item

    def geometry_of(self, scene: Scene) -> SceneGeometry:
        """Geometry of a user-given Scene object (cached by identity)."""
        key = ("object", id(scene))
        hit = self._items.get(key)
        if hit is not None and hit[0] is scene:
            self._items.move_to_end(key)
            return hit[1]
        item = (scene, SceneGeometry(scene))
        self._items[key] = item
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)
        return item[1]

    def clear(self) -> None:
        self._items.clear()


SCENES = SceneCache()


@dataclass
class WorldSnapshot:
    """Everything that makes one world what it is now (see `WorldBatch.get_state`)."""

    backend: Any
    episode: Episode
    pose: np.ndarray          # (4, 4) float64
    intrinsics: np.ndarray    # (4,) float32
    steps: int
    done: bool
    measures: dict
    values: dict[str, float]
    obs: dict[str, np.ndarray]


class WorldBatch:
    """N worlds stepped together: the one implementation behind SanaWMEnv (N = 1) and SanaWMVectorEnv.

    Holds, per world, the episode (Scene, SceneGeometry, start, goal), the pose (float64), the measures and the
    last observation; the backend holds the frames. Arrays come back batched over the N worlds.
    """

    def __init__(self, cfg: EnvConfig, num_worlds: int, task: Task):
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        self.cfg, self.n, self.task = cfg, num_worlds, task
        self.action_cfg = ActionConfig(cfg.max_translation, cfg.max_rotation, cfg.pitch_limit, cfg.clip_actions)
        self._scale = self.action_cfg.scale
        h, w = cfg.height, cfg.width
        self.backend = make_backend(cfg.backend, num_worlds=num_worlds, height=h, width=w,
                                    frames_per_step=cfg.frames_per_step, device=cfg.device, model=cfg.model,
                                    compile=cfg.compile, supersample=cfg.supersample,
                                    denoise_timesteps=cfg.model_timesteps)
        self.k = self.backend.frames_per_step
        self.views = GoalViews(h, w, cfg.supersample, cfg.compile, cfg.device) if task.needs_views else None
        self.default_intrinsics = intrinsics_from_fov(w, h, cfg.fov).numpy()  # (4,)
        self.obs_spaces = {"rgb": spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8),
                           **task.observation_spaces(h, w)}
        self.pose = np.tile(np.eye(4), (num_worlds, 1, 1))                   # (N, 4, 4) float64
        self.intrinsics = np.tile(self.default_intrinsics, (num_worlds, 1))  # (N, 4) float32
        self.episodes: list[Episode | None] = [None] * num_worlds
        self.measures = [Measurements(task.measures, task.cfg) for _ in range(num_worlds)]
        self.values: list[dict[str, float]] = [{} for _ in range(num_worlds)]
        self.steps = np.zeros(num_worlds, dtype=np.int64)
        self.done = np.zeros(num_worlds, dtype=bool)
        self.stop = np.zeros(num_worlds, dtype=bool)
        self.obs = {key: np.zeros((num_worlds, *sp.shape), sp.dtype) for key, sp in self.obs_spaces.items()}

    @property
    def started(self) -> np.ndarray:
        """(N,) bool: worlds that have been reset at least once."""
        return np.array([e is not None for e in self.episodes])

    # ------------------------------------------------------------------ reset
    def reset(self, index: Sequence[int], rngs: Sequence[np.random.Generator],
              options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Start new episodes in worlds `index`, each drawing from its own generator. Returns one info dict per
        reset world; the new observations are in `self.obs`. Options are validated before any world changes."""
        opts = self._check_options(options)
        index = [int(i) for i in index]
        saved = [rng.bit_generator.state for rng in rngs]
        try:
            plans = []
            for i, rng in zip(index, rngs):
                scene, geom = self._scene(rng, opts.get("scene_seed"))
                start = opts.get("start_pose")
                if start is not None:
                    self._check_start(start, geom, scene)
                k = opts.get("intrinsics", self.default_intrinsics)
                ep = self.task.new_episode(scene, geom, rng, start=start, goal=opts.get("goal"), views=self.views,
                                           intrinsics=k)
                plans.append((i, ep, k, int(rng.integers(2**31 - 1))))  # the last: the backend's seed
            images = opts.get("start_image")
            if images is not None:
                images = np.repeat(images[None], len(index), axis=0)
            frames = self.backend.reset(np.array(index), [p[1].scene for p in plans],
                                        np.stack([p[1].start for p in plans]), np.stack([p[2] for p in plans]),
                                        images, seeds=np.array([p[3] for p in plans], dtype=np.int64))  # (M, H, W, 3)
        except Exception:
            for rng, state in zip(rngs, saved):  # a refused reset leaves the generators where they were
                rng.bit_generator.state = state
            raise
        infos = []
        self.obs = {key: v.copy() for key, v in self.obs.items()}  # arrays handed out before stay untouched
        for (i, ep, k, _), frame in zip(plans, frames):
            self.episodes[i] = ep
            self.pose[i] = ep.start
            self.intrinsics[i] = k
            self.steps[i] = 0
            self.done[i] = False
            self.stop[i] = False
            start = StepData(pose=ep.start, prev_pose=ep.start, poses=ep.start[None], intrinsics=self.intrinsics[i],
                             size=self.cfg.size, collided=False, stop=False)
            self.values[i] = self.measures[i].reset(ep, start)
            self.obs["rgb"][i] = frame
            for key, v in self.task.observe(ep, ep.start).items():
                self.obs[key][i] = v
            infos.append({"pose": ep.start.astype(np.float32), "scene_family": ep.scene.family,
                          "scene_seed": int(ep.scene.seed), **self.values[i]})
        return infos

    def _scene(self, rng: np.random.Generator, seed: int | None) -> tuple[Scene, SceneGeometry]:
        cfg = self.cfg
        if isinstance(cfg.scene, Scene):
            return cfg.scene, SCENES.geometry_of(cfg.scene)
        family = cfg.scene
        if family == "mixed":
            family = ("indoor", "outdoor")[int(rng.integers(2))]
        if seed is None:
            seed = (int(rng.integers(2**31 - 1)) if cfg.scene_seeds is None
                    else cfg.scene_seeds[int(rng.integers(len(cfg.scene_seeds)))])
        return SCENES.get(family, seed)

    def _check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Validate reset options; returns them converted (ValueError names the bad one)."""
        if options is None:
            return {}
        if not isinstance(options, dict):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        known = ("scene_seed", "start_pose", "goal", "start_image", "intrinsics")
        unknown = [k for k in options if k not in known]
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; expected some of {list(known)}")
        out = {}
        if options.get("scene_seed") is not None:
            s = options["scene_seed"]
            if isinstance(self.cfg.scene, Scene):
                raise ValueError("options['scene_seed'] has no effect: the env was made with a fixed Scene object")
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0:
                raise ValueError(f"options['scene_seed'] must be a non-negative int, got {s!r}")
            out["scene_seed"] = int(s)
        if options.get("start_pose") is not None:
            p = np.asarray(options["start_pose"], dtype=np.float64)
            if p.shape != (4, 4):
                raise ValueError(f"options['start_pose'] must be a (4, 4) camera-to-world matrix, got shape {p.shape}")
            check_c2w(p, "options['start_pose']")
            out["start_pose"] = p.copy()
        if options.get("goal") is not None:
            if not self.task.has_goal:
                raise ValueError(f"task {self.task.name!r} has no goal; options['goal'] is for PointNav and ImageNav")
            g = np.asarray(options["goal"], dtype=np.float64)
            if g.shape == (4, 4):
                check_c2w(g, "options['goal']")
            elif g.shape != (3,) or not np.isfinite(g).all():
                raise ValueError(f"options['goal'] must be a finite (x, y, z) position in metres or a (4, 4) goal "
                                 f"camera pose, got {g.tolist()}")
            out["goal"] = g
        if options.get("intrinsics") is not None:
            k = np.asarray(options["intrinsics"], dtype=np.float32)
            if k.shape != (4,) or not np.isfinite(k).all() or (k[:2] <= 0).any():
                raise ValueError(f"options['intrinsics'] must be finite (fx, fy, cx, cy) pixels with fx, fy > 0, got "
                                 f"{k.tolist()}")
            out["intrinsics"] = k
        if options.get("start_image") is not None:
            img = np.asarray(options["start_image"])
            want = (self.cfg.height, self.cfg.width, 3)
            if img.shape != want or img.dtype != np.uint8:
                raise ValueError(f"options['start_image'] must be a uint8 RGB image of shape {want}, got "
                                 f"{img.dtype} {img.shape}")
            out["start_image"] = img
        return out

    def _check_start(self, c2w: np.ndarray, geom: SceneGeometry, scene: Scene) -> None:
        pitch = float(pitch_of(c2w))
        if abs(pitch) > self.action_cfg.pitch_limit + 1e-9:
            raise ValueError(f"options['start_pose'] pitch {math.degrees(pitch):.1f} deg exceeds the pitch limit "
                             f"+-{math.degrees(self.action_cfg.pitch_limit):.1f} deg")
        if not geom.is_free(c2w[:3, 3]):
            raise ValueError(f"options['start_pose'] position {np.round(c2w[:3, 3], 3).tolist()} is not free in "
                             f"{scene.family} scene {scene.seed}: the agent's body would touch the scene or leave "
                             f"the walkable height range (camera y around -{scene.eye_height} m)")

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray, clipped: np.ndarray,
             hold: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance every world by one step.

        actions: (N, 6) float64 validated (see `check_actions`); clipped: (N,) bool, reported in info; hold: (N,)
        bool worlds whose action is ignored (they stay put; the vector env resets them right after). Returns
        (reward (N,), terminated (N,), truncated (N,), info dict of (N, ...) arrays); observations are in self.obs.
        """
        t0 = time.perf_counter()
        n = self.n
        delta = actions * self._scale  # (N, 6) metres, radians
        still = self.stop if hold is None else self.stop | hold
        if still.any():
            delta[still] = 0.0
        target, _ = target_poses(self.pose, delta, self.action_cfg.pitch_limit)  # (N, 4, 4)
        resolved = np.empty_like(target)
        collided = np.zeros(n, dtype=bool)
        for i in range(n):
            if delta[i, :3].any():
                resolved[i], collided[i] = self.episodes[i].geometry.move(self.pose[i], target[i])
            else:  # a pure rotation cannot collide
                resolved[i] = target[i]
        poses = interpolate_poses(self.pose, resolved, self.k)  # (N, K, 4, 4)
        tb = time.perf_counter()
        frames = self.backend.step(poses)  # (N, K, H, W, 3)
        backend_ms = (time.perf_counter() - tb) * 1e3
        reward, terminated, measures, extra = self._score(self.pose, resolved, poses, collided, self.stop)
        self.pose = resolved
        self.steps += 1
        obs = {"rgb": frames[:, -1]}
        obs.update(extra)
        self.obs = obs
        truncated = (self.steps >= self.cfg.max_episode_steps) if self.cfg.max_episode_steps else np.zeros(n, bool)
        truncated &= ~terminated
        self.done = terminated | truncated
        self.stop[:] = False
        info = {"pose": resolved.astype(np.float32), "poses": poses.astype(np.float32), "frames": frames,
                "collided": collided, "clipped": clipped, **measures,
                "backend_ms": np.full(n, backend_ms)}
        info["step_ms"] = np.full(n, (time.perf_counter() - t0) * 1e3)
        return reward, terminated, truncated, info

    def _score(self, prev: np.ndarray, resolved: np.ndarray, poses: np.ndarray, collided: np.ndarray,
               stop: np.ndarray):
        """Measures, reward, termination and task observations of every world after a move (not the frames)."""
        n = self.n
        reward = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        extra = {key: np.empty_like(v) for key, v in self.obs.items() if key != "rgb"}
        uuids = self.measures[0].order
        measures = {u: np.zeros(n) for u in uuids}
        for i in range(n):
            ep = self.episodes[i]
            sd = StepData(pose=resolved[i], prev_pose=prev[i], poses=poses[i], intrinsics=self.intrinsics[i],
                          size=self.cfg.size, collided=bool(collided[i]), stop=bool(stop[i]))
            before, after = self.values[i], self.measures[i].update(ep, sd)
            self.values[i] = after
            reward[i] = self.task.reward(before, after, sd)
            terminated[i] = self.task.terminated(after, sd)
            for u in uuids:
                measures[u][i] = after[u]
            for key, v in self.task.observe(ep, resolved[i]).items():
                extra[key][i] = v
        return reward, terminated, measures, extra

    # ------------------------------------------------------------------ snapshots
    def get_state(self, i: int) -> WorldSnapshot:
        """Snapshot world i: restoring it later (into any world of a compatible env) replays identically."""
        if self.episodes[i] is None:
            raise ResetNeeded(f"world {i} was never reset; nothing to snapshot")
        return WorldSnapshot(backend=self.backend.get_state(i), episode=self.episodes[i], pose=self.pose[i].copy(),
                             intrinsics=self.intrinsics[i].copy(), steps=int(self.steps[i]), done=bool(self.done[i]),
                             measures=self.measures[i].get_state(), values=dict(self.values[i]),
                             obs={k: v[i].copy() for k, v in self.obs.items()})

    def set_state(self, i: int, snap: WorldSnapshot) -> None:
        if not isinstance(snap, WorldSnapshot):
            raise TypeError(f"state must come from get_state (a WorldSnapshot), got {type(snap).__name__}")
        if set(snap.obs) != set(self.obs) or any(snap.obs[k].shape != self.obs[k].shape[1:] for k in self.obs):
            raise ValueError(f"state has observations {({k: v.shape for k, v in snap.obs.items()})}, this env "
                             f"expects {({k: v.shape[1:] for k, v in self.obs.items()})}")
        if tuple(snap.measures) != self.measures[i].order:
            raise ValueError(f"state has measures {list(snap.measures)}, this env's task ({self.task.name}) has "
                             f"{list(self.measures[i].order)}")
        self.backend.set_state(i, snap.backend)  # validates its own part before changing anything
        self.episodes[i] = snap.episode
        self.pose = self.pose.copy()
        self.pose[i] = snap.pose
        self.intrinsics[i] = snap.intrinsics
        self.steps[i] = snap.steps
        self.done[i] = snap.done
        self.stop[i] = False
        self.measures[i].set_state(snap.measures)
        self.values[i] = dict(snap.values)
        self.obs = {k: v.copy() for k, v in self.obs.items()}
        for k, v in snap.obs.items():
            self.obs[k][i] = v

    def close(self) -> None:
        self.backend.close()


class WorldsView:
    """What the single and the vector env both read from their WorldBatch (`self._worlds`)."""

    _worlds: WorldBatch

    @property
    def frames_per_step(self) -> int:
        """K, the raw frames of one step."""
        return self._worlds.k

    @property
    def backend(self):
        return self._worlds.backend


class SanaWMEnv(WorldsView, gym.Env):
    """A camera moving through a streaming world: 6-DoF pose actions in, generated (or ray-cast) frames out.

    ## Description

    The agent is a camera on a body (a vertical cylinder) in a metric 3-D world: a procedural indoor or outdoor
    scene. Each step moves the camera by a 6-DoF delta in its own frame and returns the K raw video frames of that
    motion. With backend="oracle" the frames are ray-cast from the scene (ground truth); with backend="model" (not
    yet available) a streaming video world model generates them. Either way the scene's geometry resolves
    collisions and scores the task, so the agent cannot walk through walls and the measures are exact.

    ## Action Space

    `Box(-1, 1, (6,), float32)`: `(dx, dy, dz, dpitch, dyaw, droll)` in the camera frame (x right, y down, z
    forward). Positive dz walks forward, positive dy moves down, positive dyaw turns right, positive dpitch looks
    up, positive droll tilts the right side down. Translation is scaled by `max_translation` (0.25 m) and rotation by
    `max_rotation` (10 deg) per step; the pitch stays within +-`pitch_limit` (60 deg). Out-of-range values are
    clipped (`clip_actions=True`, reported as info["clipped"]) or refused; NaN, Inf and wrong shapes raise
    ValueError and change nothing. `DiscreteNavActions` (actions.py) gives habitat's discrete set.

    ## Observation Space

    A flat Dict:

    | key | space | tasks |
    |---|---|---|
    | rgb | Box(0, 255, (H, W, 3), uint8), the last of the step's K frames | all |
    | pointgoal | Box([0, -pi], [1000, pi], (2,), float32): floor distance (m), angle (rad, + = right) | PointNav |
    | goal_rgb | Box(0, 255, (H, W, 3), uint8), the oracle's view from the goal | ImageNav |

    ## Rewards

    FreeRoam: 0. PointNav / ImageNav (habitat): -0.01 per step + the decrease of the geodesic distance to the goal
    + 2.5 on success. Explore: the floor area (m^2) seen for the first time this step.

    ## Starting State

    The scene comes from a seed drawn from the reset seed (or `options["scene_seed"]`); the start pose (level,
    random heading, free floor at eye height) and the goal (geodesic distance >= `min_geodesic`, 1 m) from
    `SceneGeometry.sample_start_goal`. Options: `scene_seed`, `start_pose` (4x4 c2w), `goal` ((x, y, z), y
    ignored, or a 4x4 pose: ImageNav's goal view), `intrinsics` (fx, fy, cx, cy), `start_image` (H, W, 3 uint8;
    model backend only).

    ## Episode End

    Termination: PointNav / ImageNav on success (within `success_radius`, 0.2 m, after a step or on stop,
    `success_on`); any task when the agent calls stop (`request_stop()`, the discrete wrapper's action 0).
    Truncation: after `max_episode_steps` steps (registered ids: 500, through gymnasium's TimeLimit).

    ## Info

    `pose` (4, 4) float32 c2w after the step, `poses` (K, 4, 4), `frames` (K, H, W, 3) uint8, `collided`,
    `clipped`, `step_ms`, `backend_ms`, and the task's measures (`collisions`, `path_length`, `distance_to_goal`,
    `success`, `spl`, `soft_spl`, `coverage`). Reset infos carry `pose`, `scene_family`, `scene_seed` and the
    measures.

    ## Arguments

    `gymnasium.make("SanaWM/PointNav-v0", size=64, scene="indoor")` or `SanaWMEnv(task="pointnav", ...)`: every
    field of `EnvConfig` (backend, model, scene, size, device, fov, frames_per_step, max_translation, max_rotation,
    pitch_limit, max_episode_steps, clip_actions, scene_seeds, compile, supersample) and of `TaskConfig` that the
    task uses (success_radius, success_on, end_on_success, slack_reward, success_reward, min_geodesic,
    max_geodesic, visibility_dist, coverage_resolution).

    ## Version History

    - v0: initial release (oracle backend).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": VIDEO_FPS // 4}

    def __init__(self, task: str = "freeroam", render_mode: str | None = None, **kwargs):
        env_kw, task_kw = split_kwargs(kwargs)
        self.config = EnvConfig(task=task, **env_kw)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got "
                             f"{render_mode!r}")
        self.render_mode = render_mode
        self.task = make_task(task, **task_kw)
        self._worlds = WorldBatch(self.config, 1, self.task)
        k = self._worlds.k
        self.metadata = {**type(self).metadata, "render_fps": max(1, round(VIDEO_FPS / k))}
        self.action_config = self._worlds.action_cfg
        self.action_space = action_space()
        self.observation_space = spaces.Dict(self._worlds.obs_spaces)
        self._viewer = None
        self._reset_done = False
        self._closed = False

    def step(self, action):
        """Move the camera by one action; returns (obs, reward, terminated, truncated, info)."""
        self._check_usable()
        if not self._reset_done:
            raise ResetNeeded("Cannot call step() before reset(): call env.reset(seed=...) first")
        if isinstance(action, (int, np.integer)) and not isinstance(action, bool) and action == 0:
            action = np.zeros(6, dtype=np.float32)  # gymnasium.utils.play sends 0 when no key is held
        try:
            a = np.asarray(action)
        except Exception:  # ragged nests and the like
            a = None
        if a is None or a.shape != (6,):
            got = type(action).__name__ if a is None else a.shape
            raise ValueError(f"action must have shape (6,) (dx, dy, dz, dpitch, dyaw, droll), got {got}")
        a, clipped = check_actions(a[None], 1, self.config.clip_actions)
        if self._worlds.done[0]:
            raise ResetNeeded("the episode is over (terminated or truncated); call reset() before step()")
        reward, terminated, truncated, info = self._worlds.step(a, clipped)
        obs = {k: v[0] for k, v in self._worlds.obs.items()}
        info = _single_info(info)
        if self.render_mode == "human":
            self.render()
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new episode; the scene, start and goal come from `seed` (see Starting State for `options`)."""
        self._check_usable()
        previous = self._np_random, self._np_random_seed
        super().reset(seed=seed)
        try:
            info = self._worlds.reset([0], [self.np_random], options)[0]
        except Exception:
            self._np_random, self._np_random_seed = previous  # a refused reset changes nothing
            raise
        self._reset_done = True
        obs = {k: v[0].copy() for k, v in self._worlds.obs.items()}
        if self.render_mode == "human":
            self.render()
        return obs, info

    def request_stop(self) -> None:
        """Make the next step a stop: the agent stays put, the episode ends (terminated) and the task judges
        success there (habitat's STOP). `DiscreteNavActions` calls it for action 0."""
        self._check_usable()
        if not self._reset_done:
            raise ResetNeeded("Cannot call request_stop() before reset()")
        self._worlds.stop[0] = True

    def get_state(self):
        """Snapshot the world (scene, pose, frames, measures) for `set_state`, so planners can branch."""
        self._check_usable()
        if not self._reset_done:
            raise ResetNeeded("Cannot call get_state() before reset()")
        return self._worlds.get_state(0)

    def set_state(self, state) -> None:
        """Restore a snapshot from `get_state` (of this env or another one made with the same arguments)."""
        self._check_usable()
        self._worlds.set_state(0, state)
        self._reset_done = True

    def get_keys_to_action(self) -> dict[tuple[int, ...], np.ndarray]:
        """The keyboard map for `gymnasium.utils.play.play(env)`: WASD translate, arrows yaw/pitch, Space/C up/down,
        Q/E roll (actions.KEYBOARD)."""
        return keys_to_action()

    def render(self):
        """"rgb_array": the last frame (H, W, 3) uint8. "human": show it in a pygame window (returns None)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with render_mode='rgb_array' or "
                            "'human'")
            return None
        frame = self._worlds.obs["rgb"][0]
        if self.render_mode == "rgb_array":
            return frame.copy()
        from .viewer import Viewer

        if self._viewer is None:
            self._viewer = Viewer(title=f"sanawm {self.config.task}")
        self._viewer.show(frame, hud=self._hud())
        return None

    def _hud(self) -> list[str]:
        w = self._worlds
        p = w.pose[0, :3, 3]
        lines = [f"step {int(w.steps[0])}  pos ({p[0]:.2f}, {-p[1]:.2f}, {p[2]:.2f}) m"]
        lines += [f"{k} {v:.2f}" for k, v in w.values[0].items()]
        return lines

    def close(self):
        """Release the backend and the window; safe to call more than once."""
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None
        if not self._closed:
            self._worlds.close()
            self._closed = True

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("this env was closed; make a new one")


class WallClockMs(float):
    """A wall-clock duration in milliseconds (info["step_ms"], info["backend_ms"]).

    It is a float in every way but one: two WallClockMs values compare equal to each other. Timings are measurements
    of the machine, not state of the world, so Gymnasium's seeded-determinism check (`check_env` compares the infos
    of two identical rollouts) judges the world and not the clock. Against plain numbers it compares as a float.
    """

    def __eq__(self, other):
        return True if isinstance(other, WallClockMs) else float.__eq__(self, other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = float.__hash__


_TIMINGS = ("step_ms", "backend_ms")


def _single_info(info: dict[str, np.ndarray]) -> dict[str, Any]:
    """World 0 of a batched info dict, scalars as Python types (timings as WallClockMs)."""
    out = {}
    for k, v in info.items():
        x = v[0]
        if k in _TIMINGS:
            out[k] = WallClockMs(x)
        elif isinstance(x, np.bool_):
            out[k] = bool(x)
        elif isinstance(x, np.floating):
            out[k] = float(x)
        elif isinstance(x, np.integer):
            out[k] = int(x)
        else:
            out[k] = x
    return out
