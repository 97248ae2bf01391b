"""Scripted agents: random, goal-seeker (the SPL upper bound), action replay and trajectory following.

Every agent has the same two methods, so `agents.rollout.run_episode` / `evaluate` run any of them (and the PPO
agent of agents/ppo.py) on any SanaWM env, oracle or model backend:

    agent.reset(env, obs, info)   # at the start of each episode
    action = agent.act(obs, info) # then once per step; env.step(action)

    env = SanaWMEnv(task="pointnav", size=64)
    print(evaluate(env, GoalSeeker(), episodes=5))     # success 1.0, SPL ~0.9
    print(evaluate(env, RandomAgent(seed=0), episodes=5))

- `RandomAgent` samples the env's action space, or a `NavActionSet` (to compare with a discrete policy).
- `GoalSeeker` plans the geodesic path on the episode's true floor plan (`SceneGeometry.shortest_path`, read from
  the env's public `get_state()` snapshot at reset) with extra clearance around corners, and walks it: it turns
  toward the next waypoint and steps straight at it, never further than the waypoint, then calls stop
  (`request_stop`) inside the success radius. It ignores the frames, so its numbers are the same on every backend:
  the upper bound for SPL. With `discrete=True` it uses a NavActionSet (forward / left / right / stop) instead.
- `ActionReplay` replays a (T, 6) action array (from a file or a key string; see common.key_string_actions).
- `TrajectoryFollower` drives toward camera-to-world poses, one target per step: the action is the exact local
  delta (inverse of the env's action integration) from the current pose, so in free space and within the action
  limits the env reproduces every step-end pose.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from sanawm_env.actions import so3_log
from sanawm_env.scenes import SceneGeometry

from .common import NavActionSet, episode_of, wrap_angle


class Agent:
    """The agent protocol (see the module docstring); `name` labels its rows in evaluation tables."""

    name = "agent"

    def reset(self, env, obs, info) -> None:
        self.env = env

    def act(self, obs, info):
        raise NotImplementedError


class RandomAgent(Agent):
    """Uniformly random actions: the env's action space, or one of `actions` (a NavActionSet) per step."""

    name = "random"

    def __init__(self, seed: int | None = None, actions: NavActionSet | None = None):
        self.rng = np.random.default_rng(seed)
        self.actions = actions

    def act(self, obs, info):
        if self.actions is not None:
            return self.actions.continuous(self.env, self.rng.integers(self.actions.n))
        space = self.env.action_space
        if hasattr(space, "n"):
            return int(self.rng.integers(space.n))
        return self.rng.uniform(space.low, space.high).astype(space.dtype)


_PLANNERS: dict[tuple[int, float], tuple[object, SceneGeometry]] = {}  # (id(scene), clearance) -> (scene, geometry)


def _clearance_geometry(geometry: SceneGeometry, clearance: float) -> SceneGeometry:
    """A planning geometry with a wider body (`clearance` metres), so paths round corners with room to spare;
    the same vertical extent as the agent's. Falls back to the agent's geometry if the wider body cannot stand."""
    key = (id(geometry.scene), clearance)
    hit = _PLANNERS.get(key)
    if hit is not None and hit[0] is geometry.scene:
        return hit[1]
    c = geometry.cfg
    try:
        plan = SceneGeometry(geometry.scene, replace(c, radius=clearance,
                                                     body_height=max(0.0, c.body_height + c.radius - clearance)))
    except ValueError:
        plan = geometry
    _PLANNERS[key] = (geometry.scene, plan)
    while len(_PLANNERS) > 16:
        _PLANNERS.pop(next(iter(_PLANNERS)))
    return plan


class GoalSeeker(Agent):
    """Follows the geodesic path to the goal of a PointNav / ImageNav episode, then stops (see module docstring).

    Args:
        clearance: metres kept from obstacles when planning (the body radius is 0.18 m); 0 plans with the body.
        stop_radius: call stop this close to the goal, as a fraction of the task's success radius.
        discrete: use `NavActionSet(("stop", "forward", "left", "right"))` instead of continuous actions.
    """

    name = "goal_seeker"

    def __init__(self, clearance: float = 0.3, stop_radius: float = 0.5, discrete: bool = False):
        self.clearance = clearance
        self.stop_radius = stop_radius
        self.discrete = NavActionSet(("stop", "forward", "left", "right")) if discrete else None

    def reset(self, env, obs, info) -> None:
        super().reset(env, obs, info)
        ep = episode_of(env)
        if ep.goal is None:
            raise ValueError(f"GoalSeeker needs a task with a goal (pointnav, imagenav), got {env.unwrapped.task.name}")
        self.goal = np.asarray(ep.goal, dtype=np.float64)
        self.geometry = ep.geometry
        # Plan with room to spare first (discrete steps drift off the line by up to sin(turn / 2) of a step, so
        # they get more), then with less where a passage is too narrow for it, then with the body itself.
        wide = (0.45, self.clearance) if self.discrete is not None else (self.clearance,)
        self.plans = [_clearance_geometry(ep.geometry, c) for c in wide if c > ep.geometry.cfg.radius]
        self.plans.append(ep.geometry)
        base = env.unwrapped
        self.max_t = base.action_config.max_translation
        self.max_r = base.action_config.max_rotation
        self.success_radius = base.task.cfg.success_radius

    def waypoint(self, pos: np.ndarray, reach: float = 0.01) -> np.ndarray:
        """The next point (x, z) to walk to from `pos` (3,): the first path vertex more than `reach` metres away."""
        xz, goal = pos[[0, 2]], self.goal[[0, 2]]
        for plan in self.plans:
            path = plan.shortest_path(xz, goal)
            if len(path):
                break
        else:
            return goal
        path = np.concatenate([path, goal[None]])  # planning snaps the goal out of the wider obstacles
        for p in path[1:]:
            if np.hypot(*(p - xz)) > reach:
                return p
        return goal

    def act(self, obs, info):
        c2w = np.asarray(info["pose"], dtype=np.float64)
        pos = c2w[:3, 3]
        # Discrete steps cannot land anywhere: stop anywhere inside the radius, and pass vertices within reach.
        stop = 0.95 if self.discrete is not None else self.stop_radius
        if np.hypot(*(pos[[0, 2]] - self.goal[[0, 2]])) < stop * self.success_radius:
            return self._stop()
        wp = self.waypoint(pos, reach=0.1 if self.discrete is not None else 0.01)
        d = wp - pos[[0, 2]]
        yaw = math.atan2(c2w[0, 2], c2w[2, 2])
        err = wrap_angle(math.atan2(d[0], d[1]) - yaw)
        if self.discrete is not None:
            return self._discrete(err, float(np.hypot(*d)))
        action = np.zeros(6, dtype=np.float64)
        action[4] = np.clip(err / self.max_r, -1.0, 1.0)                   # yaw toward the waypoint
        pitch = math.asin(float(np.clip(-c2w[1, 2], -1.0, 1.0)))
        action[3] = np.clip(-pitch / self.max_r, -1.0, 1.0)                # keep the horizon level
        if abs(err) < math.radians(20.0):
            # Step straight at the waypoint (in the camera frame, before this step's turn), never beyond it.
            world = np.array([d[0], 0.0, d[1]])
            dist = float(np.linalg.norm(world))
            local = c2w[:3, :3].T @ (world * min(1.0, self.max_t / max(dist, 1e-9)))
            action[:3] = np.clip(local / self.max_t, -1.0, 1.0)
        return action.astype(np.float32)

    def _discrete(self, err: float, dist: float):
        s = self.discrete
        turn = self.max_r
        if abs(err) > turn / 2:
            return s.continuous(self.env, s.index("right" if err > 0 else "left"))
        return s.continuous(self.env, s.index("forward"))

    def _stop(self):
        if self.discrete is not None:
            return self.discrete.continuous(self.env, self.discrete.index("stop"))
        self.env.unwrapped.request_stop()
        return np.zeros(6, dtype=np.float32)


class ActionReplay(Agent):
    """Replays a fixed (T, 6) action array; `done` is True once every action was used (act then raises)."""

    name = "replay"

    def __init__(self, actions):
        a = np.asarray(actions, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != 6 or len(a) == 0:
            raise ValueError(f"actions must have shape (T, 6) with T >= 1 (dx, dy, dz, dpitch, dyaw, droll), got "
                             f"{a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or Inf")
        self.actions = a
        self.t = 0

    @property
    def done(self) -> bool:
        return self.t >= len(self.actions)

    def reset(self, env, obs, info) -> None:
        super().reset(env, obs, info)
        self.t = 0

    def act(self, obs, info):
        if self.done:
            raise IndexError(f"all {len(self.actions)} actions were replayed")
        self.t += 1
        return self.actions[self.t - 1]


def pose_delta_action(c2w_from: np.ndarray, c2w_to: np.ndarray, max_translation: float,
                      max_rotation: float) -> tuple[np.ndarray, bool]:
    """The (6,) action moving a camera from one pose to another in one env step, and whether it had to be clipped.

    The env moves c2w to c2w @ [exp(w) | t] (actions.target_poses), so t = R^T (p_to - p_from) and
    w = log(R_from^T R_to), divided by the per-step scales.
    """
    a, b = np.asarray(c2w_from, np.float64), np.asarray(c2w_to, np.float64)
    t = a[:3, :3].T @ (b[:3, 3] - a[:3, 3])
    w = so3_log(a[:3, :3].T @ b[:3, :3])
    action = np.concatenate([t / max_translation, w / max_rotation])
    clipped = bool(np.abs(action).max() > 1.0 + 1e-4)  # float32 poses round a full step to 1 + 1e-7
    return np.clip(action, -1.0, 1.0).astype(np.float32), clipped


class TrajectoryFollower(Agent):
    """Drives toward `poses` (T, 4, 4) camera-to-world, one per step (the pose the step should end at).

    With `relative=True` (default) the poses are taken relative to the first one and anchored at the episode's
    start pose, so a trajectory recorded anywhere (e.g. a SANA-WM camera file starting at identity) plays from the
    agent's start; poses[0] is then the start itself and is skipped. `clipped_steps` counts steps whose move
    exceeded the env's max_translation / max_rotation (they fall short and later steps catch up).
    """

    name = "trajectory"

    def __init__(self, poses, relative: bool = True):
        p = np.asarray(poses, dtype=np.float64)
        if p.ndim != 3 or p.shape[1:] != (4, 4) or len(p) < 1 + relative:
            raise ValueError(f"poses must have shape (T, 4, 4) with at least {1 + relative} poses, got {p.shape}")
        self.poses = p
        self.relative = relative
        self.t = 0
        self.clipped_steps = 0

    @property
    def done(self) -> bool:
        return self.t >= len(self.targets)

    def reset(self, env, obs, info) -> None:
        super().reset(env, obs, info)
        if self.relative:
            start = np.asarray(info["pose"], dtype=np.float64)
            self.targets = start[None] @ np.linalg.inv(self.poses[0])[None] @ self.poses[1:]
        else:
            self.targets = self.poses
        base = env.unwrapped
        self.max_t = base.action_config.max_translation
        self.max_r = base.action_config.max_rotation
        self.t = 0
        self.clipped_steps = 0

    def act(self, obs, info):
        if self.done:
            raise IndexError(f"all {len(self.targets)} poses were followed")
        action, clipped = pose_delta_action(np.asarray(info["pose"], np.float64), self.targets[self.t], self.max_t,
                                            self.max_r)
        self.clipped_steps += clipped
        self.t += 1
        return action
