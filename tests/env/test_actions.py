"""Actions: axis conventions, scaling, pose integration, pitch limit, validation, keyboard and discrete mappings."""

import math

import gymnasium as gym
import numpy as np
import pytest

import sanawm_env  # noqa: F401
from sanawm_env.actions import (
    ACTION_NAMES,
    KEYBOARD,
    ActionConfig,
    DiscreteNavActions,
    check_actions,
    interpolate_poses,
    key_code,
    keyboard_action,
    keys_to_action,
    pitch_of,
    so3_exp,
    so3_log,
    target_poses,
    yaw_pitch_roll,
)
from sanawm_env.scenes import pose
from sanawm_env.scenes.simple import box_room

CFG = ActionConfig()
START = pose([3.0, -1.5, 3.0])  # level camera looking along +z


def step_once(action, c2w=START, cfg=CFG):
    a = np.asarray(action, dtype=np.float64)[None]
    target, _ = target_poses(c2w[None], a * cfg.scale, cfg.pitch_limit)
    return target[0]


@pytest.mark.parametrize("axis, sign, check", [
    (2, 1, lambda t: np.allclose(t[:3, 3], [3.0, -1.5, 3.25])),    # +dz walks forward (+z)
    (0, 1, lambda t: np.allclose(t[:3, 3], [3.25, -1.5, 3.0])),    # +dx moves right (+x)
    (1, 1, lambda t: np.allclose(t[:3, 3], [3.0, -1.25, 3.0])),    # +dy moves down (+y)
    (4, 1, lambda t: t[0, 2] > 0 and abs(t[1, 2]) < 1e-12),        # +dyaw turns right: forward gains +x
    (3, 1, lambda t: t[1, 2] < 0 and abs(t[0, 2]) < 1e-12),        # +dpitch looks up: forward gains -y
    (5, 1, lambda t: t[1, 0] > 0 and abs(t[1, 2]) < 1e-12),        # +droll: the right axis tilts down (+y)
])
def test_axis_conventions(axis, sign, check):
    a = np.zeros(6)
    a[axis] = sign
    t = step_once(a)
    assert check(t), (ACTION_NAMES[axis], t)
    if axis >= 3:  # rotations turn by exactly max_rotation and do not translate
        r = START[:3, :3].T @ t[:3, :3]
        assert math.isclose(np.linalg.norm(so3_log(r)), CFG.max_rotation, rel_tol=1e-12)
        assert np.allclose(t[:3, 3], START[:3, 3])


def test_translation_is_in_the_camera_frame():
    turned = pose([3.0, -1.5, 3.0], yaw=math.pi / 2)  # facing +x
    t = step_once([0, 0, 1, 0, 0, 0], turned)
    assert np.allclose(t[:3, 3], [3.25, -1.5, 3.0])


def test_interpolation_is_smooth_and_ends_on_the_target():
    a = np.array([[0.3, -0.2, 1.0, 0.4, -0.7, 0.5]])
    target, _ = target_poses(START[None], a * CFG.scale, CFG.pitch_limit)
    k = 5
    poses = interpolate_poses(START[None], target, k)[0]  # (K, 4, 4)
    assert poses.shape == (k, 4, 4)
    assert np.array_equal(poses[-1], target[0])
    steps = np.diff(np.concatenate([START[None, :3, 3], poses[:, :3, 3]]), axis=0)
    assert np.allclose(steps, steps[0])  # translation linear in k/K
    rel = [so3_log(p0[:3, :3].T @ p1[:3, :3]) for p0, p1 in zip(np.concatenate([START[None], poses[:-1]]), poses)]
    assert np.allclose(rel, rel[0], atol=1e-12)  # equal rotation increments about one axis
    for p in poses:
        assert np.allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-12)


def test_so3_exp_log_round_trip_including_near_pi():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, math.pi - 1e-3, 196), [0.0, 1e-9, math.pi - 1e-6, math.pi]])
    w = axes * angles[:, None]
    back = so3_log(so3_exp(w))
    r1, r2 = so3_exp(w), so3_exp(back)
    assert np.allclose(r1, r2, atol=1e-6)
    assert np.allclose(np.linalg.norm(back, axis=1), angles, atol=1e-6)


@pytest.mark.parametrize("roll", [0.0, 0.2])
def test_pitch_limit_is_a_stop(roll):
    c2w = pose([3.0, -1.5, 3.0], yaw=0.4, roll=roll)
    seen = []
    for _ in range(20):  # hold "look up" well past the limit
        c2w = step_once([0, 0, 0, 1, 0, 0], c2w)
        assert pitch_of(c2w) <= CFG.pitch_limit + 1e-12
        seen.append(c2w)
    assert math.isclose(pitch_of(c2w), CFG.pitch_limit, abs_tol=1e-6)
    assert np.allclose(seen[10], seen[-1], atol=1e-6)  # at the stop nothing drifts (yaw and roll stay put)
    for _ in range(20):
        c2w = step_once([0, 0, 0, -1, 0, 0], c2w)
        assert pitch_of(c2w) >= -CFG.pitch_limit - 1e-12
    assert math.isclose(pitch_of(c2w), -CFG.pitch_limit, abs_tol=1e-6)


def test_yaw_pitch_roll_decomposition():
    r = pose([0, 0, 0], 0.7, 0.3, -0.4)[:3, :3]
    assert np.allclose(yaw_pitch_roll(r), [0.7, 0.3, -0.4], atol=1e-12)


@pytest.mark.parametrize("bad, match", [
    (np.full((1, 6), np.nan), "NaN or Inf"),
    (np.array([[0, 0, np.inf, 0, 0, 0]]), "dz"),
    (np.zeros((1, 5)), r"shape \(1, 6\)"),
    (np.zeros((2, 6)), r"shape \(1, 6\)"),
    (np.array([["a"] * 6]), "numbers"),
])
def test_check_actions_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        check_actions(bad, 1, clip=True)


def test_check_actions_clips_or_refuses_out_of_range():
    a = np.array([[0, 0, 1.5, 0, -3, 0], [0.1] * 6])
    out, clipped = check_actions(a, 2, clip=True)
    assert clipped.tolist() == [True, False]
    assert out[0, 2] == 1.0 and out[0, 4] == -1.0 and np.allclose(out[1], 0.1)
    with pytest.raises(ValueError, match="world 0 dz=1.5"):
        check_actions(a, 2, clip=False)


def test_action_config_rejects_nonsense():
    with pytest.raises(ValueError, match="pitch_limit"):
        ActionConfig(pitch_limit=2.0)
    with pytest.raises(ValueError, match="max_translation"):
        ActionConfig(max_translation=0.0)


def test_keyboard_map():
    assert set(KEYBOARD) == {"w", "a", "s", "d", "up", "down", "left", "right", "space", "c", "q", "e"}
    assert np.array_equal(keyboard_action({"w", "right"}), [0, 0, 1, 0, 1, 0])
    assert np.array_equal(keyboard_action({"w", "s"}), np.zeros(6))
    assert np.array_equal(keyboard_action({"space", "q", "up"}), [0, -1, 0, 1, 0, -1])
    table = keys_to_action()
    assert len(table) == 3**6 - 1
    assert all(list(k) == sorted(k) for k in table)
    assert np.array_equal(table[(key_code("w"),)], [0, 0, 1, 0, 0, 0])
    assert np.array_equal(table[tuple(sorted((key_code("a"), key_code("left"))))], [-1, 0, 0, 0, -1, 0])
    pygame = pytest.importorskip("pygame")
    for name in ("space", "return", "escape", "up", "down", "left", "right"):
        assert key_code(name) == getattr(pygame, f"K_{name.upper()}"), name
    assert key_code("w") == pygame.K_w


def test_discrete_actions_move_turn_and_look():
    env = DiscreteNavActions(gym.make("SanaWM/PointNav-v0", scene=box_room(), size=32, frames_per_step=1))
    assert env.action_names == ("stop", "move_forward", "turn_left", "turn_right", "look_up", "look_down")
    assert env.action_space.n == 6
    env.reset(seed=0, options={"start_pose": START, "goal": [5.0, 0.0, 5.0]})
    _, _, _, _, info = env.step(1)
    assert np.allclose(info["pose"][:3, 3], [3.0, -1.5, 3.25], atol=1e-6)
    _, _, _, _, info = env.step(2)  # turn left 10 degrees: forward gains -x
    assert math.isclose(math.atan2(info["pose"][0, 2], info["pose"][2, 2]), -math.radians(10), abs_tol=1e-6)
    _, _, _, _, info = env.step(4)
    assert math.isclose(pitch_of(info["pose"].astype(np.float64)), math.radians(10), abs_tol=1e-6)
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        env.step(6)
    with pytest.raises(ValueError, match="one integer"):
        env.step(np.array([1, 2]))
    _, reward, terminated, _, info = env.step(0)  # stop far from the goal: episode over, no success
    assert terminated and info["success"] == 0.0
    env.close()


def test_discrete_actions_optional_set_and_size_checks():
    base = gym.make("SanaWM/FreeRoam-v0", scene=box_room(), size=32, frames_per_step=1)
    env = DiscreteNavActions(base, strafe=True, vertical=True, roll=True, turn_angle=5.0, success_on=None)
    assert env.action_space.n == 12
    assert env.action_names[6:] == ("strafe_left", "strafe_right", "move_up", "move_down", "roll_left", "roll_right")
    assert np.allclose(env.continuous(2), [0, 0, 0, 0, -0.5, 0])
    assert set(env.get_keys_to_action().values()) == set(range(12))
    with pytest.raises(ValueError, match="forward_step"):
        DiscreteNavActions(base, forward_step=0.5)
    env.close()
