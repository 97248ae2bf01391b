"""stable-baselines3 adapter: a SanaWMVectorEnv (or any SAME_STEP gymnasium VectorEnv) as an SB3 VecEnv.

SB3 ships no adapter for gymnasium's VectorEnv (DLR-RM/stable-baselines3#1568, #1745); this one gives SB3 what its
own DummyVecEnv would:

- same-step reset: a finished world is reset inside the step that ended it (the vector env must use
  AutoresetMode.SAME_STEP), and the returned observation is already the new episode's;
- per-world info dicts; at an episode end they hold the final step's info plus `terminal_observation` (the last
  observation of the finished episode), `TimeLimit.truncated` (truncated and not terminated), `is_success` (tasks
  that measure success, for SB3's `rollout/success_rate`) and `episode` = {"r", "l", "t"} (return, length,
  seconds), as a Monitor would;
- reset infos in `reset_infos`, seeds from `seed()` and options from `set_options()` used at the next reset.

    from stable_baselines3 import PPO
    envs = SB3VecEnv(gymnasium.make_vec("SanaWM/PointNav-v0", num_envs=8, size=64))
    PPO("MultiInputPolicy", envs).learn(10_000)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from gymnasium.error import DependencyNotInstalled
from gymnasium.vector import AutoresetMode, VectorEnv

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices
except ImportError as e:  # the `rl` extra
    raise DependencyNotInstalled('stable-baselines3 is not installed; run `pip install "sanawm[rl]"`') from e

_FINAL = ("final_obs", "final_info")


class SB3VecEnv(VecEnv):
    """An SB3 VecEnv over one gymnasium VectorEnv with SAME_STEP autoreset (see the module docstring).

    Args:
        venv: the vector env, e.g. `gymnasium.make_vec("SanaWM/PointNav-v0", num_envs=8)`.
        episode_stats: add `info["episode"]` at episode ends (as SB3's Monitor would), so `rollout/ep_rew_mean`
            is logged without a VecMonitor.
    """

    def __init__(self, venv: VectorEnv, episode_stats: bool = True):
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"SB3 expects same-step resets: make the vector env with autoreset_mode=SAME_STEP, got "
                             f"{mode}")
        self.venv = venv
        self.episode_stats = episode_stats
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._t0 = np.full(self.num_envs, time.time())

    # ------------------------------------------------------------------ VecEnv API
    def reset(self):
        seeds = list(self._seeds)
        options = [dict(o) for o in self._options]
        seed = None if all(s is None for s in seeds) else seeds
        if all(o == options[0] for o in options):
            obs, infos = self.venv.reset(seed=seed, options=options[0] or None)
            self.reset_infos = [_row(infos, i) for i in range(self.num_envs)]
        else:  # different options per world: one masked reset per distinct set
            groups: list[tuple[dict, list[int]]] = []
            for i, o in enumerate(options):
                for opts, idx in groups:
                    if opts == o:
                        idx.append(i)
                        break
                else:
                    groups.append((o, [i]))
            for opts, idx in groups:
                mask = np.zeros(self.num_envs, dtype=bool)
                mask[idx] = True
                obs, part = self.venv.reset(seed=seed, options={**opts, "reset_mask": mask})
                for i in idx:
                    self.reset_infos[i] = _row(part, i)
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._t0[:] = time.time()
        return _obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(actions)")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        self._returns += rewards
        self._lengths += 1
        infos = []
        for i in range(self.num_envs):
            if dones[i]:
                d = _row(info["final_info"], i) if "final_info" in info else _row(info, i)
                d["terminal_observation"] = info["final_obs"][i] if "final_obs" in info else None
                d["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                if "success" in d:
                    d["is_success"] = bool(d["success"] > 0)
                if self.episode_stats:
                    now = time.time()
                    d["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]),
                                    "t": round(now - self._t0[i], 6)}
                    self._returns[i], self._lengths[i], self._t0[i] = 0.0, 0, now
                self.reset_infos[i] = _row(info, i)
            else:
                d = _row(info, i)
            infos.append(d)
        return _obs(obs), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self):
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)  # the worlds share one env object

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        out = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [out for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _obs(obs):
    return dict(obs) if isinstance(obs, dict) else obs


def _row(info: dict[str, Any], i: int) -> dict[str, Any]:
    """World i's entries of a gymnasium dict-of-arrays info (keys whose `_key` mask is set), as Python scalars."""
    out = {}
    for key, value in info.items():
        if key.startswith("_") or key in _FINAL:
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, dict):
            out[key] = _row(value, i)
            continue
        x = value[i]
        out[key] = x.item() if isinstance(x, np.generic) else x
    return out
