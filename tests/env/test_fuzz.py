"""Hypothesis fuzz: random actions with random resets never raise except for invalid actions, which raise a
ValueError naming the problem and leave the env working; clipping; step before reset; double close."""

import math

import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanawm_env.env import SanaWMEnv

ENV = {}


def env_for(task: str, clip: bool = True) -> SanaWMEnv:
    """One env per task, shared across examples (building one is cheap, but scenes are cached per process)."""
    key = (task, clip)
    if key not in ENV:
        ENV[key] = SanaWMEnv(task=task, size=32, frames_per_step=1, scene_seeds=(0, 1), max_episode_steps=6,
                             clip_actions=clip)
    return ENV[key]


finite = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, width=32)
valid_action = st.lists(finite, min_size=6, max_size=6).map(lambda v: np.array(v, np.float32))
bad_value = st.sampled_from([math.nan, math.inf, -math.inf])
nonfinite_action = st.tuples(valid_action, st.integers(0, 5), bad_value).map(
    lambda t: np.where(np.arange(6) == t[1], t[2], t[0]).astype(np.float32))
wrong_shape = st.sampled_from([(5,), (7,), (1, 6), (6, 1), (2, 3), ()]).map(
    lambda s: np.full(s, 0.5, np.float32))
op = st.one_of(
    st.tuples(st.just("step"), valid_action),
    st.tuples(st.just("nonfinite"), nonfinite_action),
    st.tuples(st.just("shape"), wrong_shape),
    st.tuples(st.just("reset"), st.one_of(st.none(), st.integers(0, 2**31 - 1))),
    st.tuples(st.just("stop"), st.none()),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task=st.sampled_from(["freeroam", "pointnav", "imagenav", "explore"]), seed=st.integers(0, 1000),
       ops=st.lists(op, min_size=1, max_size=10))
def test_random_rollouts_only_reject_invalid_actions(task, seed, ops):
    env = env_for(task)
    obs, _ = env.reset(seed=seed)
    done = False
    for kind, arg in ops:
        if kind == "reset":
            obs, _ = env.reset(seed=arg)
            done = False
        elif kind == "stop":
            if done:
                continue
            env.request_stop()
            obs, _, term, trunc, info = env.step(np.zeros(6, np.float32))
            assert term and info["path_length"] >= 0.0
            done = True
        elif done:
            with pytest.raises(ResetNeeded):
                env.step(np.zeros(6, np.float32))
            obs, _ = env.reset()
            done = False
        elif kind == "step":
            obs, reward, term, trunc, info = env.step(arg)
            assert env.observation_space.contains(obs)
            assert math.isfinite(reward)
            assert info["clipped"] == bool((np.abs(arg) > 1.0).any())
            done = term or trunc
        else:
            before = env.get_state()
            with pytest.raises(ValueError, match="NaN or Inf" if kind == "nonfinite" else r"shape \(6,\)"):
                env.step(arg)
            after = env.get_state()  # nothing moved
            assert np.array_equal(before.pose, after.pose) and before.steps == after.steps
            assert np.array_equal(before.obs["rgb"], after.obs["rgb"])
    if not done:  # and it still works
        obs, *_ = env.step(np.zeros(6, np.float32))
        assert env.observation_space.contains(obs)


@settings(max_examples=15, deadline=None)
@given(action=st.lists(st.floats(-2.0, 2.0, width=32), min_size=6, max_size=6))
def test_out_of_range_actions_raise_without_clipping(action):
    env = env_for("freeroam", clip=False)
    env.reset(seed=0)
    a = np.array(action, np.float32)
    if (np.abs(a) > 1.0).any():
        with pytest.raises(ValueError, match=r"out of range \[-1, 1\]"):
            env.step(a)
    else:
        _, _, _, _, info = env.step(a)
        assert info["clipped"] is False


def test_step_before_reset_and_double_close():
    env = SanaWMEnv(task="pointnav", size=32, frames_per_step=1, scene_seeds=(0,))
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(np.zeros(6, np.float32))
    with pytest.raises(ResetNeeded):
        env.request_stop()
    env.close()
    env.close()
