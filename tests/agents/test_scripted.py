"""Scripted agents: the goal-seeker reaches the goal and stops (on any backend), trajectories replay, random runs."""

import numpy as np
import pytest

from agents.common import NavActionSet, key_string_actions, make_env
from agents.rollout import evaluate, run_episode
from agents.scripted import ActionReplay, GoalSeeker, RandomAgent, TrajectoryFollower, pose_delta_action
from sanawm_env.actions import target_poses

FAST = dict(size=32, frames_per_step=1, scene_seeds=2)  # small oracle worlds from a pool of two scenes


@pytest.mark.parametrize("scene", ["indoor", "outdoor"])
def test_goal_seeker_reaches_the_goal_and_calls_stop(scene):
    env = make_env(task="pointnav", scene=scene, success_on="stop", max_episode_steps=200, max_geodesic=5.0, **FAST)
    r = run_episode(env, GoalSeeker(), seed=1)
    assert r.terminated and r.measures["success"] == 1.0, r
    assert r.measures["spl"] > 0.85 and r.measures["collisions"] == 0
    env.close()


def test_goal_seeker_numbers_do_not_depend_on_the_backend():
    rows = []
    for kw in ({}, {"backend": "model", "model": "micro"}):
        env = make_env(task="pointnav", size=32, scene_seeds=2, max_episode_steps=100, max_geodesic=3.0, **kw)
        rows.append(evaluate(env, GoalSeeker(), episodes=1, seed=3, progress=False))
        env.close()
    assert rows[0] == rows[1] and rows[0]["success"] == 1.0


def test_discrete_goal_seeker_and_random_agent_use_the_nav_actions():
    env = make_env(task="pointnav", success_on="stop", max_episode_steps=150, max_geodesic=4.0, **FAST)
    r = run_episode(env, GoalSeeker(discrete=True), seed=1)
    assert r.measures["success"] == 1.0
    steps = {tuple(a) for a in r.actions}
    assert steps <= {tuple(v) for v in NavActionSet(("stop", "forward", "left", "right")).table}
    r = run_episode(env, RandomAgent(seed=0, actions=NavActionSet()), seed=1, max_steps=20)
    assert r.steps == 20 and {tuple(a) for a in r.actions} <= {tuple(v) for v in NavActionSet().table}
    r = run_episode(env, RandomAgent(seed=0), seed=1, max_steps=5)  # the continuous action space
    assert r.actions.shape == (5, 6) and np.abs(r.actions).max() <= 1
    env.close()


def test_pose_delta_action_inverts_the_env_integration():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, 6)
    a[3] *= 0.3  # stay clear of the pitch limit
    start = np.eye(4)
    target, _ = target_poses(start[None], (a * [0.25, 0.25, 0.25, 0.17, 0.17, 0.17])[None], 1.0)
    back, clipped = pose_delta_action(start, target[0], 0.25, 0.17)
    assert not clipped and np.allclose(back, a, atol=1e-6)


def test_trajectory_follower_replays_an_env_trajectory():
    env = make_env(task="freeroam", **{**FAST, "frames_per_step": 2})
    ref = run_episode(env, ActionReplay(key_string_actions("w-8,w+right-8,d-4,s-4", 2)), seed=0, record=True)
    step_end = ref.poses[::2]  # the reset pose, then every K-th frame pose: where each step ended
    follow = TrajectoryFollower(step_end)
    r = run_episode(env, follow, seed=0, record=True)
    assert r.steps == len(step_end) - 1 and follow.clipped_steps == 0
    assert np.abs(r.poses - ref.poses).max() < 1e-4
    env.close()


def test_action_replay_stops_when_it_runs_out():
    env = make_env(task="freeroam", **FAST)
    agent = ActionReplay(np.zeros((3, 6), np.float32))
    assert run_episode(env, agent, seed=0).steps == 3 and agent.done
    with pytest.raises(ValueError, match=r"shape \(T, 6\)"):
        ActionReplay(np.zeros((3, 5)))
    env.close()
