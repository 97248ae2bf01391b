"""Camera trajectories for data and tests: keyboard-like walks, pure rotations, revisit and orbit loops,
and 6-DoF jitter. Every generator returns (F, 4, 4) float64 camera-to-world poses that respect the
scene's collisions (walks slide to a stop and turn away rather than pass through walls).

Angles are integrated in float64 and poses rebuilt from (position, yaw, pitch, roll), so a loop
that returns to its start returns to the same pose bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .geometry import SceneGeometry
from .poses import heading, pose


@dataclass
class WalkConfig:
    fps: float = 16.0
    speed: float = 1.0            # m/s at full forward
    turn_rate: float = 1.2        # rad/s at full yaw
    pitch_rate: float = 0.6       # rad/s
    max_pitch: float = math.radians(30.0)
    tau: float = 0.3              # s, velocity smoothing time constant (press and release)
    segment: tuple[float, float] = (0.5, 2.0)  # s, duration of one key intent
    lookahead: float = 1.0        # m, start turning away when a wall is this close ahead


# Key intents: (forward, strafe, yaw, pitch) in units of full speed / rate, with sampling weights.
_INTENTS = [
    ((1.0, 0.0, 0.0, 0.0), 5.0),
    ((1.0, 0.0, 0.6, 0.0), 2.0),
    ((1.0, 0.0, -0.6, 0.0), 2.0),
    ((0.0, 0.0, 1.0, 0.0), 1.5),
    ((0.0, 0.0, -1.0, 0.0), 1.5),
    ((0.0, 1.0, 0.0, 0.0), 0.7),
    ((0.0, -1.0, 0.0, 0.0), 0.7),
    ((-0.6, 0.0, 0.0, 0.0), 0.5),
    ((0.0, 0.0, 0.0, 1.0), 0.4),
    ((0.0, 0.0, 0.0, -1.0), 0.4),
    ((0.0, 0.0, 0.0, 0.0), 0.5),
]


def _state(c2w: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Position, yaw and pitch of a roll-free camera pose."""
    c2w = np.asarray(c2w, dtype=np.float64)
    f = c2w[:3, 2]
    return c2w[:3, 3].copy(), heading(c2w), math.asin(float(np.clip(-f[1], -1.0, 1.0)))


def free_run(geom: SceneGeometry, position: np.ndarray, yaw: float, max_dist: float = 6.0,
             step: float = 0.25) -> float:
    """How far (metres, up to max_dist) a camera can walk straight from `position` along heading `yaw`."""
    d = np.arange(1, int(max_dist / step) + 1) * step
    pts = position[None] + d[:, None] * np.array([math.sin(yaw), 0.0, math.cos(yaw)])[None]
    free = geom.is_free(pts)
    return float(d[np.argmin(free)] - step) if not free.all() else max_dist


def open_heading(geom: SceneGeometry, position: np.ndarray, rng: np.random.Generator, candidates: int = 16) -> float:
    """A heading with room ahead: a random pick among the three most open of `candidates` directions."""
    yaws = rng.uniform(-math.pi, math.pi) + np.arange(candidates) * (2.0 * math.pi / candidates)
    runs = np.array([free_run(geom, position, y) for y in yaws])
    best = np.argsort(-runs, kind="stable")[:3]
    return float(math.remainder(yaws[int(rng.choice(best))], 2.0 * math.pi))


def _turn_side(geom: SceneGeometry, pos: np.ndarray, yaw: float) -> float:
    """+1 to turn right, -1 to turn left: whichever side has more room."""
    return 1.0 if free_run(geom, pos, yaw + 1.2) >= free_run(geom, pos, yaw - 1.2) else -1.0


def keyboard_walk(geom: SceneGeometry, start: np.ndarray, frames: int, rng: np.random.Generator,
                  cfg: WalkConfig | None = None) -> np.ndarray:
    """A person with a keyboard: intents held for a while, velocities eased in and out, walls respected.

    Like a person, the walker sees a wall coming: when its direction of travel has less than
    `lookahead` metres of room, it stops translating and turns toward the more open side until the
    way ahead is clear again. Collisions (rare) resolve the same way.
    """
    cfg = cfg or WalkConfig()
    dt = 1.0 / cfg.fps
    alpha = 1.0 - math.exp(-dt / cfg.tau)
    pos, yaw, pitch = _state(start)
    vel = np.zeros(4)  # forward, strafe, yaw rate, pitch rate (smoothed)
    probs = np.array([w for _, w in _INTENTS])
    probs /= probs.sum()
    target, left, avoid = np.zeros(4), 0, 0.0
    out = np.empty((frames, 4, 4))
    c2w = pose(pos, yaw, pitch)
    for f in range(frames):
        out[f] = c2w
        if avoid and (free_run(geom, pos, yaw, max_dist=2 * cfg.lookahead) >= 2 * cfg.lookahead or left <= 0):
            avoid, left = 0.0, 0
        if left <= 0:
            intent = np.array(_INTENTS[int(rng.choice(len(_INTENTS), p=probs))][0])
            target = intent * [cfg.speed, cfg.speed, cfg.turn_rate, cfg.pitch_rate]
            left = int(rng.uniform(*cfg.segment) * cfg.fps)
        heading_of_travel = yaw + math.atan2(target[1], target[0]) if np.hypot(*target[:2]) > 0 else None
        if not avoid and heading_of_travel is not None and \
                free_run(geom, pos, heading_of_travel, max_dist=cfg.lookahead) < cfg.lookahead:
            avoid = _turn_side(geom, pos, yaw)
            target, left = np.array([0.0, 0.0, cfg.turn_rate * avoid, 0.0]), int(2.5 * cfg.fps)
        left -= 1
        vel += alpha * (target - vel)
        yaw += vel[2] * dt
        pitch = float(np.clip(pitch + vel[3] * dt, -cfg.max_pitch, cfg.max_pitch))
        # Walk on the floor plane, in the heading frame: forward = (sin yaw, 0, cos yaw), right = (cos, 0, -sin).
        step = dt * (vel[0] * np.array([math.sin(yaw), 0.0, math.cos(yaw)])
                     + vel[1] * np.array([math.cos(yaw), 0.0, -math.sin(yaw)]))
        c2w, collided = geom.move(c2w, pose(pos + step, yaw, pitch))
        pos = c2w[:3, 3].copy()
        if collided and not avoid:
            avoid = _turn_side(geom, pos, yaw)
            target, left = np.array([0.0, 0.0, cfg.turn_rate * avoid, 0.0]), int(2.5 * cfg.fps)
            vel[:2] = 0.0
    return out


def path_walk(geom: SceneGeometry, start: np.ndarray, goal: np.ndarray, frames: int,
              cfg: WalkConfig | None = None, clearance: float = 0.45) -> np.ndarray:
    """Walk the shortest path to `goal` (x, y, z), turning smoothly toward each waypoint, then look around.

    Waypoints come from a planning geometry with a larger radius (`clearance`), so corners are rounded
    with room to spare and the walker never grazes a wall.
    """
    cfg = cfg or WalkConfig()
    c = geom.cfg  # same vertical extent, wider footprint
    plan = SceneGeometry(geom.scene, replace(c, radius=clearance, body_height=c.body_height + c.radius - clearance))
    dt = 1.0 / cfg.fps
    pos, yaw, pitch = _state(start)
    path = plan.shortest_path(pos[[0, 2]], np.asarray(goal, dtype=np.float64)[[0, 2]])
    if len(path) == 0:
        path = geom.shortest_path(pos[[0, 2]], np.asarray(goal, dtype=np.float64)[[0, 2]])
    k = 1
    out = np.empty((frames, 4, 4))
    c2w = pose(pos, yaw, pitch)
    speed = 0.0
    for f in range(frames):
        out[f] = c2w
        while k < len(path) and np.hypot(*(path[k] - pos[[0, 2]])) < 0.3:
            k += 1
        if k < len(path):
            d = path[k] - pos[[0, 2]]
            err = math.remainder(math.atan2(d[0], d[1]) - yaw, 2.0 * math.pi)
            target_speed = cfg.speed * max(0.0, math.cos(err)) ** 2
        else:  # arrived: look around
            err, target_speed = 0.6 * cfg.turn_rate * dt, 0.0
        yaw += float(np.clip(err, -cfg.turn_rate * dt, cfg.turn_rate * dt))
        speed += (1.0 - math.exp(-dt / cfg.tau)) * (target_speed - speed)
        step = dt * speed * np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        c2w, _ = geom.move(c2w, pose(pos + step, yaw, pitch))
        pos = c2w[:3, 3].copy()
    return out


def rotation(start: np.ndarray, frames: int, total: float = 2.0 * math.pi, axis: str = "yaw") -> np.ndarray:
    """Turn in place by `total` radians over frames-1 steps about the heading (yaw) or the camera x axis (pitch).

    The last pose is start rotated by `total`; a full yaw turn (2*pi) ends on the start pose exactly.
    """
    if axis not in ("yaw", "pitch"):
        raise ValueError(f"axis must be 'yaw' or 'pitch', got {axis!r}")
    pos, yaw0, pitch0 = _state(start)
    out = np.empty((frames, 4, 4))
    for f in range(frames):
        a = total * f / max(frames - 1, 1)
        if axis == "yaw":
            yaw = math.remainder(yaw0 + a, 2.0 * math.pi) if abs(total) >= 2 * math.pi - 1e-12 else yaw0 + a
            out[f] = pose(pos, yaw, pitch0)
        else:
            out[f] = pose(pos, yaw0, pitch0 + a)
    if axis == "yaw" and abs(abs(total) - 2.0 * math.pi) < 1e-12:
        out[-1] = out[0]  # close the turn exactly
    return out


def revisit_loop(geom: SceneGeometry, start: np.ndarray, frames: int, rng: np.random.Generator,
                 cfg: WalkConfig | None = None) -> np.ndarray:
    """Walk out, turn around, retrace the same positions back, and turn to face the start heading again.

    The first and last frames are the same pose, so a model can be scored on returning to a place.
    """
    cfg = cfg or WalkConfig()
    if frames < 8:
        return rotation(start, frames)
    turn = max(2, frames // 6)
    n_out = (frames - 2 * turn) // 2
    path = keyboard_walk(geom, start, n_out, rng, cfg)
    pos0, yaw0, pitch0 = _state(start)
    end_pos, yaw, _ = _state(path[-1])
    seq = [pose(end_pos, yaw + math.pi * (k + 1) / turn, pitch0) for k in range(turn)]
    yaw += math.pi
    for k in range(n_out - 2, -1, -1):  # the same positions, in reverse, facing the way back
        p, d = path[k][:3, 3], path[k][:3, 3] - path[k + 1][:3, 3]
        if math.hypot(d[0], d[2]) > 1e-9:
            yaw = math.atan2(d[0], d[2])
        seq.append(pose(p, yaw, pitch0))
    rest = frames - n_out - len(seq)
    diff = math.remainder(yaw0 - yaw, 2.0 * math.pi)
    seq += [pose(pos0, yaw + diff * (k + 1) / rest, pitch0) for k in range(rest)]
    traj = np.concatenate([path, np.stack(seq)])
    traj[-1] = np.asarray(start, dtype=np.float64)  # close the loop exactly
    return traj


def orbit(geom: SceneGeometry, start: np.ndarray, frames: int, rng: np.random.Generator,
          radius: float | None = None) -> np.ndarray:
    """Circle a point in front of the start, always looking at it, and come back to the start pose.

    Tries smaller circles where a larger one would hit a wall, and falls back to a turn in place.
    """
    pos, yaw0, pitch0 = _state(start)
    sign = float(rng.choice([-1.0, 1.0]))
    for r in ([radius] if radius else [1.5, 1.0, 0.6, 0.35]):
        center = pos + r * np.array([math.sin(yaw0), 0.0, math.cos(yaw0)])
        angles = sign * np.linspace(0.0, 2.0 * math.pi, frames)
        # The start sits at bearing yaw0 + pi from the centre; a camera at bearing b looks at it with yaw b - pi.
        pts = center + r * np.stack([-np.sin(yaw0 + angles), np.zeros(frames), -np.cos(yaw0 + angles)], 1)
        if geom.is_free(pts).all():
            out = np.stack([pose(p, yaw0 + a, pitch0) for p, a in zip(pts, angles)])
            out[-1] = np.asarray(start, dtype=np.float64)
            return out
    return rotation(start, frames)


def jitter(geom: SceneGeometry, start: np.ndarray, frames: int, rng: np.random.Generator,
           trans_sigma: float = 0.03, rot_sigma: float = 0.03, revert: float = 0.1) -> np.ndarray:
    """Smooth random 6-DoF shake around the start pose (translation, pitch, yaw and roll), mean-reverting."""
    base = np.asarray(start, dtype=np.float64)
    pos0, yaw0, pitch0 = _state(base)
    state = np.zeros(6)  # dx, dy, dz, pitch, yaw, roll offsets
    out = np.empty((frames, 4, 4))
    for f in range(frames):
        cand = pose(pos0 + state[:3], yaw0 + state[4], pitch0 + state[3], state[5])
        out[f] = cand if (f == 0 or geom.is_free(cand[None, :3, 3])[0]) else out[f - 1]
        state = (1.0 - revert) * state + np.concatenate(
            [rng.normal(0.0, trans_sigma, 3), rng.normal(0.0, rot_sigma, 3)])
    out[0] = base
    return out


def look_around(start: np.ndarray, frames: int, rng: np.random.Generator,
                yaw_rate: tuple[float, float] = (1.0, 5.0), pitch_rate: tuple[float, float] = (0.75, 2.5),
                segment: tuple[int, int] = (8, 24), max_pitch: float = math.radians(35.0)) -> np.ndarray:
    """Stand still and look around: segments of steady yaw or pitch turns at keyboard rates (degrees per frame).

    Unlike `rotation` (a fast full or half turn), these are the slow, held turns a person makes with the
    arrow keys, including long pitch sweeps that walks rarely contain. Pitch turns back at +-max_pitch.
    """
    pos, yaw, pitch = _state(start)
    out = np.empty((frames, 4, 4))
    axis, rate, left = "yaw", 0.0, 0
    for f in range(frames):
        out[f] = pose(pos, yaw, pitch)
        if left <= 0:
            axis = "yaw" if rng.random() < 0.5 else "pitch"
            lo, hi = yaw_rate if axis == "yaw" else pitch_rate
            rate = math.radians(rng.uniform(lo, hi)) * float(rng.choice([-1.0, 1.0]))
            left = int(rng.integers(segment[0], segment[1] + 1))
        left -= 1
        if axis == "yaw":
            yaw = math.remainder(yaw + rate, 2.0 * math.pi)
        else:
            if abs(pitch + rate) > max_pitch:   # turn back toward level (also from a start beyond the limit)
                rate = -math.copysign(abs(rate), pitch)
            pitch += rate
    return out


KINDS = ("walk", "path", "rotation", "revisit", "orbit", "jitter", "look")


def make_trajectory(kind: str, geom: SceneGeometry, start: np.ndarray, frames: int,
                    rng: np.random.Generator) -> np.ndarray:
    """One trajectory of a named kind (see KINDS)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if kind == "walk":
        return keyboard_walk(geom, start, frames, rng)
    if kind == "path":
        _, goal, _ = geom.sample_start_goal(rng, min_geodesic=3.0)
        return path_walk(geom, start, goal, frames)
    if kind == "rotation":
        return rotation(start, frames, total=float(rng.choice([2.0 * math.pi, -2.0 * math.pi, math.pi, -math.pi])))
    if kind == "revisit":
        return revisit_loop(geom, start, frames, rng)
    if kind == "orbit":
        return orbit(geom, start, frames, rng)
    if kind == "jitter":
        return jitter(geom, start, frames, rng)
    if kind == "look":
        return look_around(start, frames, rng)
    raise ValueError(f"trajectory kind must be one of {KINDS}, got {kind!r}")
