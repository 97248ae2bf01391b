"""The SB3 VecEnv adapter: same-step resets, terminal_observation, TimeLimit.truncated, is_success, and PPO."""

import csv

import gymnasium as gym
import numpy as np
import pytest

import sanawm_env  # noqa: F401

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402

from sanawm_env.sb3 import SB3VecEnv  # noqa: E402

FAST = dict(size=32, frames_per_step=1, scene_seeds=(0, 1))


def test_adapter_follows_sb3_vecenv_semantics():
    venv = SB3VecEnv(gym.make_vec("SanaWM/PointNav-v0", num_envs=2, max_episode_steps=3, **FAST))
    assert venv.num_envs == 2 and venv.observation_space["rgb"].shape == (32, 32, 3)
    venv.seed(7)
    obs = venv.reset()
    assert obs["rgb"].shape == (2, 32, 32, 3) and obs["pointgoal"].shape == (2, 2)
    assert all("pose" in i for i in venv.reset_infos)
    ref = gym.make("SanaWM/PointNav-v0", **FAST).reset(seed=8)[0]  # seed() gives world i seed + i
    assert np.array_equal(obs["rgb"][1], ref["rgb"])
    zero = np.zeros((2, 6), np.float32)
    for _ in range(3):
        obs, rewards, dones, infos = venv.step(zero)
        assert rewards.dtype == np.float32 and isinstance(infos, list) and len(infos) == 2
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        assert info["is_success"] is False
        assert info["episode"]["l"] == 3 and np.isclose(info["episode"]["r"], 3 * -0.01)
        term = info["terminal_observation"]
        assert set(term) == {"rgb", "pointgoal"}
        assert np.array_equal(term["rgb"], info["frames"][-1])  # the final step's info
        assert not np.array_equal(term["pointgoal"], obs["pointgoal"][i])  # obs is already the next episode's
        assert "scene_seed" in venv.reset_infos[i]
    assert venv.get_attr("render_mode") == [None, None]
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False]
    venv.close()


def test_adapter_reports_success():
    venv = SB3VecEnv(gym.make_vec("SanaWM/PointNav-v0", num_envs=1, success_radius=50.0, **FAST))
    venv.reset()
    _, _, dones, infos = venv.step(np.zeros((1, 6), np.float32))
    assert dones[0] and infos[0]["is_success"] is True and infos[0]["TimeLimit.truncated"] is False


def test_adapter_per_world_options_and_mode_check():
    venv = SB3VecEnv(gym.make_vec("SanaWM/PointNav-v0", num_envs=2, **FAST))
    venv.set_options([{"scene_seed": 0}, {"scene_seed": 1}])
    venv.reset()
    assert [i["scene_seed"] for i in venv.reset_infos] == [0, 1]
    venv.close()
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv(gym.make_vec("SanaWM/PointNav-v0", num_envs=1, autoreset_mode="NextStep", **FAST))


def test_ppo_runs_through_the_adapter(tmp_path):
    venv = SB3VecEnv(gym.make_vec("SanaWM/PointNav-v0", num_envs=4, size=64, frames_per_step=1, scene_seeds=(0, 1),
                                  max_episode_steps=16))
    model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=128, n_epochs=1, seed=0, device="cpu")
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(512)
    assert model.num_timesteps == 512
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and "rollout/success_rate" in rows[-1] and rows[-1]["rollout/success_rate"] != ""
    assert "rollout/ep_rew_mean" in rows[-1]
    venv.close()
