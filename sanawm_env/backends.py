"""The Backend protocol: what turns camera poses into frames for N worlds at once.

Two backends share it: "oracle" (the procedural worlds ray-cast by `scenes.Renderer`) and "model" (the
streaming world model, `model.generator.StreamingGenerator`, whose first frame is the oracle's view of the
episode's start pose or a user image). The env never branches on which one it holds: it resets worlds with
their scene, start pose and intrinsics, then hands over K poses per world per step and gets K frames back.

- Frames cross the protocol as numpy uint8 (.., H, W, 3) RGB on the host; poses as float64 camera-to-world (4, 4)
  in OpenCV axes and metres; intrinsics as (fx, fy, cx, cy) in pixels of the frame.
- The env keeps the Scene of every world for the whole episode whatever the backend: the task scores poses against
  that scene's geometry, and the model backend may use the scene to render its first frame.
- `get_state(i)` / `set_state(i, s)` snapshot and restore one world (the oracle's state is tiny: the scene, the
  intrinsics and the last frame; the model's is a one-world WorldState clone), so planners can branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .scenes import RenderConfig, Renderer, Scene, SceneBatch

BACKENDS = ("oracle", "model")


@dataclass
class OracleConfig:
    height: int = 128
    width: int = 128
    frames_per_step: int = 4     # K raw frames rendered per env step
    compile: bool = False        # fuse the ray caster with torch.compile (RenderConfig.compile)
    supersample: int = 1         # 1 or 2 (RenderConfig.supersample)


@runtime_checkable
class Backend(Protocol):
    """N worlds that turn camera poses into frames. Shapes: N worlds, M reset worlds, K frames per step."""

    num_worlds: int
    frames_per_step: int
    height: int
    width: int
    device: torch.device

    def reset(self, index: np.ndarray, scenes: list[Scene], c2w: np.ndarray, intrinsics: np.ndarray,
              images: np.ndarray | None = None, seeds: np.ndarray | None = None) -> np.ndarray:
        """Start worlds `index` (M,) int in `scenes` at c2w (M, 4, 4) with intrinsics (M, 4) (fx, fy, cx, cy).

        images (M, H, W, 3) uint8 are start frames (model backend; the oracle refuses them). seeds (M,) int64 seed
        each world's own randomness (the model's sampling noise), drawn by the env from its reset seed so that runs
        replay exactly; the oracle has none and ignores them. Returns the first frames (M, H, W, 3) uint8.
        """
        ...

    def step(self, c2w: np.ndarray) -> np.ndarray:
        """c2w (N, K, 4, 4) float64 for all N worlds -> frames (N, K, H, W, 3) uint8."""
        ...

    def get_state(self, index: int) -> Any:
        """A snapshot of world `index` that `set_state` can restore (into any world)."""
        ...

    def set_state(self, index: int, state: Any) -> None:
        """Restore world `index` from a `get_state` snapshot."""
        ...

    def close(self) -> None:
        """Free resources; safe to call twice."""
        ...


def make_backend(name: str, *, num_worlds: int, height: int, width: int, frames_per_step: int = 4,
                 device: str | torch.device = "cpu", model: str = "tiny", compile: bool = False,
                 supersample: int = 1, graph: bool | None = None,
                 denoise_timesteps: Sequence[int] | None = None) -> Backend:
    """The backend called `name` for `num_worlds` worlds of `height` x `width` frames.

    `frames_per_step` is what the oracle renders per step; the model's chunk fixes it for the model backend (read
    `backend.frames_per_step`). `model` ("tiny", "micro" or a checkpoint path), `graph` (CUDA graphs; None: on
    CUDA devices) and `denoise_timesteps` (None: the checkpoint's schedule) are for the model backend, whose frame
    size is the model's.
    """
    if name == "model":  # its start frames are rendered the way the model's training clips were (checkpoint)
        return ModelBackend(num_worlds, model=model, height=height, width=width, device=device, graph=graph,
                            compile=compile, denoise_timesteps=denoise_timesteps)
    if name != "oracle":
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    cfg = OracleConfig(height=height, width=width, frames_per_step=frames_per_step, compile=compile,
                       supersample=supersample)
    return OracleBackend(num_worlds, cfg, device=device)


@dataclass
class OracleState:
    """One oracle world: nothing evolves but the pose, which the env owns."""

    scene: Scene
    intrinsics: np.ndarray   # (4,) float32
    last_frame: np.ndarray   # (H, W, 3) uint8


class OracleBackend:
    """Ground-truth frames: the N worlds' scenes in one SceneBatch, N*K cameras per `Renderer.render` call.

    The batch holds each distinct scene once and is rebuilt only when a world's scene changes (at reset or
    set_state), never per step.
    """

    def __init__(self, num_worlds: int, cfg: OracleConfig | None = None, device: str | torch.device = "cpu"):
        cfg = cfg or OracleConfig()
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if cfg.frames_per_step < 1:
            raise ValueError(f"frames_per_step must be at least 1, got {cfg.frames_per_step}")
        if cfg.height < 1 or cfg.width < 1:
            raise ValueError(f"frame size must be at least 1x1, got {cfg.height}x{cfg.width}")
        if cfg.supersample not in (1, 2):
            raise ValueError(f"supersample must be 1 or 2, got {cfg.supersample}")
        self.cfg = cfg
        self.num_worlds = num_worlds
        self.frames_per_step = cfg.frames_per_step
        self.height, self.width = cfg.height, cfg.width
        self.device = torch.device(device)
        self._render_cfg = RenderConfig(height=cfg.height, width=cfg.width, supersample=cfg.supersample,
                                        compile=cfg.compile)
        self._scenes: list[Scene | None] = [None] * num_worlds
        self._k = np.zeros((num_worlds, 4), dtype=np.float32)             # (N, 4) intrinsics
        self._last = np.zeros((num_worlds, cfg.height, cfg.width, 3), np.uint8)  # (N, H, W, 3)
        self._renderer: Renderer | None = None
        self._scene_index: torch.Tensor | None = None  # (N,) int64, world -> scene of the batch
        self._dirty = True
        self.batch_builds = 0  # how many times the SceneBatch was (re)built; tests and benchmarks read it
        self.closed = False

    # ------------------------------------------------------------------ protocol
    def reset(self, index, scenes, c2w, intrinsics, images=None, seeds=None) -> np.ndarray:
        self._check_open()
        if images is not None:
            raise ValueError("the oracle backend renders every frame from the scene and takes no start image; "
                             "start images are for backend='model'")
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        m = len(idx)
        if m == 0 or idx.min() < 0 or idx.max() >= self.num_worlds or len(np.unique(idx)) != m:
            raise ValueError(f"index must hold distinct worlds in [0, {self.num_worlds}), got {idx.tolist()}")
        if len(scenes) != m or not all(isinstance(s, Scene) for s in scenes):
            raise ValueError(f"scenes must be a list of {m} Scene objects, got {[type(s).__name__ for s in scenes]}")
        c2w = np.asarray(c2w, dtype=np.float64)
        k = np.asarray(intrinsics, dtype=np.float32)
        if c2w.shape != (m, 4, 4):
            raise ValueError(f"c2w must have shape ({m}, 4, 4), got {c2w.shape}")
        if k.shape != (m, 4):
            raise ValueError(f"intrinsics must have shape ({m}, 4), got {k.shape}")
        if seeds is not None and np.shape(seeds) != (m,):
            raise ValueError(f"seeds must have shape ({m},), got {np.shape(seeds)}")
        for i, s in zip(idx, scenes):
            if self._scenes[i] is not s:
                self._scenes[i] = s
                self._dirty = True
        self._k[idx] = k
        frames = self._render(c2w, idx)  # (M, H, W, 3)
        self._last[idx] = frames
        return frames

    def step(self, c2w) -> np.ndarray:
        self._check_open()
        c2w = np.asarray(c2w, dtype=np.float64)
        n, k = self.num_worlds, self.frames_per_step
        if c2w.shape != (n, k, 4, 4):
            raise ValueError(f"c2w must have shape ({n}, {k}, 4, 4) (all worlds, K poses each), got {c2w.shape}")
        missing = [i for i, s in enumerate(self._scenes) if s is None]
        if missing:
            raise RuntimeError(f"reset every world before step; worlds {missing} were never reset")
        frames = self._render(c2w.reshape(n * k, 4, 4), np.repeat(np.arange(n), k))
        frames = frames.reshape(n, k, self.height, self.width, 3)  # (N, K, H, W, 3)
        self._last[:] = frames[:, -1]
        return frames

    def get_state(self, index: int) -> OracleState:
        self._check_open()
        i = self._world(index)
        if self._scenes[i] is None:
            raise RuntimeError(f"world {i} was never reset; nothing to snapshot")
        return OracleState(scene=self._scenes[i], intrinsics=self._k[i].copy(), last_frame=self._last[i].copy())

    def set_state(self, index: int, state: OracleState) -> None:
        self._check_open()
        i = self._world(index)
        if not isinstance(state, OracleState):
            raise TypeError(f"state must be an OracleState from OracleBackend.get_state, got {type(state).__name__}")
        if state.last_frame.shape != (self.height, self.width, 3):
            raise ValueError(f"state holds {state.last_frame.shape} frames, this backend renders "
                             f"{(self.height, self.width, 3)}")
        if self._scenes[i] is not state.scene:
            self._scenes[i] = state.scene
            self._dirty = True
        self._k[i] = state.intrinsics
        self._last[i] = state.last_frame

    def close(self) -> None:
        self._renderer = None
        self._scenes = [None] * self.num_worlds
        self.closed = True

    # ------------------------------------------------------------------ internals
    def _world(self, index) -> int:
        i = int(index)
        if not 0 <= i < self.num_worlds:
            raise ValueError(f"world index must be in [0, {self.num_worlds}), got {index}")
        return i

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this backend was closed")

    def _sync(self) -> None:
        """Rebuild the SceneBatch from the worlds' distinct scenes (only after a scene changed)."""
        live = [s for s in self._scenes if s is not None]
        unique, slot = [], {}
        for s in live:
            if id(s) not in slot:
                slot[id(s)] = len(unique)
                unique.append(s)
        index = [slot[id(s)] if s is not None else 0 for s in self._scenes]
        batch = SceneBatch.stack(unique, self.device)
        if self._renderer is None:
            self._renderer = Renderer(batch, self._render_cfg, device=self.device)
        else:
            self._renderer.batch = batch
        self._scene_index = torch.tensor(index, dtype=torch.int64, device=self.device)
        self._dirty = False
        self.batch_builds += 1

    def _render(self, c2w: np.ndarray, worlds: np.ndarray) -> np.ndarray:
        """c2w (B, 4, 4) of cameras in `worlds` (B,) -> (B, H, W, 3) uint8."""
        if self._dirty:
            self._sync()
        w = torch.from_numpy(worlds).to(self.device)
        out = self._renderer.render(torch.from_numpy(c2w).to(self.device), torch.from_numpy(self._k[worlds]),
                                    self._scene_index[w])
        return out.rgb.cpu().numpy()


@dataclass
class ModelWorldState:
    """One model world: its slice of the generator's WorldState (caches, pose, RNG) and its scene."""

    world: Any               # model.state.WorldState with batch 1
    scene: Scene
    intrinsics: np.ndarray   # (4,) float32
    last_frame: np.ndarray   # (H, W, 3) uint8


def model_frame_size(model: str = "tiny") -> int:
    """The square frame size a world model makes ("tiny", "micro" or a checkpoint path), without loading it."""
    from model.generator import StreamingGenerator

    h, w = StreamingGenerator.frame_hw_of(model)
    if h != w:
        raise ValueError(f"model {model!r} makes {h}x{w} frames; the env needs square frames")
    return h


class ModelBackend:
    """Generated frames: the streaming world model steps all N worlds as one batch.

    A world starts from a first frame: the start image given at reset, or the oracle's view of the start pose
    in the episode's scene (so the model continues a real place). Its poses stay metric: the generator
    conditions on them relative to the first frame's pose, and the env scores the task in the same scene.
    """

    def __init__(self, num_worlds: int, model: str = "tiny", height: int | None = None, width: int | None = None,
                 device: str | torch.device = "cpu", graph: bool | None = None, compile: bool = False,
                 supersample: int | None = None, denoise_timesteps: Sequence[int] | None = None):
        from model.generator import StreamingGenerator  # the model is only imported when asked for

        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        # The step body is replayed. On CPU: traced (StreamingGenerator trace=True), or with `compile` fused by
        # torch.compile (its first step compiles for minutes). On CUDA: a CUDA graph unless graph=False (8.75x eager
        # for tiny on an H100), with `compile` its elementwise hot spots as Triton kernels (fuse=True).
        cuda = torch.device(device).type == "cuda"
        graph = cuda if graph is None else bool(graph)
        self.gen = StreamingGenerator.from_pretrained(model, device=device, batch_size=num_worlds, graph=graph,
                                                      trace=not cuda and not compile, compile=not cuda and compile,
                                                      fuse=cuda and compile, denoise_timesteps=denoise_timesteps)
        self.height, self.width = self.gen.frame_hw
        if (height, width) not in ((None, None), (self.height, self.width)):
            raise ValueError(f"model {model!r} makes {self.height}x{self.width} frames; the env asked for "
                             f"{height}x{width} (pass size={self.height})")
        self.num_worlds = num_worlds
        self.frames_per_step = self.gen.frames_per_step
        self.device = self.gen.device
        # start frames: rendered as the training clips were (checkpoint metadata), else as asked, else plain
        supersample = supersample or int(self.gen.render.get("supersample", 1))
        self.oracle = OracleBackend(num_worlds, OracleConfig(self.height, self.width, 1, compile, supersample),
                                    device=device)
        self.state = self.gen.new_state(num_worlds)
        self._started = np.zeros(num_worlds, dtype=bool)
        self._last = np.zeros((num_worlds, self.height, self.width, 3), np.uint8)
        self.closed = False

    def reset(self, index, scenes, c2w, intrinsics, images=None, seeds=None) -> np.ndarray:
        self._check_open()
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        m = len(idx)
        if images is None:
            images = self.oracle.reset(idx, scenes, c2w, intrinsics)  # validates index, scenes, c2w, intrinsics
        else:
            images = np.asarray(images)
            if images.dtype != np.uint8 or images.shape != (m, self.height, self.width, 3):
                raise ValueError(f"start images must be uint8 of shape ({m}, {self.height}, {self.width}, 3), "
                                 f"got {images.dtype} {images.shape}")
            self.oracle.reset(idx, scenes, c2w, intrinsics)
        mask = np.zeros(self.num_worlds, dtype=bool)
        mask[idx] = True
        order = np.argsort(idx)  # reset_rows takes the restarted worlds in index order
        self.gen.reset_rows(self.state, torch.from_numpy(mask), torch.from_numpy(images[order]),
                            intrinsics=torch.from_numpy(np.asarray(intrinsics, np.float32)[order]),
                            seed=None if seeds is None else np.asarray(seeds)[order],
                            c2w0=torch.from_numpy(np.asarray(c2w, np.float64)[order]))
        self._started[idx] = True
        self._last[idx] = images
        return images

    def step(self, c2w) -> np.ndarray:
        self._check_open()
        if not self._started.all():
            raise RuntimeError(f"reset every world before step; worlds {np.flatnonzero(~self._started).tolist()} "
                               "were never reset")
        c2w = np.asarray(c2w, dtype=np.float64)
        n, k = self.num_worlds, self.frames_per_step
        if c2w.shape != (n, k, 4, 4):
            raise ValueError(f"c2w must have shape ({n}, {k}, 4, 4) (all worlds, K poses each), got {c2w.shape}")
        frames = self.gen.step(self.state, torch.from_numpy(c2w)).cpu().numpy()  # (N, K, H, W, 3)
        self._last[:] = frames[:, -1]
        return frames

    def get_state(self, index: int) -> ModelWorldState:
        self._check_open()
        i = int(index)
        if not (0 <= i < self.num_worlds) or not self._started[i]:
            raise RuntimeError(f"world {index} was never reset (or is out of range); nothing to snapshot")
        o = self.oracle.get_state(i)
        return ModelWorldState(world=self.state.select([i]), scene=o.scene, intrinsics=o.intrinsics,
                               last_frame=self._last[i].copy())

    def set_state(self, index: int, state: ModelWorldState) -> None:
        self._check_open()
        i = int(index)
        if not isinstance(state, ModelWorldState):
            raise TypeError(f"state must be a ModelWorldState from ModelBackend.get_state, got {type(state).__name__}")
        if not 0 <= i < self.num_worlds:
            raise ValueError(f"world index must be in [0, {self.num_worlds}), got {index}")
        self.state.assign_rows_([i], state.world)
        self.oracle.set_state(i, OracleState(state.scene, state.intrinsics, state.last_frame))
        self._started[i] = True
        self._last[i] = state.last_frame

    def close(self) -> None:
        self.oracle.close()
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this backend was closed")
