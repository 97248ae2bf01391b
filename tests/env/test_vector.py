"""SanaWMVectorEnv: equal to N single envs, deterministic, gymnasium's autoreset modes and partial resets."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode

import sanawm_env  # noqa: F401
from sanawm_env.vector import SanaWMVectorEnv

N = 3
FAST = dict(size=32, frames_per_step=2, scene_seeds=(0, 1))
TIMINGS = ("step_ms", "backend_ms")


def untimed(info: dict) -> dict:
    return {k: untimed(v) if isinstance(v, dict) else v for k, v in info.items() if k.lstrip("_") not in TIMINGS}


def actions(steps, seed=0, n=N):
    return np.random.default_rng(seed).uniform(-1, 1, (steps, n, 6)).astype(np.float32)


def test_spaces_and_metadata():
    envs = gym.make_vec("SanaWM/ImageNav-v0", num_envs=N, **FAST)
    assert isinstance(envs, SanaWMVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.observation_space["rgb"].shape == (N, 32, 32, 3)
    assert envs.observation_space["goal_rgb"].shape == (N, 32, 32, 3)
    assert envs.action_space.shape == (N, 6)
    assert envs.max_episode_steps == 500  # from the registration, as make_vec passes it
    obs, infos = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert infos["_pose"].all() and infos["pose"].shape == (N, 4, 4)
    envs.close()
    envs.close()


@pytest.mark.parametrize("env_id", ["SanaWM/PointNav-v0", "SanaWM/Explore-v0"])
def test_vector_equals_n_single_envs(env_id):
    """World i of the vector env behaves exactly like a single env reset with seed s + i, autoresets included."""
    envs = gym.make_vec(env_id, num_envs=N, max_episode_steps=4, **FAST)
    singles = [gym.make(env_id, max_episode_steps=4, **FAST) for _ in range(N)]
    obs, _ = envs.reset(seed=10)
    single_obs = [e.reset(seed=10 + i)[0] for i, e in enumerate(singles)]
    for i in range(N):
        assert all(np.array_equal(obs[k][i], single_obs[i][k]) for k in obs)
    resets = 0
    for t, a in enumerate(actions(9)):
        obs, rew, term, trunc, info = envs.step(a)
        for i, env in enumerate(singles):
            o, r, te, tr, inf = env.step(a[i])
            assert (rew[i], term[i], trunc[i]) == (r, te, tr), (t, i)
            for k in inf:
                if k not in TIMINGS:
                    got = info["final_info"][k][i] if te or tr else info[k][i]
                    assert np.array_equal(got, inf[k]), (t, i, k)
            if te or tr:
                assert info["_final_obs"][i] and info["_final_info"][i]
                assert all(np.array_equal(info["final_obs"][i][k], o[k]) for k in o)
                o, inf = env.reset()
                resets += 1
                assert np.array_equal(info["pose"][i], inf["pose"])  # the reset info overwrites the step's
            for k in o:
                assert np.array_equal(obs[k][i], o[k]), (t, i, k)
    assert resets >= N  # every world went through at least one autoreset
    envs.close()


def test_same_seed_same_actions_identical():
    runs = []
    for _ in range(2):
        envs = gym.make_vec("SanaWM/PointNav-v0", num_envs=N, max_episode_steps=3, **FAST)
        out = [envs.reset(seed=5)[0]]
        for a in actions(5, seed=1):
            o, r, te, tr, info = envs.step(a)
            out.append((o, r, te, tr, untimed(info)))
        runs.append(out)
        envs.close()
    assert len(runs[0]) == 6 and all(data_equivalence(x, y, exact=True) for x, y in zip(*runs))
    assert any("final_obs" in step[4] for step in runs[0][1:])


def test_final_obs_and_final_info_follow_gymnasium():
    envs = gym.make_vec("SanaWM/FreeRoam-v0", num_envs=N, max_episode_steps=2, **FAST)
    envs.reset(seed=0)
    _, _, _, trunc, info = envs.step(actions(1)[0])
    assert not trunc.any() and "final_obs" not in info
    before = envs._worlds.obs["rgb"].copy()
    obs, rew, term, trunc, info = envs.step(actions(1)[0])
    assert trunc.all() and not term.any()
    assert info["final_obs"].dtype == object and info["_final_obs"].all()
    assert set(info["final_obs"][0]) == {"rgb"}
    assert info["final_info"]["_collided"].all() and info["final_info"]["frames"].shape == (N, 2, 32, 32, 3)
    assert np.array_equal(info["final_info"]["frames"][:, -1], np.stack([f["rgb"] for f in info["final_obs"]]))
    assert not np.array_equal(obs["rgb"], np.stack([f["rgb"] for f in info["final_obs"]]))  # new episodes
    assert info["_scene_seed"].all()  # reset info keys come with their masks
    assert not np.array_equal(before, obs["rgb"])
    envs.close()


def test_partial_reset_with_mask():
    envs = gym.make_vec("SanaWM/PointNav-v0", num_envs=N, **FAST)
    obs0, _ = envs.reset(seed=0)
    obs1, _, _, _, _ = envs.step(np.zeros((N, 6), np.float32))
    mask = np.array([False, True, False])
    obs2, info = envs.reset(seed=123, options={"reset_mask": mask})
    assert info["_pose"].tolist() == mask.tolist()
    for i in (0, 2):
        assert np.array_equal(obs2["rgb"][i], obs1["rgb"][i])
    ref = gym.make("SanaWM/PointNav-v0", **FAST).reset(seed=124)[0]  # world 1 got seed 123 + 1
    assert np.array_equal(obs2["rgb"][1], ref["rgb"])
    for bad, match in ((np.zeros(N, bool), "at least one"), (np.ones(N - 1, bool), "shape"),
                       (np.ones(N, int), "bool")):
        with pytest.raises(ValueError, match=match):
            envs.reset(options={"reset_mask": bad})
    envs.close()


def test_next_step_autoreset():
    envs = gym.make_vec("SanaWM/FreeRoam-v0", num_envs=N, max_episode_steps=2, autoreset_mode="NextStep", **FAST)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    envs.reset(seed=0)
    envs.step(actions(1)[0])
    obs, _, _, trunc, info = envs.step(actions(1)[0])
    assert trunc.all() and "final_obs" not in info
    obs, rew, term, trunc, info = envs.step(actions(1)[0])  # this step resets and ignores the actions
    assert (rew == 0).all() and not term.any() and not trunc.any()
    assert not info["_collided"].any() and info["_scene_seed"].all()
    obs, _, _, trunc, _ = envs.step(actions(1)[0])
    assert not trunc.any()
    envs.close()


def test_disabled_autoreset_needs_explicit_resets():
    envs = SanaWMVectorEnv(num_envs=N, max_episode_steps=1, autoreset_mode=AutoresetMode.DISABLED,
                           task="freeroam", **FAST)
    envs.reset(seed=0)
    _, _, _, trunc, _ = envs.step(actions(1)[0])
    assert trunc.all()
    with pytest.raises(ResetNeeded, match="reset_mask"):
        envs.step(actions(1)[0])
    envs.reset(options={"reset_mask": np.ones(N, bool)})
    envs.step(actions(1)[0])
    envs.close()


def test_bad_actions_raise_and_change_nothing():
    envs = gym.make_vec("SanaWM/PointNav-v0", num_envs=N, **FAST)
    obs, _ = envs.reset(seed=0)
    bad = np.zeros((N, 6), np.float32)
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="world 1 dyaw=nan"):
        envs.step(bad)
    with pytest.raises(ValueError, match=r"shape \(3, 6\)"):
        envs.step(np.zeros(6, np.float32))
    obs2, _, _, _, info = envs.step(np.zeros((N, 6), np.float32))
    assert np.array_equal(obs2["rgb"], obs["rgb"]) and not info["clipped"].any()
    with pytest.raises(ResetNeeded, match="never reset"):
        SanaWMVectorEnv(num_envs=2, **FAST).step(np.zeros((2, 6), np.float32))
    envs.close()


def test_copy_one_world_into_another_to_branch():
    envs = gym.make_vec("SanaWM/Explore-v0", num_envs=2, **FAST)
    envs.reset(seed=0)
    envs.step(actions(1, n=2)[0])
    envs.unwrapped.set_state(1, envs.unwrapped.get_state(0))
    a = np.tile(actions(1, seed=3, n=1)[0], (2, 1))
    for _ in range(3):
        obs, rew, _, _, info = envs.step(a)
        assert np.array_equal(obs["rgb"][0], obs["rgb"][1]) and rew[0] == rew[1]
        assert info["coverage"][0] == info["coverage"][1]
    envs.close()


def test_one_batch_no_rebuild_per_step():
    envs = gym.make_vec("SanaWM/FreeRoam-v0", num_envs=4, **{**FAST, "scene_seeds": (0,)})
    envs.reset(seed=0)
    for a in actions(3, n=4):
        envs.step(a)
    assert envs.unwrapped.backend.batch_builds == 1
    assert envs.unwrapped.backend._renderer.batch.num_scenes == 1  # four worlds, one shared scene
    envs.close()


def test_render_modes():
    envs = gym.make_vec("SanaWM/FreeRoam-v0", num_envs=2, render_mode="rgb_array", **FAST)
    obs, _ = envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == 2 and all(np.array_equal(f, o) for f, o in zip(frames, obs["rgb"]))
    envs.close()
    human = gym.make_vec("SanaWM/FreeRoam-v0", num_envs=3, render_mode="human", **FAST)
    human.reset(seed=0)
    assert human.unwrapped._viewer.is_open
    human.close()
