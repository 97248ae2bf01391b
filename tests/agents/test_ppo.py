"""`sanawm train-ppo` (256 steps) saves a policy that `sanawm eval-policy` and PPOAgent load, on both backends."""

import json

import pytest

from agents.cli import main as cli

pytest.importorskip("stable_baselines3")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo")
    cli(["train-ppo", "--steps", "256", "--num-envs", "2", "--n-steps", "64", "--batch-size", "64", "--size", "36",
         "--scene-seeds", "2", "--max-geodesic", "3", "--max-episode-steps", "20", "--out", str(out), "--no-progress"])
    return out


def test_train_ppo_writes_policy_config_csv_and_curve(policy):
    for name in ("policy.zip", "config.json", "progress.csv", "learning_curve.png"):
        assert (policy / name).stat().st_size > 0, name
    cfg = json.loads((policy / "config.json").read_text())
    assert cfg["steps_done"] >= 256 and cfg["actions"] == ["forward", "left", "right"]
    assert cfg["env_kwargs"]["task"] == "pointnav" and cfg["env_kwargs"]["size"] == 36
    header = (policy / "progress.csv").read_text().splitlines()[0]
    assert "time/total_timesteps" in header and "rollout/episodes" in header


def test_eval_policy_with_baselines_writes_table_and_videos(policy, tmp_path, capsys):
    cli(["eval-policy", "--policy", str(policy / "policy.zip"), "--episodes", "2", "--baselines", "--videos", "1",
         "--frames-per-step", "1", "--out", str(tmp_path), "--no-progress"])
    result = json.loads((tmp_path / "eval.json").read_text())
    assert [r["agent"] for r in result["rows"]] == ["ppo", "random", "goal_seeker"]
    for r in result["rows"]:
        assert {"success", "spl", "soft_spl", "reward"} <= set(r) and r["episodes"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["goal_seeker_ep000.mp4", "ppo_ep000.mp4",
                                                              "random_ep000.mp4"]
    assert (tmp_path / "learning_curve.png").exists()
    assert "| ppo |" in capsys.readouterr().out


def test_the_policy_runs_on_the_model_backend(policy, tmp_path):
    from agents.ppo import PPOAgent
    from agents.rollout import run_episode

    cli(["eval-policy", "--policy", str(policy / "policy.zip"), "--episodes", "1", "--backend", "model", "--model",
         "micro", "--size", "32", "--videos", "0", "--out", str(tmp_path), "--no-progress"])
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["env_kwargs"]["backend"] == "model" and result["rows"][0]["episodes"] == 1
    agent = PPOAgent.load(policy / "policy.zip")  # 36x36 policy, 32x32 model frames: resized on the way in
    from agents.common import make_env

    env = make_env(task="pointnav", backend="model", model="micro", size=32, scene_seeds=2)
    assert run_episode(env, agent, seed=0, max_steps=3).steps == 3
    env.close()


def test_train_ppo_refuses_frames_too_small_for_the_cnn(tmp_path):
    with pytest.raises(SystemExit, match="at least 36"):
        cli(["train-ppo", "--size", "32", "--out", str(tmp_path)])


def test_nav_actions_with_stop_end_the_chosen_worlds():
    import numpy as np

    from agents.common import NavActionSet
    from agents.ppo import nav_vec_env
    from sanawm_env.sb3 import SB3VecEnv
    from sanawm_env.vector import SanaWMVectorEnv

    actions = NavActionSet("stop,forward,left,right")
    venv = SanaWMVectorEnv(num_envs=2, task="pointnav", size=32, frames_per_step=1, scene_seeds=2, success_on="stop")
    env = nav_vec_env(SB3VecEnv(venv), actions)
    env.reset()
    _, _, dones, infos = env.step(np.array([actions.index("stop"), actions.index("forward")]))
    assert dones.tolist() == [True, False] and "terminal_observation" in infos[0]
    env.close()
