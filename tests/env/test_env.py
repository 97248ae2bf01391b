"""SanaWMEnv: the Gymnasium and SB3 checkers on every id, determinism, reset options, collisions, snapshots,
rendering, keyboard play and the error contract."""

import os
import warnings

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import sanawm_env
from sanawm_env.env import SCENES, SanaWMEnv, WallClockMs
from sanawm_env.scenes import RenderConfig, Renderer, intrinsics_from_fov, pose
from sanawm_env.scenes.simple import box_room
from sanawm_env.vector import SanaWMVectorEnv

IDS = sorted(sanawm_env.ENV_IDS)
FAST = dict(size=32, frames_per_step=2, scene_seeds=(0,))  # one indoor scene, cached across tests
TIMINGS = ("step_ms", "backend_ms")
ROOM = box_room()


def same(a, b) -> bool:
    """Observations / infos equal exactly (timings excluded)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a if k not in TIMINGS)
    return bool(np.array_equal(a, b))


def rollout(env, seed, actions):
    out = [env.reset(seed=seed)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            out.append(env.reset())
    return out


@pytest.mark.parametrize("env_id", IDS)
def test_registered_with_both_entry_points(env_id):
    spec = gym.spec(env_id)
    assert spec.entry_point == "sanawm_env.env:SanaWMEnv"
    assert spec.vector_entry_point == "sanawm_env.vector:SanaWMVectorEnv"
    assert spec.max_episode_steps == 500


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id):
    env = gym.make(env_id, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)  # also re-creates the env in every render mode ("human" on the dummy driver)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, **{**FAST, "size": 40})  # SB3 warns below 36x36 for its CNN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped, warn=True)
    env.close()


def test_step_types_and_spaces():
    env = gym.make("SanaWM/PointNav-v0", **FAST)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert set(info) >= {"pose", "scene_seed", "distance_to_goal", "success", "spl", "soft_spl", "collisions"}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    assert env.observation_space.contains(obs)
    assert info["frames"].shape == (2, 32, 32, 3) and info["frames"].dtype == np.uint8
    assert np.array_equal(info["frames"][-1], obs["rgb"])
    assert info["pose"].shape == (4, 4) and info["poses"].shape == (2, 4, 4)
    assert np.allclose(info["poses"][-1], info["pose"])
    assert type(info["collided"]) is bool and type(info["clipped"]) is bool
    assert isinstance(info["step_ms"], WallClockMs) and info["step_ms"] >= info["backend_ms"] > 0
    assert env.unwrapped.metadata["render_fps"] == 8  # 16 fps video, 2 frames per step
    env.close()


@pytest.mark.parametrize("env_id", ["SanaWM/PointNav-v0", "SanaWM/ImageNav-v0", "SanaWM/Explore-v0"])
def test_same_seed_same_actions_identical(env_id):
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 6)).astype(np.float32)
    a = gym.make(env_id, **{**FAST, "scene_seeds": 2}, max_episode_steps=5)
    b = gym.make(env_id, **{**FAST, "scene_seeds": 2}, max_episode_steps=5)
    ra, rb = rollout(a, 7, actions), rollout(b, 7, actions)
    assert len(ra) == len(rb) == 10  # 8 steps, the initial reset and one time-limit reset
    for x, y in zip(ra, rb):
        assert len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
    other = rollout(a, 8, actions[:1])
    assert not same(other[0][0], ra[0][0])  # another seed, another episode


def test_scene_cache_does_not_change_results():
    actions = np.random.default_rng(1).uniform(-1, 1, (3, 6)).astype(np.float32)
    env = gym.make("SanaWM/PointNav-v0", **FAST)
    warm = rollout(env, 3, actions)
    SCENES.clear()
    cold = rollout(env, 3, actions)
    assert all(same(u, v) for x, y in zip(warm, cold) for u, v in zip(x, y))


def test_reset_options_are_honoured():
    env = gym.make("SanaWM/PointNav-v0", **FAST)
    scene, geom = SCENES.get("indoor", 0)
    start, goal, geodesic = geom.sample_start_goal(np.random.default_rng(5), min_geodesic=2.0)
    k = np.array([20.0, 20.0, 15.5, 15.5], dtype=np.float32)
    obs, info = env.reset(seed=0, options={"scene_seed": 0, "start_pose": start, "goal": goal, "intrinsics": k})
    assert info["scene_seed"] == 0
    assert np.allclose(info["pose"], start)
    ref = Renderer(scene, RenderConfig(32, 32)).render(torch.from_numpy(start), torch.from_numpy(k)).rgb[0]
    assert np.array_equal(obs["rgb"], ref.numpy())
    d = goal - start[:3, 3]
    yaw = np.arctan2(start[0, 2], start[2, 2])
    assert np.isclose(obs["pointgoal"][0], np.hypot(d[0], d[2]), atol=1e-4)     # floor distance to the goal
    angle = np.arctan2(d[0], d[2]) - yaw
    assert np.isclose(obs["pointgoal"][1], np.arctan2(np.sin(angle), np.cos(angle)), atol=1e-5)
    assert np.isclose(info["distance_to_goal"], geodesic, atol=1e-6)          # geodesic, not the straight line


@pytest.mark.parametrize("options, match", [
    ({"scene_seed": -1}, "scene_seed"),
    ({"start_pose": np.eye(3)}, r"start_pose.*\(4, 4\)"),
    ({"start_pose": pose([0.0, -1.5, 0.0])}, "not free"),          # inside the outer wall
    ({"start_pose": pose([3.0, -1.5, 3.0], pitch=1.3)}, "pitch"),
    ({"goal": [np.nan, 0.0, 1.0]}, "goal"),
    ({"intrinsics": [0.0, 1.0, 1.0, 1.0]}, "intrinsics"),
    ({"start_image": np.zeros((32, 32, 3), np.uint8)}, "start image"),
    ({"start_image": np.zeros((8, 8, 3), np.uint8)}, r"start_image.*\(32, 32, 3\)"),
    ({"teleport": True}, "unknown reset option"),
])
def test_bad_reset_options_raise_and_leave_the_env_usable(options, match):
    env = gym.make("SanaWM/PointNav-v0", **FAST)
    obs0, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)
    obs, _, _, _, _ = env.step(np.zeros(6, np.float32))  # the previous episode goes on
    assert np.array_equal(obs["rgb"], obs0["rgb"])
    env.close()


def test_goal_option_needs_a_goal_task():
    env = gym.make("SanaWM/FreeRoam-v0", **FAST)
    with pytest.raises(ValueError, match="has no goal"):
        env.reset(seed=0, options={"goal": [1.0, 0.0, 1.0]})


def test_constructor_arguments_are_checked():
    with pytest.raises(TypeError, match="unknown SanaWM env argument"):
        SanaWMEnv(task="pointnav", sise=64)
    with pytest.raises(TypeError, match="does not use"):
        SanaWMEnv(task="freeroam", success_radius=0.3)
    with pytest.raises(FileNotFoundError, match="no world-model checkpoint"):
        gym.make("SanaWM/PointNav-v0", backend="model", model="/nope/dit.safetensors")
    with pytest.raises(ValueError, match="scene must be one of"):
        SanaWMEnv(scene="mars")


def test_walls_stop_the_agent():
    env = SanaWMEnv(task="freeroam", scene=ROOM, size=32, frames_per_step=3)
    env.reset(seed=0, options={"start_pose": pose([3.0, -1.5, 3.0])})
    geom = SCENES.geometry_of(ROOM)
    hits = 0
    for _ in range(20):  # 5 m of walking forward in a room with 2.5 m ahead
        _, _, _, _, info = env.step(np.array([0, 0, 1, 0, 0, 0], np.float32))
        hits += info["collided"]
        assert all(geom.is_free(p[:3, 3].astype(np.float64)) for p in info["poses"])
    assert hits >= 10 and info["collisions"] == hits
    assert 5.5 - 0.18 - 1e-3 < info["pose"][2, 3] < 5.5 - 0.18  # stopped one radius before the wall at z = 5.5
    _, _, _, _, info = env.step(np.array([0, 1, 0, 0, 0, 0], np.float32))  # crouching below the body height
    assert info["collided"] and np.isclose(info["pose"][1, 3], -1.38, atol=1e-6)


def test_get_state_set_state_branches_exactly():
    actions = np.random.default_rng(2).uniform(-1, 1, (6, 6)).astype(np.float32)
    env = gym.make("SanaWM/Explore-v0", **FAST)
    env.reset(seed=4)
    for a in actions[:3]:
        env.step(a)
    snap = env.unwrapped.get_state()
    first = [env.step(a) for a in actions[3:]]
    env.unwrapped.set_state(snap)
    again = [env.step(a) for a in actions[3:]]
    assert all(same(u, v) for x, y in zip(first, again) for u, v in zip(x, y))
    other = gym.make("SanaWM/Explore-v0", **FAST)  # another env made with the same arguments
    other.reset(seed=99)
    other.unwrapped.set_state(snap)
    third = [other.step(a) for a in actions[3:]]
    assert all(same(u, v) for x, y in zip(first, third) for u, v in zip(x, y))


def test_error_contract():
    env = SanaWMEnv(task="pointnav", **FAST, max_episode_steps=2)
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(np.zeros(6, np.float32))
    env.reset(seed=0)
    env.step(np.zeros(6, np.float32))
    _, _, term, trunc, _ = env.step(np.zeros(6, np.float32))
    assert trunc and not term
    with pytest.raises(ResetNeeded, match="episode is over"):
        env.step(np.zeros(6, np.float32))
    env.reset()
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset(seed=0)


def test_render_rgb_array_and_human():
    env = gym.make("SanaWM/FreeRoam-v0", render_mode="rgb_array", **FAST)
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert np.array_equal(frame, obs["rgb"])
    env.close()
    human = SanaWMEnv(task="freeroam", render_mode="human", **FAST)
    human.reset(seed=0)
    human.step(np.zeros(6, np.float32))
    assert human._viewer is not None and human._viewer.is_open
    assert human.render() is None
    human.close()
    human.close()
    assert human._viewer is None


def test_gymnasium_play_works_out_of_the_box(monkeypatch):
    pygame = pytest.importorskip("pygame")
    from gymnasium.utils import play

    env = gym.make("SanaWM/FreeRoam-v0", render_mode="rgb_array", **FAST)
    batches = iter([[], [pygame.event.Event(pygame.QUIT)]])  # one idle frame (noop step), then quit
    monkeypatch.setattr(pygame.event, "get", lambda: next(batches, [pygame.event.Event(pygame.QUIT)]))
    steps = []
    play.play(env, callback=lambda *a: steps.append(a[2]), seed=0)
    assert len(steps) == 1 and np.array_equal(steps[0], 0)  # play's noop (0) is accepted as "stand still"
    assert len(env.unwrapped.get_keys_to_action()) == 728


def test_vector_entry_point_is_used():
    envs = gym.make_vec("SanaWM/PointNav-v0", num_envs=2, **FAST)
    assert isinstance(envs, SanaWMVectorEnv)
    envs.close()


def test_intrinsics_default_to_the_fov():
    env = SanaWMEnv(task="freeroam", scene=ROOM, size=(24, 32), fov=60.0, frames_per_step=1)
    obs, _ = env.reset(seed=0, options={"start_pose": pose([3.0, -1.5, 3.0])})
    assert obs["rgb"].shape == (24, 32, 3)
    k = intrinsics_from_fov(32, 24, 60.0)
    ref = Renderer(ROOM, RenderConfig(24, 32)).render(torch.from_numpy(pose([3.0, -1.5, 3.0])), k).rgb[0]
    assert np.array_equal(obs["rgb"], ref.numpy())


def test_mixed_scene_family_is_drawn_per_episode():
    env = gym.make("SanaWM/FreeRoam-v0", scene="mixed", size=32, frames_per_step=1, scene_seeds=(0,))
    families = {env.reset(seed=s)[1]["scene_family"] for s in range(8)}
    assert families == {"indoor", "outdoor"}
    env.close()


def test_human_render_without_pygame_names_the_extra(monkeypatch):
    import sys

    from gymnasium.error import DependencyNotInstalled

    monkeypatch.setitem(sys.modules, "pygame", None)  # makes `import pygame` fail
    env = SanaWMEnv(task="freeroam", render_mode="human", **FAST)
    with pytest.raises(DependencyNotInstalled, match=r"sanawm\[play\]"):
        env.reset(seed=0)
    env.close()


def test_quickstart_example_runs(capsys):
    import runpy
    import sys
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / "quickstart.py"
    argv = sys.argv
    sys.argv = [str(path), "2"]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    assert "SPL" in capsys.readouterr().out


def test_backend_seeds_come_from_the_reset_seed(monkeypatch):
    """The model backend's sampling noise will be seeded through Backend.reset(seeds=...): same seed, same seeds."""
    env = SanaWMEnv(task="freeroam", **FAST)
    got, real = [], env.backend.reset
    monkeypatch.setattr(env.backend, "reset", lambda *a, **kw: (got.append(kw["seeds"].copy()), real(*a, **kw))[1])
    env.reset(seed=1)
    env.reset(seed=1)
    env.reset(seed=2)
    assert got[0].dtype == np.int64 and got[0].shape == (1,)
    assert got[0] == got[1] and got[0] != got[2]


@pytest.mark.parametrize("code", [
    # the procedural worlds load on a machine without gymnasium (the GPU image has none)
    "import sys; sys.modules['gymnasium'] = None; import sanawm_env.scenes; sanawm_env.scenes.make_scene('indoor', 0)",
    # with gymnasium, importing the package registers every id, in either import order
    "import sanawm_env, gymnasium; assert all(i in gymnasium.registry for i in sanawm_env.ENV_IDS)",
    "import gymnasium, sanawm_env; assert all(i in gymnasium.registry for i in sanawm_env.ENV_IDS)",
])
def test_registration_in_any_import_order(code):
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_keyboard_driver_steps_with_held_keys(monkeypatch):
    pytest.importorskip("pygame")
    from sanawm_env import viewer

    env = SanaWMEnv(task="freeroam", scene=ROOM, size=32, frames_per_step=1)
    v = viewer.Viewer()
    monkeypatch.setattr(v, "pressed", lambda: {"w", "shift"})  # hold W at half speed
    steps = viewer.drive(env, seed=0, max_steps=3, viewer=v)
    assert steps == 3 and not v.is_open
    travelled = env.get_state().measures["path_length"]["value"]
    assert travelled == pytest.approx(3 * 0.125)
