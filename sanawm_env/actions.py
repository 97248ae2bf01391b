"""Actions: the continuous 6-DoF camera action, its integration into poses, and habitat-style / keyboard mappings.

- The action is a float32 (6,) vector in [-1, 1], `(dx, dy, dz, dpitch, dyaw, droll)`, in the camera's own frame
  (OpenCV: x right, y down, z forward). Positive dz walks forward, positive dy moves down, positive dyaw turns
  right, positive dpitch looks up, positive droll tilts the right side down (DESIGN.md section 2).
- `ActionConfig` scales it to metres and radians per step. `target_poses` applies the scaled delta to the current
  camera-to-world pose (rotation and translation both in the start frame) and keeps the pitch inside
  `pitch_limit`. `interpolate_poses` spreads the move over the K raw frames of one step: translation linear in k/K,
  rotation along the geodesic (the axis-angle of the relative rotation scaled by k/K). All in float64.
- `check_actions` validates a batch before anything is mutated: shape, dtype, NaN/Inf, range (clipped or refused).
- `DiscreteNavActions` is habitat's discrete action set (stop, move_forward 0.25 m, turn 10 deg, look 10 deg,
  optional strafe / vertical / roll), sizes as kwargs. `KEYBOARD` is the key map shared by
  `gymnasium.utils.play.play` (through `SanaWMEnv.get_keys_to_action`) and our pygame viewer.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ACTION_NAMES = ("dx", "dy", "dz", "dpitch", "dyaw", "droll")


@dataclass
class ActionConfig:
    max_translation: float = 0.25            # metres per step at |action| = 1
    max_rotation: float = math.radians(10.0)  # radians per step at |action| = 1
    pitch_limit: float = math.radians(60.0)  # |pitch| stays below this, so the horizon cannot flip
    clip_actions: bool = True                # clip out-of-range actions (reported in info) instead of raising

    def __post_init__(self):
        if not (self.max_translation > 0 and math.isfinite(self.max_translation)):
            raise ValueError(f"max_translation must be a positive number of metres, got {self.max_translation}")
        if not (self.max_rotation > 0 and math.isfinite(self.max_rotation)):
            raise ValueError(f"max_rotation must be a positive number of radians, got {self.max_rotation}")
        if not (0 < self.pitch_limit < math.pi / 2):
            raise ValueError(f"pitch_limit must lie in (0, pi/2) radians, got {self.pitch_limit}")

    @property
    def scale(self) -> np.ndarray:
        """(6,) float64 multipliers from [-1, 1] to metres and radians."""
        t, r = self.max_translation, self.max_rotation
        return np.array([t, t, t, r, r, r])


@dataclass
class DiscreteNavConfig:
    forward_step: float = 0.25      # metres per move_forward
    turn_angle: float = 10.0        # degrees per turn_left / turn_right
    tilt_angle: float = 10.0        # degrees per look_up / look_down
    strafe: bool = False            # add strafe_left / strafe_right (forward_step each)
    vertical: bool = False          # add move_up / move_down (forward_step each)
    roll: bool = False              # add roll_left / roll_right (turn_angle each)
    success_on: str | None = "stop"  # set the task's success mode (habitat: success needs stop); None keeps the env's


def action_space() -> spaces.Box:
    """The single-world action space: Box(-1, 1, (6,), float32)."""
    return spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)


# ---------------------------------------------------------------------- validation


def check_actions(actions, num_worlds: int, clip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch of actions; returns ((N, 6) float64 in [-1, 1], (N,) bool clipped).

    Raises ValueError naming the problem (shape, dtype, NaN/Inf, out of range when `clip` is False). Pure: nothing
    is mutated, so a refused action leaves every world as it was.
    """
    try:
        a = np.asarray(actions)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"action must be an array of shape ({num_worlds}, 6), got {type(actions).__name__}: "
                         f"{e}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ValueError(f"action must hold numbers, got dtype {a.dtype}")
    if a.shape != (num_worlds, 6):
        raise ValueError(f"action must have shape ({num_worlds}, 6) (dx, dy, dz, dpitch, dyaw, droll), got shape "
                         f"{a.shape}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        where = ", ".join(f"world {i} {ACTION_NAMES[j]}={a[i, j]}" for i, j in zip(*np.nonzero(bad)))
        raise ValueError(f"action contains NaN or Inf ({where}); expected finite values in [-1, 1]")
    out = (a < -1.0) | (a > 1.0)
    clipped = out.any(axis=1)
    if clipped.any():
        if not clip:
            where = ", ".join(f"world {i} {ACTION_NAMES[j]}={a[i, j]:.4g}" for i, j in zip(*np.nonzero(out)))
            raise ValueError(f"action out of range [-1, 1] ({where}); make the env with clip_actions=True to clip")
        a = np.clip(a, -1.0, 1.0)
    return a, clipped


# ---------------------------------------------------------------------- SO(3), batched


def so3_exp(w: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle vectors -> (..., 3, 3) rotations, float64.

    Rodrigues, R = I + a [w]x + b [w]x^2 with a = sin(t) / t, b = (1 - cos t) / t^2 = 2 sin^2(t/2) / t^2, written
    out entry by entry (this runs on tiny arrays every step, where numpy's per-call cost dominates).
    """
    w = np.asarray(w, dtype=np.float64)
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    t2 = x * x + y * y + z * z
    t = np.sqrt(t2)
    small = t < 1e-8
    if small.any():
        ts = np.where(small, 1.0, t)
        a = np.where(small, 1.0 - t2 / 6.0, np.sin(ts) / ts)
        b = np.where(small, 0.5 - t2 / 24.0, 2.0 * (np.sin(0.5 * ts) / ts) ** 2)
    else:
        a = np.sin(t) / t
        b = 2.0 * (np.sin(0.5 * t) / t) ** 2
    ax, ay, az, bx, by, bz = a * x, a * y, a * z, b * x, b * y, b * z
    r = np.empty(w.shape[:-1] + (3, 3))
    r[..., 0, 0] = 1.0 - by * y - bz * z
    r[..., 0, 1] = bx * y - az
    r[..., 0, 2] = bx * z + ay
    r[..., 1, 0] = bx * y + az
    r[..., 1, 1] = 1.0 - bx * x - bz * z
    r[..., 1, 2] = by * z - ax
    r[..., 2, 0] = bx * z - ay
    r[..., 2, 1] = by * z + ax
    r[..., 2, 2] = 1.0 - bx * x - by * y
    return r


def so3_log(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 3) axis-angle vectors with angle in [0, pi], float64."""
    r = np.asarray(r, dtype=np.float64)
    cos = np.clip((r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1.0) * 0.5, -1.0, 1.0)
    theta = np.arccos(cos)  # (...,)
    vee = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    small = theta < 1e-6
    if small.any():
        scale = np.where(small, 0.5 + theta**2 / 12.0, theta / (2.0 * np.where(small, 1.0, np.sin(theta))))
    else:
        scale = theta / (2.0 * np.sin(theta))
    w = vee * scale[..., None]
    near_pi = theta > math.pi - 1e-4
    if near_pi.any():  # the antisymmetric part vanishes: read the axis off R + I = 2 k k^T (up to rounding)
        for idx in zip(*np.nonzero(near_pi)) if near_pi.ndim else [()]:
            b = (r[idx] + np.eye(3)) / 2.0
            col = int(np.argmax(np.diag(b)))
            axis = b[:, col] / math.sqrt(max(b[col, col], 1e-12))
            if np.dot(axis, vee[idx]) < 0:
                axis = -axis
            w[idx] = axis / np.linalg.norm(axis) * theta[idx]
    return w


def yaw_pitch_roll(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., 3, 3) rotations -> yaw, pitch, roll (...,) with R = Ry(yaw) Rx(pitch) Rz(roll) (scenes.pose)."""
    f = r[..., :, 2]  # forward axis in the world
    yaw = np.arctan2(f[..., 0], f[..., 2])
    pitch = np.arcsin(np.clip(-f[..., 1], -1.0, 1.0))
    # Rz(roll) = (Ry(yaw) Rx(pitch))^T R; its first column is (cos roll, sin roll, 0).
    up = _ry_rx(yaw, pitch)
    rz = np.swapaxes(up, -1, -2) @ r
    roll = np.arctan2(rz[..., 1, 0], rz[..., 0, 0])
    return yaw, pitch, roll


def _ry_rx(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    out = np.zeros(np.shape(yaw) + (3, 3))
    out[..., 0, 0], out[..., 0, 1], out[..., 0, 2] = cy, sy * sp, sy * cp
    out[..., 1, 1], out[..., 1, 2] = cp, -sp
    out[..., 2, 0], out[..., 2, 1], out[..., 2, 2] = -sy, cy * sp, cy * cp
    return out


def _rotation(yaw, pitch, roll) -> np.ndarray:
    """(..., 3, 3) Ry(yaw) Rx(pitch) Rz(roll)."""
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.zeros(np.shape(roll) + (3, 3))
    rz[..., 0, 0], rz[..., 0, 1], rz[..., 1, 0], rz[..., 1, 1], rz[..., 2, 2] = cr, -sr, sr, cr, 1.0
    return _ry_rx(yaw, pitch) @ rz


# ---------------------------------------------------------------------- integration


def target_poses(c2w: np.ndarray, delta: np.ndarray, pitch_limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Apply scaled local deltas; returns ((N, 4, 4) float64 targets, (N,) bool pitch limited).

    c2w: (N, 4, 4) current camera-to-world; delta: (N, 6) (dx, dy, dz, dpitch, dyaw, droll) in metres / radians in
    each camera's own frame. The target is c2w @ [exp(w) | t] with w = (dpitch, dyaw, droll). When it would pitch
    beyond +-pitch_limit, the limit acts as a stop: dpitch is scaled down to the largest fraction that stays inside
    (yaw and roll applied in full), so holding "look up" at the limit changes nothing. Only if yaw or roll alone
    leave the range (a rolled camera) is the target's pitch clamped with its yaw and roll kept.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    out = np.empty_like(c2w)  # (N, 4, 4) = c2w @ [exp(w) | t]
    out[:, :3, :3] = c2w[:, :3, :3] @ so3_exp(delta[:, 3:6])
    out[:, :3, 3] = (c2w[:, :3, :3] @ delta[:, :3, None])[..., 0] + c2w[:, :3, 3]
    out[:, 3] = (0.0, 0.0, 0.0, 1.0)
    limited = np.abs(out[:, 1, 2]) > math.sin(pitch_limit)  # |pitch| > limit, pitch = asin(-forward_y)
    for i in np.flatnonzero(limited):
        r0, w = c2w[i, :3, :3], delta[i, 3:6]
        if abs(_pitch_with(r0, w, 0.0)) <= pitch_limit:
            lo, hi = 0.0, 1.0  # lo stays inside the range, hi outside
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if abs(_pitch_with(r0, w, mid)) <= pitch_limit else (lo, mid)
            out[i, :3, :3] = r0 @ so3_exp(np.array([lo * w[0], w[1], w[2]]))
        else:
            yaw, p, roll = yaw_pitch_roll(out[i, :3, :3])
            out[i, :3, :3] = _rotation(yaw, np.clip(p, -pitch_limit, pitch_limit), roll)
    return out, limited


def _pitch_with(r0: np.ndarray, w: np.ndarray, f: float) -> float:
    """Pitch after rotating r0 (3, 3) by (f * dpitch, dyaw, droll)."""
    return float(pitch_of_rotation(r0 @ so3_exp(np.array([f * w[0], w[1], w[2]]))))


def interpolate_poses(c2w_from: np.ndarray, c2w_to: np.ndarray, frames: int) -> np.ndarray:
    """(N, 4, 4), (N, 4, 4) -> (N, K, 4, 4) float64 poses at k/K, k = 1..K; the last one is c2w_to exactly.

    Translation is linear in k/K; rotation is R_from exp((k/K) log(R_from^T R_to)).
    """
    a = np.asarray(c2w_from, dtype=np.float64)
    b = np.asarray(c2w_to, dtype=np.float64)
    n = a.shape[0]
    s = np.arange(1, frames + 1, dtype=np.float64) / frames  # (K,)
    out = np.zeros((n, frames, 4, 4))
    out[:, :, 3, 3] = 1.0
    r0 = a[:, :3, :3]
    w = so3_log(np.swapaxes(r0, -1, -2) @ b[:, :3, :3])  # (N, 3)
    out[:, :, :3, :3] = r0[:, None] @ so3_exp(w[:, None, :] * s[None, :, None])  # (N, K, 3, 3)
    out[:, :, :3, 3] = a[:, None, :3, 3] + s[None, :, None] * (b[:, None, :3, 3] - a[:, None, :3, 3])
    out[:, -1] = b
    return out


def pitch_of(c2w: np.ndarray) -> np.ndarray:
    """(..., 4, 4) c2w -> (...,) pitch in radians (positive looks up)."""
    return pitch_of_rotation(np.asarray(c2w)[..., :3, :3])


def pitch_of_rotation(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation -> (...,) pitch of its forward axis in radians (positive looks up)."""
    return np.arcsin(np.clip(-np.asarray(r)[..., 1, 2], -1.0, 1.0))


# ---------------------------------------------------------------------- keyboard

# key name -> (action component, sign). WASD translate, arrows yaw/pitch, Space/C up/down, Q/E roll.
KEYBOARD: dict[str, tuple[int, float]] = {
    "w": (2, 1.0), "s": (2, -1.0), "a": (0, -1.0), "d": (0, 1.0),
    "space": (1, -1.0), "c": (1, 1.0),
    "up": (3, 1.0), "down": (3, -1.0), "left": (4, -1.0), "right": (4, 1.0),
    "q": (5, -1.0), "e": (5, 1.0),
}
# pygame 2 (SDL2) key codes of the named keys; letters use their lowercase character code (a test checks these
# against pygame's own constants, so importing pygame is not needed to build a mapping).
_KEY_CODES = {"space": 32, "return": 13, "escape": 27, "up": 1073741906, "down": 1073741905, "left": 1073741904,
              "right": 1073741903}


def key_code(name: str) -> int:
    """The pygame key code of a key name ("w", "space", "up", "return", ...)."""
    if len(name) == 1:
        return ord(name.lower())
    if name not in _KEY_CODES:
        raise ValueError(f"unknown key name {name!r}; expected one character or one of {sorted(_KEY_CODES)}")
    return _KEY_CODES[name]


def keyboard_action(pressed: set[str] | list[str], bindings: dict[str, tuple[int, float]] | None = None,
                    strength: float = 1.0) -> np.ndarray:
    """(6,) float32 action for a set of held key names: each key adds its sign on its axis; clipped to [-1, 1]."""
    bindings = KEYBOARD if bindings is None else bindings
    a = np.zeros(6, dtype=np.float32)
    for k in pressed:
        if k in bindings:
            axis, sign = bindings[k]
            a[axis] += sign * strength
    return np.clip(a, -1.0, 1.0)


def keys_to_action(bindings: dict[str, tuple[int, float]] | None = None) -> dict[tuple[int, ...], np.ndarray]:
    """The `gymnasium.utils.play.play` mapping: every combination of at most one key per direction pair.

    Keys are sorted tuples of pygame key codes (play looks up the sorted tuple of held keys); values are (6,) float32
    actions. With the default bindings that is 3^6 - 1 = 728 combinations.
    """
    bindings = KEYBOARD if bindings is None else bindings
    by_axis: dict[int, list[str]] = {}
    for name, (axis, _) in bindings.items():
        by_axis.setdefault(axis, []).append(name)
    choices = [[None, *names] for _, names in sorted(by_axis.items())]
    out = {}
    for combo in itertools.product(*choices):
        keys = [k for k in combo if k is not None]
        if keys:
            out[tuple(sorted(key_code(k) for k in keys))] = keyboard_action(keys, bindings)
    return out


# ---------------------------------------------------------------------- discrete, habitat-style


class DiscreteNavActions(gym.Wrapper):
    """Habitat's discrete navigation actions on top of the continuous 6-DoF env.

    Actions (Discrete(n), habitat order first): 0 stop, 1 move_forward, 2 turn_left, 3 turn_right, 4 look_up,
    5 look_down, then, when enabled, strafe_left, strafe_right, move_up, move_down, roll_left, roll_right.
    `stop` ends the episode (the env's `request_stop`): the agent does not move and the task judges success there.
    Each action is one env step of the matching scaled continuous action, so sizes must not exceed the env's
    max_translation / max_rotation (checked here).

    Args:
        env: a SanaWM env (or a wrapper of one).
        **kwargs: fields of `DiscreteNavConfig`.
    """

    def __init__(self, env: gym.Env, **kwargs):
        super().__init__(env)
        cfg = DiscreteNavConfig(**kwargs)
        base = env.unwrapped
        if not hasattr(base, "request_stop") or not hasattr(base, "action_config"):
            raise TypeError(f"DiscreteNavActions wraps a SanaWM env, got {type(base).__name__}")
        acfg: ActionConfig = base.action_config
        step, turn, tilt = cfg.forward_step, math.radians(cfg.turn_angle), math.radians(cfg.tilt_angle)
        for name, v, limit, unit in (("forward_step", step, acfg.max_translation, "m"),
                                     ("turn_angle", turn, acfg.max_rotation, "rad"),
                                     ("tilt_angle", tilt, acfg.max_rotation, "rad")):
            if not (0 < v <= limit + 1e-12):
                raise ValueError(f"{name} must be in (0, {limit:.4g}] {unit} (the env's max per step), got {v:.4g} "
                                 f"{unit}; make the env with a larger max_translation / max_rotation")
        t, r = step / acfg.max_translation, turn / acfg.max_rotation
        p = tilt / acfg.max_rotation
        table = [("stop", None), ("move_forward", (2, t)), ("turn_left", (4, -r)), ("turn_right", (4, r)),
                 ("look_up", (3, p)), ("look_down", (3, -p))]
        if cfg.strafe:
            table += [("strafe_left", (0, -t)), ("strafe_right", (0, t))]
        if cfg.vertical:
            table += [("move_up", (1, -t)), ("move_down", (1, t))]
        if cfg.roll:
            table += [("roll_left", (5, -r)), ("roll_right", (5, r))]
        self.action_names = tuple(name for name, _ in table)
        self._actions = np.zeros((len(table), 6), dtype=np.float32)
        for i, (_, spec) in enumerate(table):
            if spec is not None:
                self._actions[i, spec[0]] = spec[1]
        self.action_space = spaces.Discrete(len(table))
        if cfg.success_on is not None:
            base.task.set_success_on(cfg.success_on)
        self.cfg = cfg

    def continuous(self, action: int) -> np.ndarray:
        """The (6,) float32 continuous action of a discrete one (zeros for stop)."""
        return self._actions[self._index(action)].copy()

    def _index(self, action) -> int:
        a = np.asarray(action)
        if a.shape != () or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"action must be one integer in [0, {self.action_space.n}), got {action!r}")
        i = int(a)
        if not 0 <= i < self.action_space.n:
            raise ValueError(f"action must be in [0, {self.action_space.n}) ({', '.join(self.action_names)}), "
                             f"got {i}")
        return i

    def step(self, action):
        i = self._index(action)
        if self.action_names[i] == "stop":
            self.env.unwrapped.request_stop()
        return self.env.step(self._actions[i].copy())

    def get_keys_to_action(self) -> dict[tuple[int, ...], int]:
        """Keys for `gymnasium.utils.play.play(env, noop=..., wait_on_player=True)`: W forward, A/D or left/right
        turn, up/down look, Enter stop, plus the optional actions (J/L strafe, Space/C up/down, Q/E roll)."""
        keys = {"move_forward": ["w"], "turn_left": ["a", "left"], "turn_right": ["d", "right"], "look_up": ["up"],
                "look_down": ["down"], "stop": ["return"], "strafe_left": ["j"], "strafe_right": ["l"],
                "move_up": ["space"], "move_down": ["c"], "roll_left": ["q"], "roll_right": ["e"]}
        out = {}
        for i, name in enumerate(self.action_names):
            for k in keys.get(name, []):
                out[(key_code(k),)] = i
        return out

