"""Tasks (FreeRoam, PointNav, ImageNav, Explore) and their measures, scored on the ground-truth scene.

- A task samples an episode in a scene (start pose, goal), adds its observation keys, and turns measures into the
  reward and `terminated`. Truncation is the env's (max_episode_steps) or gymnasium's TimeLimit.
- Every world keeps the Scene and SceneGeometry its episode started in, whatever the backend: poses are metric and
  shared, so an agent driving generated frames (model backend) is scored honestly against the real floor plan.
- Measures are small registered classes (uuid, reset / update / get) with their formula in the docstring, as in
  habitat-lab. They declare dependencies by uuid; `Measurements` orders them once at construction and fails there
  (not mid-episode) when one is missing or the graph has a cycle.
- Geodesics come from `SceneGeometry.distance_field_to(goal)` (exact, precomputed per episode, a few visibility tests
  per query); a position the goal cannot be reached from (e.g. after flying over a wall outdoors) falls back to the
  straight floor-plane distance so rewards stay finite.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces

from .scenes import RenderConfig, Renderer, Scene, SceneGeometry, pose
from .scenes.geometry import GoalDistance

POINTGOAL_MAX_DISTANCE = 1000.0  # metres; the finite upper bound of the "pointgoal" distance


@dataclass
class TaskConfig:
    """Every task option (each task reads the ones it needs; `make_task` rejects options the task does not use)."""

    # PointNav / ImageNav
    success_radius: float = 0.2      # metres (habitat: 0.2)
    success_on: str = "step"         # "step": success when a step ends within the radius; "stop": only on stop
    end_on_success: bool = True      # terminate the episode on success
    slack_reward: float = -0.01      # per step
    success_reward: float = 2.5
    min_geodesic: float = 1.0        # metres between the sampled start and goal
    max_geodesic: float = math.inf
    # Explore
    visibility_dist: float = 5.0     # metres a floor cell may lie from the camera and count as seen (habitat FogOfWar)
    coverage_resolution: float = 0.25  # metres per floor cell of the coverage map

    def __post_init__(self):
        if self.success_on not in ("step", "stop"):
            raise ValueError(f"success_on must be 'step' or 'stop', got {self.success_on!r}")
        if not self.success_radius > 0:
            raise ValueError(f"success_radius must be positive (metres), got {self.success_radius}")
        if not (0 <= self.min_geodesic <= self.max_geodesic):
            raise ValueError(f"need 0 <= min_geodesic <= max_geodesic, got {self.min_geodesic}, {self.max_geodesic}")
        if not (self.visibility_dist > 0 and self.coverage_resolution > 0):
            raise ValueError(f"visibility_dist and coverage_resolution must be positive, got {self.visibility_dist}, "
                             f"{self.coverage_resolution}")


@dataclass
class Episode:
    """One world's episode: shared by the measures by reference, never copied (everything here is fixed)."""

    scene: Scene
    geometry: SceneGeometry
    start: np.ndarray                          # (4, 4) float64 start c2w
    goal: np.ndarray | None = None             # (3,) float64 goal position (x, -eye_height, z)
    goal_distance: GoalDistance | None = None  # geodesic field to the goal
    start_distance: float = 0.0                # geodesic start -> goal (metres)
    goal_pose: np.ndarray | None = None        # (4, 4) ImageNav: where the goal image is taken
    goal_rgb: np.ndarray | None = None         # (H, W, 3) uint8 ImageNav goal image
    cache: dict[str, Any] = field(default_factory=dict)  # per-episode precomputations of measures (fixed)


@dataclass
class StepData:
    """What happened to one world in one step."""

    pose: np.ndarray         # (4, 4) float64 after the step
    prev_pose: np.ndarray    # (4, 4) float64 before it
    poses: np.ndarray        # (K, 4, 4) float64 of the K frames
    intrinsics: np.ndarray   # (4,) fx, fy, cx, cy
    size: tuple[int, int]    # (H, W) of the frames
    collided: bool
    stop: bool


# ---------------------------------------------------------------------- measures

MEASURES: dict[str, type[Measure]] = {}


def register_measure(cls: type[Measure]) -> type[Measure]:
    """Class decorator: make a measure available to tasks by its uuid."""
    if cls.uuid in MEASURES:
        raise ValueError(f"a measure with uuid {cls.uuid!r} is already registered ({MEASURES[cls.uuid].__name__})")
    MEASURES[cls.uuid] = cls
    return cls


class Measure:
    """A per-world episode metric. Subclasses set `uuid`, `depends_on` and `state_keys` (attributes that evolve
    during an episode, copied by get_state) and implement reset / update / get."""

    uuid: ClassVar[str] = ""
    depends_on: ClassVar[tuple[str, ...]] = ()
    state_keys: ClassVar[tuple[str, ...]] = ("value",)

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        self.value = 0.0

    def reset(self, ep: Episode, start: StepData, m: dict[str, Measure]) -> None:
        """Start an episode; `start` describes the start view (pose = prev_pose = the start pose, one frame)."""
        raise NotImplementedError

    def update(self, ep: Episode, step: StepData, m: dict[str, Measure]) -> None:
        raise NotImplementedError

    def get(self) -> float:
        return float(self.value)

    def get_state(self) -> dict[str, Any]:
        return {k: _copy(getattr(self, k)) for k in self.state_keys}

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self.state_keys:
            setattr(self, k, _copy(state[k]))


def _copy(x):
    return x.copy() if isinstance(x, np.ndarray) else x


def _floor_xz(c2w: np.ndarray) -> np.ndarray:
    return c2w[[0, 2], 3]


@register_measure
class DistanceToGoal(Measure):
    """d_t = geodesic distance (metres) on the walkable floor from the agent's position to the goal.

    Exact shortest path around the inflated obstacles of the episode's scene (SceneGeometry); where the goal is
    unreachable from the agent's position, the straight floor-plane distance |p - g| instead.
    """

    uuid = "distance_to_goal"
    state_keys = ("value", "_xz")

    def reset(self, ep, start, m):
        self._xz = None
        self._measure(ep, start.pose)

    def update(self, ep, step, m):
        self._measure(ep, step.pose)

    def _measure(self, ep: Episode, c2w: np.ndarray) -> None:
        xz = _floor_xz(c2w)
        if self._xz is not None and np.array_equal(xz, self._xz):
            return  # pure rotation: the distance cannot change
        d = ep.goal_distance(xz)
        if not math.isfinite(d):
            d = float(np.linalg.norm(xz - ep.goal[[0, 2]]))
        self._xz, self.value = xz.copy(), float(d)


@register_measure
class Success(Measure):
    """S = 1 if the agent is within `success_radius` of the goal (d_t < r) when it calls stop, or, with
    success_on="step", at the end of any step; else 0 (habitat-lab `Success`)."""

    uuid = "success"
    depends_on = ("distance_to_goal",)

    def reset(self, ep, start, m):
        self.value = 0.0

    def update(self, ep, step, m):
        near = m["distance_to_goal"].get() < self.cfg.success_radius
        judged = step.stop or self.cfg.success_on == "step"
        self.value = 1.0 if (near and judged) else 0.0


@register_measure
class PathLength(Measure):
    """p = sum over steps of |x_t - x_{t-1}| (metres, 3-D Euclidean between step end positions; the K frames of a
    step lie on that straight segment)."""

    uuid = "path_length"

    def reset(self, ep, start, m):
        self.value = 0.0

    def update(self, ep, step, m):
        self.value += float(np.linalg.norm(step.pose[:3, 3] - step.prev_pose[:3, 3]))


def _efficiency(ep: Episode, p: float) -> float:
    """l / max(p, l) with l the start-goal geodesic; 1 when both are 0."""
    l = ep.start_distance
    return 1.0 if max(p, l) == 0.0 else l / max(p, l)


@register_measure
class SPL(Measure):
    """SPL = S * l / max(p, l): success weighted by (normalised inverse) path length (Anderson et al. 2018,
    arXiv 1807.06757); l = geodesic start -> goal, p = path length travelled."""

    uuid = "spl"
    depends_on = ("success", "path_length")

    def reset(self, ep, start, m):
        self.value = 0.0

    def update(self, ep, step, m):
        self.value = m["success"].get() * _efficiency(ep, m["path_length"].get())


@register_measure
class SoftSPL(Measure):
    """SoftSPL = max(0, 1 - d_t / l) * l / max(p, l): SPL with the binary success replaced by the progress made
    toward the goal (habitat-lab `SoftSPL`); d_t = distance to goal now, l = at the start, p = path length."""

    uuid = "soft_spl"
    depends_on = ("distance_to_goal", "path_length")

    def reset(self, ep, start, m):
        self.value = 0.0

    def update(self, ep, step, m):
        l = ep.start_distance
        soft = 1.0 if l == 0.0 else max(0.0, 1.0 - m["distance_to_goal"].get() / l)
        self.value = soft * _efficiency(ep, m["path_length"].get())


@register_measure
class Collisions(Measure):
    """C = number of steps whose move was stopped by the scene (SceneGeometry.move reported a contact or a height
    clamp)."""

    uuid = "collisions"

    def reset(self, ep, start, m):
        self.value = 0.0

    def update(self, ep, step, m):
        self.value += float(step.collided)


@register_measure
class Coverage(Measure):
    """A = res^2 * |seen floor cells| (m^2): floor area seen so far, from the scene's geometry (any backend).

    The floor is cut into cells of `coverage_resolution` metres (cells under a span that reaches the floor are not
    floor). A cell is seen by a camera pose when its centre (i) projects inside the image, in front of the camera,
    (ii) lies within `visibility_dist` metres of it, and (iii) the straight line from the camera to it passes
    through no solid span (tested every quarter scene cell along the line). The start view and every frame of every
    step count. Explore's reward is the growth of A.
    """

    uuid = "coverage"
    state_keys = ("value", "seen")

    def reset(self, ep, start, m):
        if "coverage_floor" not in ep.cache:
            ep.cache["coverage_floor"] = floor_cells(ep.scene, self.cfg.coverage_resolution)
            ep.cache["coverage_spans"] = (ep.scene.h_lo.double().numpy(), ep.scene.h_hi.double().numpy())
        self.seen = np.zeros_like(ep.cache["coverage_floor"])
        self.value = 0.0
        self.update(ep, start, m)

    def update(self, ep, step, m):
        for c2w in step.poses:
            self._observe(ep, c2w, step.intrinsics, step.size)
        self.value = float(self.seen.sum()) * self.cfg.coverage_resolution ** 2

    def _observe(self, ep: Episode, c2w: np.ndarray, k: np.ndarray, size: tuple[int, int]) -> None:
        """Mark the floor cells seen from one camera pose (4, 4), intrinsics k (4,), frame size (H, W)."""
        floor = ep.cache["coverage_floor"]
        res, reach = self.cfg.coverage_resolution, self.cfg.visibility_dist
        o = c2w[:3, 3]
        cam_h = -o[1]
        gz, gx = floor.shape
        i0, i1 = max(0, int((o[2] - reach) / res)), min(gz, int(math.ceil((o[2] + reach) / res)))
        j0, j1 = max(0, int((o[0] - reach) / res)), min(gx, int(math.ceil((o[0] + reach) / res)))
        if i0 >= i1 or j0 >= j1:
            return
        ii, jj = np.nonzero(floor[i0:i1, j0:j1] & ~self.seen[i0:i1, j0:j1])  # unseen floor near the camera
        ii, jj = ii + i0, jj + j0
        dx, dz = (jj + 0.5) * res - o[0], (ii + 0.5) * res - o[2]          # (C,) floor point - camera
        r = c2w[:3, :3]
        xc = r[0, 0] * dx + r[1, 0] * cam_h + r[2, 0] * dz                # camera coordinates of (dx, cam_h, dz)
        yc = r[0, 1] * dx + r[1, 1] * cam_h + r[2, 1] * dz
        zc = r[0, 2] * dx + r[1, 2] * cam_h + r[2, 2] * dz
        zs = np.maximum(zc, 1e-6)
        u, v = k[0] * xc / zs + k[2], k[1] * yc / zs + k[3]
        h, w = size
        keep = ((dx * dx + dz * dz + cam_h * cam_h <= reach * reach) & (zc > 1e-3)
                & (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5))
        if not keep.any():
            return
        ii, jj, dx, dz = ii[keep], jj[keep], dx[keep], dz[keep]
        clear = _clear_to_floor(ep, o, dx, dz)
        self.seen[ii[clear], jj[clear]] = True


def floor_cells(scene: Scene, res: float) -> np.ndarray:
    """(GZ, GX) bool: coverage cells of `res` metres whose centre is on visible floor (no span down to y = 0)."""
    nz, nx = scene.shape
    ext_x, ext_z = scene.extent
    gx, gz = int(math.ceil(ext_x / res - 1e-9)), int(math.ceil(ext_z / res - 1e-9))
    ci = np.minimum(((np.arange(gz) + 0.5) * res / scene.cell).astype(np.int64), nz - 1)
    cj = np.minimum(((np.arange(gx) + 0.5) * res / scene.cell).astype(np.int64), nx - 1)
    covered = (scene.h_hi > scene.h_lo).numpy() & (scene.h_lo <= 1e-6).numpy()  # (NZ, NX)
    return ~covered[ci[:, None], cj[None, :]]


def _clear_to_floor(ep: Episode, o: np.ndarray, dx: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """(C,) bool: the segment from the camera o (3,) to the floor points o + (dx, ., dz) at y = 0 is unblocked."""
    lo, hi = ep.cache["coverage_spans"]
    cell = float(ep.scene.cell)
    nz, nx = lo.shape
    n = max(2, int(math.ceil(float(np.sqrt(dx * dx + dz * dz).max()) / (cell / 4.0))))
    s = (np.arange(n) + 0.5) / n                       # (S,) fractions along the segment
    x = o[0] + dx[:, None] * s[None, :]                # (C, S)
    z = o[2] + dz[:, None] * s[None, :]
    height = (-o[1]) * (1.0 - s)[None, :]              # (1, S) metres above the floor
    ci = np.clip(np.floor(z / cell).astype(np.int64), 0, nz - 1)
    cj = np.clip(np.floor(x / cell).astype(np.int64), 0, nx - 1)
    return ~((lo[ci, cj] < height) & (height < hi[ci, cj])).any(axis=1)


class Measurements:
    """The measures of one world, ordered so that each runs after the ones it depends on."""

    def __init__(self, uuids: tuple[str, ...], cfg: TaskConfig):
        unknown = [u for u in uuids if u not in MEASURES]
        if unknown:
            raise ValueError(f"unknown measures {unknown}; registered: {sorted(MEASURES)}")
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(u: str, path: tuple[str, ...]) -> None:
            if state.get(u) == "done":
                return
            if state.get(u) == "active":
                raise ValueError(f"measure dependency cycle: {' -> '.join((*path, u))}")
            state[u] = "active"
            for dep in MEASURES[u].depends_on:
                if dep not in uuids:
                    raise ValueError(f"measure {u!r} depends on {dep!r}, which the task does not include "
                                     f"(task measures: {list(uuids)})")
                visit(dep, (*path, u))
            state[u] = "done"
            order.append(u)

        for u in uuids:
            visit(u, ())
        self.order = tuple(order)
        self.measures: dict[str, Measure] = {u: MEASURES[u](cfg) for u in self.order}

    def reset(self, ep: Episode, start: StepData) -> dict[str, float]:
        for m in self.measures.values():
            m.reset(ep, start, self.measures)
        return self.values()

    def update(self, ep: Episode, step: StepData) -> dict[str, float]:
        for m in self.measures.values():
            m.update(ep, step, self.measures)
        return self.values()

    def values(self) -> dict[str, float]:
        return {u: m.get() for u, m in self.measures.items()}

    def get_state(self) -> dict[str, dict[str, Any]]:
        return {u: m.get_state() for u, m in self.measures.items()}

    def set_state(self, state: dict[str, dict[str, Any]]) -> None:
        for u, m in self.measures.items():
            m.set_state(state[u])


# ---------------------------------------------------------------------- oracle views (ImageNav goal images)


class GoalViews:
    """Ground-truth views of a scene at given poses, rendered by the oracle whatever the backend (the ImageNav goal
    image). One Renderer per recently used scene."""

    def __init__(self, height: int, width: int, supersample: int = 1, compile: bool = False,
                 device: str | torch.device = "cpu", cache_size: int = 4):
        self.cfg = RenderConfig(height=height, width=width, supersample=supersample, compile=compile)
        self.device = torch.device(device)
        self._renderers: OrderedDict[int, tuple[Scene, Renderer]] = OrderedDict()
        self._cache_size = cache_size

    def render(self, scene: Scene, c2w: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
        """(4, 4) pose, (4,) intrinsics -> (H, W, 3) uint8."""
        hit = self._renderers.get(id(scene))
        if hit is None or hit[0] is not scene:
            hit = (scene, Renderer(scene, self.cfg, device=self.device))
            self._renderers[id(scene)] = hit
            while len(self._renderers) > self._cache_size:
                self._renderers.popitem(last=False)
        self._renderers.move_to_end(id(scene))
        out = hit[1].render(torch.from_numpy(np.asarray(c2w, dtype=np.float64)[None]),
                            torch.as_tensor(np.asarray(intrinsics, dtype=np.float32)))
        return out.rgb[0].cpu().numpy()


# ---------------------------------------------------------------------- tasks


class Task:
    """Episode sampling, task observations, reward and termination; measures listed by uuid.

    Every task ends the episode (terminated) when the agent calls stop (`SanaWMEnv.request_stop`).
    """

    name: ClassVar[str] = ""
    measures: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()  # the TaskConfig fields this task reads
    has_goal: ClassVar[bool] = False
    needs_views: ClassVar[bool] = False      # needs oracle views (GoalViews) at reset

    def __init__(self, cfg: TaskConfig | None = None):
        self.cfg = cfg or TaskConfig()

    def set_success_on(self, mode: str) -> None:
        """Switch success to "step" (end a step within the radius) or "stop" (only when stop is called)."""
        if mode not in ("step", "stop"):
            raise ValueError(f"success_on must be 'step' or 'stop', got {mode!r}")
        self.cfg.success_on = mode

    def observation_spaces(self, height: int, width: int) -> dict[str, spaces.Space]:
        """The task's observation keys beside "rgb"."""
        return {}

    def new_episode(self, scene: Scene, geometry: SceneGeometry, rng: np.random.Generator,
                    start: np.ndarray | None = None, goal: np.ndarray | None = None,
                    views: GoalViews | None = None, intrinsics: np.ndarray | None = None) -> Episode:
        """Sample (or take) the start pose (4, 4) and, for goal tasks, the goal (3,)."""
        if goal is not None:
            raise ValueError(f"task {self.name!r} has no goal; options['goal'] is for PointNav and ImageNav")
        if start is None:
            start = pose(geometry.sample_free_position(rng), yaw=float(rng.uniform(-math.pi, math.pi)))
        return Episode(scene=scene, geometry=geometry, start=start)

    def observe(self, ep: Episode, c2w: np.ndarray) -> dict[str, np.ndarray]:
        """The task's observation values for a world at pose c2w (4, 4)."""
        return {}

    def reward(self, before: dict[str, float], after: dict[str, float], step: StepData) -> float:
        return 0.0

    def terminated(self, values: dict[str, float], step: StepData) -> bool:
        return bool(step.stop)


class FreeRoam(Task):
    """No goal and no reward: drive around (and record data) until the time limit."""

    name = "freeroam"
    measures = ("collisions", "path_length")


class PointNav(Task):
    """Reach a goal point given in the agent's frame (habitat PointNav conventions).

    Observation adds "pointgoal" = [distance (m), angle (rad)] to the goal on the floor plane, the angle measured from
    the camera's heading, positive when the goal is to the right. Reward = slack_reward (-0.01) + (d_{t-1} - d_t)
    + success_reward (2.5) * success, with d the geodesic distance to the goal. Terminates on success
    (end_on_success) or stop.
    """

    name = "pointnav"
    measures = ("distance_to_goal", "success", "path_length", "spl", "soft_spl", "collisions")
    options = ("success_radius", "success_on", "end_on_success", "slack_reward", "success_reward", "min_geodesic",
               "max_geodesic")
    has_goal = True

    def observation_spaces(self, height, width):
        low = np.array([0.0, -math.pi], dtype=np.float32)
        high = np.array([POINTGOAL_MAX_DISTANCE, math.pi], dtype=np.float32)
        return {"pointgoal": spaces.Box(low, high, shape=(2,), dtype=np.float32)}

    def new_episode(self, scene, geometry, rng, start=None, goal=None, views=None, intrinsics=None):
        cfg, eye = self.cfg, float(scene.eye_height)
        lo, hi = cfg.min_geodesic, cfg.max_geodesic
        if goal is not None:
            goal = np.asarray(goal, dtype=np.float64)
            goal = goal[:3, 3] if goal.shape == (4, 4) else goal
            goal = np.array([goal[0], -eye, goal[2]], dtype=np.float64)
            if not geometry.is_free(goal):
                raise ValueError(f"options['goal'] (x={goal[0]:.3f}, z={goal[2]:.3f}) is not free floor for a standing "
                                 f"agent in {scene.family} scene {scene.seed}")
        if start is None and goal is None:
            start, goal, dist = geometry.sample_start_goal(rng, min_geodesic=lo, max_geodesic=hi)
            field = geometry.distance_field_to(goal)
        elif goal is None:  # a start was given: draw goals around it
            field, goal, dist = self._draw(geometry, rng, start[:3, 3], lo, hi, "goal")
            field = geometry.distance_field_to(goal)
        else:
            field = geometry.distance_field_to(goal)
            if start is None:
                _, p, dist = self._draw(geometry, rng, goal, lo, hi, "start", field)
                start = pose(p, yaw=float(rng.uniform(-math.pi, math.pi)))
            else:
                dist = field(start[:3, 3])
                if not math.isfinite(dist):
                    raise ValueError(f"options['goal'] {goal.tolist()} cannot be reached from the start position "
                                     f"{start[:3, 3].tolist()} (no walkable path)")
        return Episode(scene=scene, geometry=geometry, start=start, goal=goal, goal_distance=field,
                       start_distance=float(dist))

    @staticmethod
    def _draw(geometry, rng, anchor, lo, hi, what, field=None, tries: int = 200):
        """Draw free positions until one lies at geodesic distance [lo, hi] from `anchor` (3,)."""
        field = field or geometry.distance_field_to(anchor)
        for _ in range(tries):
            p = geometry.sample_free_position(rng)
            d = field(p)
            if lo <= d <= hi:
                return field, p, d
        raise ValueError(f"no {what} at geodesic distance [{lo}, {hi}] m from {np.round(anchor, 3).tolist()} found in "
                         f"{tries} draws; move it or relax min_geodesic / max_geodesic")

    def observe(self, ep, c2w):
        dx, dz = ep.goal[0] - c2w[0, 3], ep.goal[2] - c2w[2, 3]
        heading = math.atan2(c2w[0, 2], c2w[2, 2])
        angle = math.remainder(math.atan2(dx, dz) - heading, 2.0 * math.pi)
        dist = min(math.hypot(dx, dz), POINTGOAL_MAX_DISTANCE)
        return {"pointgoal": np.array([dist, angle], dtype=np.float32)}

    def reward(self, before, after, step):
        progress = before["distance_to_goal"] - after["distance_to_goal"]
        return self.cfg.slack_reward + progress + self.cfg.success_reward * after["success"]

    def terminated(self, values, step):
        return bool(step.stop or (self.cfg.end_on_success and values["success"] > 0))


class ImageNav(PointNav):
    """Reach the place shown by a goal image: PointNav's episodes, reward and measures, but the goal is given as
    "goal_rgb", the oracle's view from the goal position (eye height) with a random heading (or from the goal pose
    given in reset options), instead of "pointgoal"."""

    name = "imagenav"
    needs_views = True

    def observation_spaces(self, height, width):
        return {"goal_rgb": spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)}

    def new_episode(self, scene, geometry, rng, start=None, goal=None, views=None, intrinsics=None):
        ep = super().new_episode(scene, geometry, rng, start=start, goal=goal)
        given = goal is not None and np.shape(goal) == (4, 4)
        ep.goal_pose = np.array(goal, dtype=np.float64) if given else pose(ep.goal, yaw=float(rng.uniform(-math.pi,
                                                                                                        math.pi)))
        ep.goal_rgb = views.render(scene, ep.goal_pose, intrinsics)
        ep.goal_rgb.flags.writeable = False
        return ep

    def observe(self, ep, c2w):
        return {"goal_rgb": ep.goal_rgb}


class Explore(Task):
    """See as much floor as possible: reward = newly seen floor area (m^2) per step, from the scene geometry
    (measure "coverage")."""

    name = "explore"
    measures = ("coverage", "collisions", "path_length")
    options = ("visibility_dist", "coverage_resolution")

    def reward(self, before, after, step):
        return after["coverage"] - before["coverage"]


TASKS: dict[str, type[Task]] = {t.name: t for t in (FreeRoam, PointNav, ImageNav, Explore)}


def make_task(name: str, **options) -> Task:
    """The task called `name` ("freeroam", "pointnav", "imagenav", "explore") with its TaskConfig options."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    cls = TASKS[name]
    known = {f.name for f in fields(TaskConfig)}
    bad = [k for k in options if k not in cls.options]
    if bad:
        what = "unknown option" if any(k not in known for k in bad) else "option it does not use"
        raise TypeError(f"task {name!r} got {what}(s) {bad}; its options are {list(cls.options)}")
    return cls(TaskConfig(**options))
