"""SanaWMVectorEnv: N worlds in one backend batch on one device (not N processes), as a gymnasium VectorEnv.

- `gymnasium.make_vec("SanaWM/PointNav-v0", num_envs=N)` returns it (registered as the ids' vector_entry_point).
- It runs the same `WorldBatch` as the single env, so world i with seed s behaves exactly like `SanaWMEnv` reset
  with seed s and given the same actions (a test checks it). `reset(seed=s)` seeds world i with s + i, like
  gymnasium's SyncVectorEnv; each world then keeps its own generator across autoresets.
- Autoreset follows gymnasium 1.x (`metadata["autoreset_mode"]`): SAME_STEP (default, what SB3 and DIAMOND expect)
  resets a finished world inside the step that ended it and puts the last transition in `info["final_obs"]` (an
  object array of per-world observation dicts) and `info["final_info"]` (a dict of arrays with `_key` masks);
  NEXT_STEP resets it on the following step (reward 0, its action ignored); DISABLED never resets: the caller
  resets finished worlds with `reset(options={"reset_mask": mask})`, and stepping a finished world raises.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .actions import action_space, check_actions, keys_to_action
from .env import VIDEO_FPS, EnvConfig, WorldBatch, WorldsView, split_kwargs
from .tasks import make_task


class SanaWMVectorEnv(WorldsView, VectorEnv):
    """N SanaWM worlds stepped as one batch; see `SanaWMEnv` for the task, spaces, rewards and info keys.

    Args:
        num_envs: N, the number of worlds.
        max_episode_steps: truncate each world's episode after this many steps (None: never).
        render_mode: "rgb_array" (render() returns the N last frames) or "human" (one tiled window).
        task: "freeroam", "pointnav", "imagenav" or "explore" (set by the registered id).
        autoreset_mode: an `AutoresetMode` (or its value); SAME_STEP by default.
        **kwargs: the same arguments as `SanaWMEnv` (EnvConfig fields and the task's options).

    Example:
        >>> envs = gymnasium.make_vec("SanaWM/PointNav-v0", num_envs=8, size=64)  # doctest: +SKIP
        >>> obs, infos = envs.reset(seed=0)  # obs["rgb"]: (8, 64, 64, 3) uint8  # doctest: +SKIP
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": VIDEO_FPS // 4,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
                 task: str = "freeroam", autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP, **kwargs):
        env_kw, task_kw = split_kwargs(kwargs)
        if "max_episode_steps" in env_kw:
            raise TypeError("pass max_episode_steps once (as the vector env's own argument)")
        self.config = EnvConfig(task=task, max_episode_steps=max_episode_steps, **env_kw)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got "
                             f"{render_mode!r}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.task = make_task(task, **task_kw)
        self._worlds = WorldBatch(self.config, num_envs, self.task)
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode,
                         "render_fps": max(1, round(VIDEO_FPS / self._worlds.k))}
        self.action_config = self._worlds.action_cfg
        self.single_action_space = action_space()
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = spaces.Dict(self._worlds.obs_spaces)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._autoreset = np.zeros(num_envs, dtype=bool)  # NEXT_STEP: reset these on the next step
        self._viewer = None

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all worlds, or those in `options["reset_mask"]` ((N,) bool).

        Args:
            seed: None (keep each world's generator), an int s (world i gets s + i) or a list of N ints / None.
            options: `reset_mask` plus the single env's reset options (scene_seed, start_pose, goal, intrinsics,
                start_image), applied to every world being reset.

        Returns:
            (obs, infos): the batched observation of all N worlds; infos of the reset worlds with `_key` masks.
        """
        self._check_open()
        n = self.num_envs
        super().reset(seed=seed if isinstance(seed, (int, np.integer)) else None)
        if seed is None:
            seeds = [None] * n
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed as a list must hold num_envs={n} values, got {len(seeds)}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(n, dtype=bool)
        else:
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
                raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({n},), got "
                                 f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {getattr(mask, 'shape', '')}")
            if not mask.any():
                raise ValueError("options['reset_mask'] must select at least one world")
        index = np.flatnonzero(mask)
        rngs = []
        for i in index:
            if seeds[i] is not None:
                rngs.append(seeding.np_random(int(seeds[i]))[0])
            else:
                rngs.append(self._rngs[i] if self._rngs[i] is not None else seeding.np_random(None)[0])
        reset_infos = self._worlds.reset(index, rngs, options)  # validates everything before changing a world
        for i, rng in zip(index, rngs):
            self._rngs[i] = rng
        self._autoreset[index] = False
        infos: dict[str, Any] = {}
        for i, info in zip(index, reset_infos):
            infos = self._add_info(infos, info, i)
        if self.render_mode == "human":
            self.render()
        return self._obs(), infos

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """Step all N worlds with actions (N, 6); returns (obs, rewards, terminations, truncations, infos)."""
        self._check_open()
        w = self._worlds
        if not w.started.all():
            raise ResetNeeded(f"worlds {np.flatnonzero(~w.started).tolist()} were never reset; call reset() first")
        a, clipped = check_actions(actions, self.num_envs, self.config.clip_actions)
        hold = None
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            hold = self._autoreset.copy()
        elif w.done.any() and self.autoreset_mode == AutoresetMode.DISABLED:
            raise ResetNeeded(f"worlds {np.flatnonzero(w.done).tolist()} have finished their episode; with "
                              f"autoreset DISABLED reset them with reset(options={{'reset_mask': mask}})")
        reward, terminated, truncated, step_info = w.step(a, clipped, hold)
        infos = {}
        for key, value in step_info.items():
            infos[key], infos[f"_{key}"] = value, np.ones(self.num_envs, dtype=bool)
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            done = terminated | truncated
            if done.any():
                index = np.flatnonzero(done)
                obs = w.obs
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i in index:
                    final_obs[i] = {k: v[i] for k, v in obs.items()}
                final_info = {}
                for key, value in step_info.items():
                    kept = np.zeros_like(value)
                    kept[done] = value[done]
                    final_info[key], final_info[f"_{key}"] = kept, done.copy()
                infos["final_obs"], infos["_final_obs"] = final_obs, done.copy()
                infos["final_info"], infos["_final_info"] = final_info, done.copy()
                self._reset_worlds(index, infos)
        elif self.autoreset_mode == AutoresetMode.NEXT_STEP:
            if hold.any():
                index = np.flatnonzero(hold)
                reward[hold] = 0.0
                terminated[hold] = False
                truncated[hold] = False
                for key in step_info:
                    infos[key][hold] = 0
                    infos[f"_{key}"][hold] = False
                self._reset_worlds(index, infos)
            self._autoreset = terminated | truncated
        if self.render_mode == "human":
            self.render()
        return self._obs(), reward, terminated, truncated, infos

    def _reset_worlds(self, index: np.ndarray, infos: dict[str, Any]) -> None:
        """Autoreset worlds `index` from their own generators; their reset infos overwrite `infos` rows."""
        rngs = [self._rngs[i] for i in index]
        for i, info in zip(index, self._worlds.reset(index, rngs)):
            self._add_info(infos, info, i)

    def _obs(self) -> dict[str, np.ndarray]:
        return dict(self._worlds.obs)

    # ------------------------------------------------------------------ extras
    def request_stop(self, mask) -> None:
        """Make the next step a stop for the worlds in `mask` ((N,) bool): they stay put and their episode ends."""
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != (self.num_envs,):
            raise ValueError(f"mask must be a bool array of shape ({self.num_envs},), got {m.dtype} {m.shape}")
        self._worlds.stop |= m

    def get_state(self, index: int):
        """Snapshot world `index` (see `SanaWMEnv.get_state`)."""
        self._check_open()
        return self._worlds.get_state(self._index(index))

    def set_state(self, index: int, state) -> None:
        """Restore world `index` from a snapshot (of any world: copy world i into j to branch a plan)."""
        self._check_open()
        i = self._index(index)
        self._worlds.set_state(i, state)
        self._autoreset[i] = False

    def _index(self, index) -> int:
        i = int(index)
        if not 0 <= i < self.num_envs:
            raise ValueError(f"world index must be in [0, {self.num_envs}), got {index}")
        return i

    def get_keys_to_action(self):
        """The single env's keyboard map (actions.KEYBOARD)."""
        return keys_to_action()

    def render(self) -> tuple[np.ndarray, ...] | None:
        """"rgb_array": the N last frames; "human": them tiled in one window."""
        if self.render_mode is None:
            return None
        frames = tuple(self._worlds.obs["rgb"].copy())
        if self.render_mode == "rgb_array":
            return frames
        from .viewer import Viewer

        if self._viewer is None:
            self._viewer = Viewer(title=f"sanawm {self.config.task} x{self.num_envs}")
        self._viewer.show(tile(np.stack(frames)))
        return None

    def close_extras(self, **kwargs):
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None
        self._worlds.close()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this vector env was closed; make a new one")


def tile(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> one image with the frames on a near-square grid (black where the grid has no frame)."""
    n, h, w, c = frames.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    out = np.zeros((rows * h, cols * w, c), dtype=frames.dtype)
    for i, f in enumerate(frames):
        r, q = divmod(i, cols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = f
    return out
