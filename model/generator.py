"""StreamingGenerator: the world model as a stepper with a persistent WorldState.

    gen = StreamingGenerator.from_pretrained("tiny" | "micro" | path, device=..., dtype=..., batch_size=B)
    state = gen.reset(first_frames, intrinsics)      # uint8 (B, H, W, 3); caches written from the clean latent
    frames = gen.step(state, c2w)                    # c2w (B, K, 4, 4) poses of the chunk's K raw frames
    branch = state.clone(); state.reset_(mask, first_frames=...); state.select(idx)

One step (DESIGN.md §2-3): the chunk's poses become camera conditioning relative to the first frame (and, for
`warp_condition` models, the state's last clean latent, or in pixel space its last decoded frame re-encoded,
reprojected into the new views, model/warp.py); noise
comes from the state's counter RNG; the few denoising passes read the caches only; one clean pass at t = 0 writes
them (GDN states, conv tails, K/V slots); the causal VAE decodes the chunk from its own cache.
With 1-latent chunks (`defer_clean`: tiny, micro) a chunk's clean pass waits in the state (`pending_*`) and runs in
the next step, in one model call with that step's first denoising pass: a streamed pair, whose per-token ops (most
of a pass) run once for both chunks. The maths is the clean pass's, one step later; the step needs one model call
per denoising pass (measured on the tiny trace: 9 % less CPU a step, and 1.3x faster with another process on one
of the two cores; `benchmarks/README.md`).
Everything in a step has static shapes and no host synchronisation, so on CUDA (`graph=True`) the whole
step is captured once as a CUDA graph and replayed (on CPU, `trace=True` replays a torch.jit trace of the same
body). The state being stepped owns the captured buffers, so stepping it again copies nothing; stepping another
state (a fork, a new reset) moves ownership with one copy out and one in, and never recaptures.
`RecomputeGenerator` is the naive baseline and test oracle: it recomputes the whole visible context every pass
with the full chunk-causal forward.
"""

from __future__ import annotations

import contextlib
import types
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .camera import _plucker_frames, scale_intrinsics, se3_inverse
from .checkpoint import load_checkpoint, metadata, read_config, read_state_dict
from .config import get_config
from .fused import SCOPES
from .parallel import beside, halved_threads, join
from .schedule import distilled_sigmas
from .state import BlockCache, WorldState, counter_normal
from .trace_fold import specialize
from .transformer import SanaWMTransformer, build_model
from .upscale import FrameUpscaler, load_upscaler, upscaler_config, upscaler_path
from .vae import CausalVAE, vae_config
from .warp import WarpDepth, stack_sources, warp_chunks, warp_frames, warp_latents

WEIGHTS = Path(__file__).parent / "weights"
SAMPLERS = ("euler", "renoise")


def _dit_path(name: str) -> Path:
    """"tiny" -> the shipped DiT file; anything else is a path."""
    return WEIGHTS / "tiny_dit.safetensors" if name == "tiny" else Path(name)


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x
    raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def micro_model(**overrides) -> tuple[SanaWMTransformer, CausalVAE]:
    """The seeded random `micro` model and VAE of the tests (config fields replaced by `overrides`): random
    everywhere, so every branch matters."""
    torch.manual_seed(0)
    model = build_model(get_config("micro", **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model, CausalVAE(vae_config("micro"))


def _check_backend(arg: str, name: str, expected: str, given) -> None:
    """A torch.compile backend name that dynamo knows, or a ValueError naming the argument."""
    try:
        torch._dynamo.lookup_backend(name)
    except Exception as e:
        raise ValueError(f"{arg}: expected {expected}, got {given!r} ({e})") from None


class StreamingGenerator:
    """Streams B worlds through a SanaWMTransformer and a causal VAE; all per-world state lives in WorldState."""

    def __init__(self, model: SanaWMTransformer, vae: CausalVAE, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 1, graph: bool = False,
                 sampler: str = "euler", trace: bool = False, render: dict | None = None,
                 denoise_timesteps: Sequence[int] | None = None, compile: bool | str = False,
                 specialize: bool = True, fuse: bool | str | Callable = False, fuse_scope: str = "ops",
                 visible_noise: bool = True, upscaler: FrameUpscaler | None = None):
        """denoise_timesteps: the per-step schedule, falling to 0 (default: the checkpoint's `cfg.denoise_timesteps`);
        one pass fewer took 28 % off the traced CPU step (`benchmarks/step_latency.py`), at the quality
        `benchmarks/fidelity.py` measures.
        Three ways to replay a step without Python, one at a time: `graph` (CUDA graph), `trace` (torch.jit, CPU)
        and `compile` (CPU: the step body fused by torch.compile; True is the inductor backend, a string names
        another). Compiled, a tiny step ran 1.2-1.4x the trace on the 2-core CPU until the trace was specialised and the
        clean pass deferred (fourteenth session: 1.01x; `benchmarks/README.md`), after a
        first step that compiles for minutes (6-8 cold, 40-80 s from inductor's on-disk cache); it falls back to the
        trace where it cannot compile (no C++ compiler). `specialize` folds the trace's shape arithmetic and no-op
        casts and slices for the one layout it replays (model/trace_fold.py); False keeps the plain trace, the
        reference.
        fuse (CUDA): the blocks' elementwise hot spots as compiled Triton kernels (model/fused.py), eager or inside the
        graph; the first steps compile them (about 15 s for tiny, 50 s for the published preset on an H100). A string
        or callable names another torch.compile backend (the CPU tests use "aot_eager"). fuse_scope "ops" compiles
        each hot function alone; "block" compiles each block's whole forward, the glue between them included (one
        compiled forward per kind of block, shared by all of them). The kernels are the model's: generators built on
        one model object use the last one's choice.
        visible_noise: the sampler's noise projected onto the part of each latent patch that the patch embedding sees
        (`PatchEmbed.visible_projector`). A no-op where it sees all of it (64 values per patch of tiny64 and the
        published preset); where it does not (tiny128: 256 values, 192 channels), the unseen noise would pass through
        x0 = x - sigma * v into the frames as coloured speckle. The model's outputs are the same either way.
        upscaler: a last decoder stage (model/upscale.py) that hands out frames `scale` times the model's size. First
        frames and intrinsics are then given at that size (`frame_hw`); first frames are area-averaged to the model's
        size (`model_hw`), at which everything inside the step stays, the pixel-space warps included."""
        cfg = model.cfg
        self.device = torch.device(device)
        self.graph, self.trace, self.specialize = bool(graph), bool(trace), bool(specialize)
        self.compile = "inductor" if compile is True else (compile or None)
        if self.compile is not None and not isinstance(self.compile, str):
            raise ValueError(f"compile must be a bool or a torch.compile backend name, got {compile!r}")
        if sum((self.graph, self.trace, self.compile is not None)) > 1:
            raise ValueError(f"graph, trace and compile are three ways to replay a step; pick one (got graph={graph}, "
                             f"trace={trace}, compile={compile!r})")
        if self.graph and self.device.type != "cuda":
            raise ValueError(f"graph=True needs a CUDA device, got {self.device}")
        if self.compile and self.device.type != "cpu":
            raise ValueError(f"compile is the CPU replay; on {self.device} use graph=True")
        self.fuse = "inductor" if fuse is True else (fuse or None)
        if self.fuse == "inductor" and self.device.type != "cuda":
            raise ValueError(f"fuse=True compiles Triton kernels for a CUDA device, got {self.device} (on CPU: "
                             "trace=True or compile=True)")
        if self.fuse is not None and (self.trace or self.compile):
            raise ValueError(f"fuse runs compiled kernels eager or in a CUDA graph; it does not combine with trace or "
                             f"compile (got fuse={fuse!r}, trace={trace}, compile={compile!r})")
        if fuse_scope not in SCOPES:
            raise ValueError(f"fuse_scope must be one of {SCOPES}, got {fuse_scope!r}")
        self.fuse_scope = fuse_scope
        if isinstance(self.fuse, str):
            _check_backend("fuse", self.fuse, "a bool, a torch.compile backend name or callable", fuse)
        if self.compile:
            _check_backend("compile", self.compile, "True or a torch.compile backend name", compile)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if vae.spatial_factor != cfg.vae_spatial or vae.temporal_factor != cfg.vae_temporal or \
                vae.latent_channels != cfg.in_channels:
            raise ValueError(f"VAE ({vae.spatial_factor}x, {vae.temporal_factor}t, {vae.latent_channels} ch) does not "
                             f"match the model ({cfg.vae_spatial}x, {cfg.vae_temporal}t, {cfg.in_channels} ch)")
        self.cfg = cfg
        self._depth = WarpDepth.of(cfg)   # where the warps put each pixel (model/warp.py), fixed with the config
        self.dtype = dtype
        # 1-latent chunks: a chunk's clean pass runs in the next step, in one call with that step's first denoising
        # pass (a streamed pair, model/attention.py), so the per-token ops of both run once
        self.defer_clean = cfg.chunk_frames == 1
        self.model = model.to(self.device, dtype).eval()
        for blk in self.model.blocks:  # inference: one input matmul per attention instead of seven
            blk.attn.fuse_projections()
        self.model.fuse_kernels(self.fuse, fuse_scope)
        projector = self.model.x_embedder.visible_projector() if visible_noise else None
        # in the noise's dtype, so the step casts nothing
        self._noise_projector = None if projector is None else projector.to(self.device, dtype)
        self.vae = vae.to(self.device).eval()
        self.upscaler = None if upscaler is None else upscaler.to(self.device).eval()
        # The encoder's state after the pad frames of every image (weights only): images encode from it.
        self._prefix = self.vae.image_prefix(cfg.height, cfg.width)
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.render = dict(render or {})   # how the training frames were rendered (checkpoint metadata)
        if self.trace or self.compile:  # replayed weights are the module's as they stand: frozen from here on
            self.model.requires_grad_(False)
            self.vae.requires_grad_(False)
            if self.upscaler is not None:
                self.upscaler.requires_grad_(False)
        self._replays: dict[int, Callable] = {}   # batch size -> traced or compiled step body
        timesteps = cfg.denoise_timesteps if denoise_timesteps is None else tuple(denoise_timesteps)
        distilled_sigmas(timesteps)   # validates: falls strictly from <= 1000 to 0
        self.sigmas = [t / 1000.0 for t in timesteps]   # Python floats: 1000 * sigma gives the integer back
        self._graph = None          # torch.cuda.CUDAGraph once captured
        self._static: WorldState | None = None
        self._resident = None       # weakref to the user state that owns the captured buffers
        self._static_c2w: torch.Tensor | None = None
        self._static_out: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pinned_c2w: torch.Tensor | None = None   # host staging buffer of the poses (graph mode)
        self._upload_done = None                        # CUDA event: the staging buffer's last copy finished

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32, batch_size: int = 1, graph: bool = False,
                        **kwargs) -> StreamingGenerator:
        """"tiny": the shipped embedded model (model/weights); "micro": a seeded random model for tests;
        a path: one of our DiT checkpoints, with its VAE in `<stem>_vae.safetensors` or `vae.safetensors` beside it."""
        name = str(name_or_path)
        if name == "micro":
            return cls(*micro_model(), device, dtype, batch_size, graph, **kwargs)
        path = _dit_path(name)
        if not path.exists():
            raise FileNotFoundError(f"no world-model checkpoint at {path}" +
                                    (" (the embedded tiny model has not been shipped in this checkout)"
                                     if name == "tiny" else ""))
        model = load_checkpoint(path)
        vae_path = next((p for p in (path.with_name(path.stem.replace("_dit", "") + "_vae.safetensors"),
                                     path.with_name("vae.safetensors")) if p.exists()), None)
        if vae_path is None:
            raise FileNotFoundError(f"no VAE checkpoint next to {path} (expected *_vae.safetensors)")
        vae = CausalVAE(vae_config(model.cfg.vae))
        sd, _ = read_state_dict(vae_path)
        vae.load_state_dict(sd)
        kwargs.setdefault("render", StreamingGenerator.render_of(path))
        if "upscaler" not in kwargs and upscaler_path(path).exists():   # upscaler=None: the model's own frame size
            kwargs["upscaler"] = load_upscaler(upscaler_path(path))
        return cls(model, vae, device, dtype, batch_size, graph, **kwargs)

    @staticmethod
    def render_of(name_or_path: str | Path) -> dict:
        """How the checkpoint's training clips were rendered ({"supersample": 2, "fov": 90.0}, from its metadata;
        empty when it does not say): start frames made the same way are in the model's distribution."""
        name = str(name_or_path)
        if name == "micro":
            return {}
        path = _dit_path(name)
        render = metadata(path).get("render") if path.exists() else None
        return dict(render) if isinstance(render, dict) else {}

    @staticmethod
    def config_of(name_or_path: str | Path):
        """The WorldModelConfig `from_pretrained(name_or_path)` would build, read without loading any weights."""
        name = str(name_or_path)
        if name == "micro":
            return get_config("micro")
        path = _dit_path(name)
        if not path.exists():
            raise FileNotFoundError(f"no world-model checkpoint at {path}")
        return read_config(path)

    @property
    def frames_per_step(self) -> int:
        """K raw frames per step: one chunk of latent frames, each the VAE's temporal stride."""
        return self.cfg.chunk_frames * self.cfg.vae_temporal

    @property
    def frame_hw(self) -> tuple[int, int]:
        """The size of the frames handed out (and of first frames and intrinsics): the model's, times the upscaler's."""
        s = 1 if self.upscaler is None else self.upscaler.scale
        return self.cfg.height * s, self.cfg.width * s

    @property
    def model_hw(self) -> tuple[int, int]:
        """The size the VAE encodes and decodes, and the warps run at."""
        return self.cfg.height, self.cfg.width

    @staticmethod
    def frame_hw_of(name_or_path: str | Path) -> tuple[int, int]:
        """The `frame_hw` `from_pretrained(name_or_path)` would have, read without loading any weights."""
        cfg = StreamingGenerator.config_of(name_or_path)
        name = str(name_or_path)
        sr = None if name == "micro" else upscaler_path(_dit_path(name))
        s = upscaler_config(sr).scale if sr is not None and sr.exists() else 1
        return cfg.height * s, cfg.width * s

    def to_model_hw(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, F, H, W) in [-1, 1] at `frame_hw` -> `model_hw`, area-averaged (as the 2x supersampled
        renders the model was trained on); unchanged without an upscaler."""
        if self.upscaler is None:
            return x
        return torch.nn.functional.avg_pool3d(x, (1, self.upscaler.scale, self.upscaler.scale))

    def to_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded frames (B, 3, F, h, w) in [-1, 1] -> uint8 (B, F, H, W, 3) at `frame_hw`, rounded."""
        if self.upscaler is not None:
            x = self.upscaler(x)                                                 # (B, 3, F, H, W)
        return x.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)

    # ------------------------------------------------------------------ state
    def new_state(self, batch_size: int | None = None) -> WorldState:
        """An empty, preallocated state for `batch_size` worlds (all caches zero, no chunk committed)."""
        cfg, b = self.cfg, batch_size or self.batch_size
        dev, dt = self.device, self.dtype
        h, d, c, s = cfg.num_heads, cfg.head_dim, cfg.hidden_size, cfg.tokens_per_frame
        slots = 1 + cfg.chunk_frames * cfg.window_chunks          # frames held by [sink | window]
        blocks = []
        for i in range(cfg.depth):
            bc = BlockCache(ffn_tail=torch.zeros(b, 1, s, c, device=dev, dtype=dt))
            if cfg.is_softmax(i):
                bc.k, bc.v, bc.kc, bc.vc = (torch.zeros(b, h, slots * s, d, device=dev, dtype=dt) for _ in range(4))
            else:
                bc.s_kv = torch.zeros(b, h, d, d, device=dev)
                bc.s_z = torch.zeros(b, h, d, device=dev)
                bc.s_cam = torch.zeros(b, h, d, d, device=dev)
                bc.k_tail = torch.zeros(b, cfg.conv_kernel - 1, s, c, device=dev, dtype=dt)
            blocks.append(bc)
        lat_h, lat_w = cfg.latent_hw
        pix = 3 if cfg.warps_pixels else 0   # decoded frames kept only to warp them
        tp = cfg.chunk_frames if self.defer_clean else 0   # the pending chunk's frames
        wc = self.model.warp_condition_channels
        eye = torch.eye(4, dtype=torch.float64, device=dev).repeat(b, 1, 1)
        y, m = self.model.null_caption(b)
        return WorldState(
            blocks=blocks, vae=self.vae.init_decoder_cache(b, lat_h, lat_w, device=dev),
            slot_chunk=torch.full((b, 1 + cfg.window_chunks), -1, dtype=torch.int64, device=dev),
            chunk_index=torch.zeros(b, dtype=torch.int64, device=dev), pose0=eye.clone(), pose=eye,
            latent=torch.zeros(b, cfg.in_channels, 1, lat_h, lat_w, device=dev, dtype=dt),
            latent0=torch.zeros(b, cfg.in_channels, 1, lat_h, lat_w, device=dev, dtype=dt),
            frame=torch.zeros(b, pix, 1, cfg.height, cfg.width, device=dev),
            frame0=torch.zeros(b, pix, 1, cfg.height, cfg.width, device=dev),
            intrinsics=torch.zeros(b, 4, device=dev), seed=torch.zeros(b, dtype=torch.int64, device=dev),
            caption=y.to(dt).clone(), caption_mask=m.clone(),
            pending_cond=torch.zeros(b, tp, 20, device=dev),
            pending_plucker=torch.zeros(b, cfg.plucker_channels, tp, lat_h, lat_w, device=dev, dtype=dt),
            pending_warp=torch.zeros(b, wc, tp, lat_h, lat_w, device=dev, dtype=dt),
            owner=id(self), generator=self)

    def _check_state(self, state: WorldState) -> None:
        if not isinstance(state, WorldState) or state.owner != id(self):
            raise ValueError("this WorldState was made by another StreamingGenerator (or is not a WorldState); "
                             "expected a state from this generator's reset()")

    # ------------------------------------------------------------------ conditioning
    def _chunk_camera(self, rel: torch.Tensor, k_lat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw poses of one chunk relative to frame 0 [B, s*T_c, 4, 4] -> (camera_conditions [B, T_c, 20],
        plucker [B, 6s, T_c, h, w]). Latent j uses raw frames s*j .. s*j+s-1 and is anchored at the last."""
        cfg = self.cfg
        b, k = rel.shape[:2]
        s, tc = cfg.vae_temporal, k // cfg.vae_temporal
        lat_h, lat_w = cfg.latent_hw
        anchor = rel[:, s - 1::s].float()                                        # (B, T_c, 4, 4)
        cond = torch.cat([anchor.reshape(b, tc, 16), k_lat[:, None].expand(b, tc, 4)], dim=-1)
        pl = _plucker_frames(rel.float(), k_lat[:, None].expand(b, k, 4), lat_h, lat_w)  # (B, K, 6, h, w)
        pl = pl.reshape(b, tc, 6 * s, lat_h, lat_w).permute(0, 2, 1, 3, 4)     # (B, 6s, T_c, h, w)
        return cond, pl.to(self.dtype)

    def _first_camera(self, b: int, k_lat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent 0 (the image): identity pose, its window the first frame repeated."""
        eye = torch.eye(4, dtype=torch.float64, device=self.device).expand(b, self.cfg.vae_temporal, 4, 4)
        cond, pl = self._chunk_camera(eye, k_lat)
        return cond, pl

    def _noise(self, seed: torch.Tensor, counter: torch.Tensor, salt: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The sampler's noise [B, *shape]: `counter_normal`, with `visible_noise` projected per patch."""
        z = counter_normal(seed, counter, salt, shape, self.dtype)
        return z if self._noise_projector is None else self.model.x_embedder.project(z, self._noise_projector)

    def _k_lat(self, intrinsics: torch.Tensor) -> torch.Tensor:
        return scale_intrinsics(intrinsics.float(), self.frame_hw, self.cfg.latent_hw)

    # ------------------------------------------------------------------ validation
    def _check_frames(self, frames, b: int) -> torch.Tensor:
        t = _as_tensor(frames, "first_frames")
        h, w = self.frame_hw
        if t.dtype != torch.uint8:
            raise ValueError(f"first_frames must be uint8 RGB, got dtype {t.dtype}")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if tuple(t.shape) != (b, h, w, 3):
            raise ValueError(f"first_frames must have shape ({b}, {h}, {w}, 3), got {tuple(t.shape)}")
        return t.to(self.device)

    def _check_intrinsics(self, k, b: int) -> torch.Tensor:
        if k is None:
            h, w = self.frame_hw
            f = 0.5 * w  # 90 degrees horizontal
            k = torch.tensor([f, f, (w - 1) / 2, (h - 1) / 2])
        t = _as_tensor(k, "intrinsics").to(torch.float32)
        if t.dim() == 1:
            t = t.expand(b, 4)
        if tuple(t.shape) != (b, 4) or not torch.isfinite(t).all() or (t[:, :2] <= 0).any():
            raise ValueError(f"intrinsics must be finite (fx, fy, cx, cy) with fx, fy > 0, shape (4,) or ({b}, 4); "
                             f"got shape {tuple(t.shape)}")
        return t.to(self.device)

    def _check_c2w(self, c2w, b: int, k: int, name: str = "c2w", host: bool = False) -> torch.Tensor:
        t = _as_tensor(c2w, name)
        if tuple(t.shape) != (b, k, 4, 4):
            raise ValueError(f"{name} must have shape ({b}, {k}, 4, 4) (batch, raw frames per step), "
                             f"got {tuple(t.shape)}")
        t = t.to(torch.float64)
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf")
        r = t[..., :3, :3]
        err = (r @ r.transpose(-1, -2) - torch.eye(3, dtype=t.dtype)).abs().amax()
        if err > 1e-3 or (torch.linalg.det(r) < 0).any() or \
                not torch.allclose(t[..., 3, :], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=t.dtype), atol=1e-6):
            raise ValueError(f"{name} must be rigid camera-to-world matrices (orthonormal rotation, last row 0 0 0 1)")
        return t if host else t.to(self.device)

    # ------------------------------------------------------------------ reset
    def reset(self, first_frames, intrinsics=None, captions=None, seed: int | None = None,
              c2w0=None) -> WorldState:
        """Start B worlds from their first frames; returns a new WorldState. intrinsics in frame pixels."""
        state = self.new_state()
        return self.reset_rows(state, torch.ones(self.batch_size, dtype=torch.bool), first_frames, intrinsics,
                               captions, seed, c2w0)

    @torch.no_grad()
    def reset_rows(self, state: WorldState, mask, first_frames, intrinsics=None, captions=None,
                   seed=None, c2w0=None) -> WorldState:
        """Restart the worlds where mask is True, in place; first_frames has one frame per restarted world
        (or one per world, of which the masked rows are used). Other worlds stay bit-identical.

        seed: None (random), an int (world j of the restarted ones gets seed + j) or one seed per restarted world.
        c2w0: the first frame's camera-to-world pose(s); conditioning is relative to it.
        """
        self._check_state(state)
        b = state.batch_size
        mask = _as_tensor(mask, "mask").to(torch.bool).reshape(-1)
        if mask.shape[0] != b:
            raise ValueError(f"mask must have {b} entries, got {mask.shape[0]}")
        idx = mask.nonzero().squeeze(1).to(self.device)
        m = idx.numel()
        if m == 0:
            return state

        def rows(x, name):  # per-world inputs may be given for all B worlds or just the M restarted ones
            t = _as_tensor(x, name)
            return t[mask.to(t.device)] if (t.dim() >= 2 and t.shape[0] == b and m != b) else t

        frames = self._check_frames(rows(first_frames, "first_frames"), m)
        k = self._check_intrinsics(None if intrinsics is None else rows(intrinsics, "intrinsics"), m)
        pose0 = torch.eye(4, dtype=torch.float64, device=self.device).repeat(m, 1, 1)
        if c2w0 is not None:
            c0 = rows(c2w0, "c2w0")
            pose0 = self._check_c2w(c0.reshape(-1, 1, 4, 4).expand(m, 1, 4, 4) if c0.dim() == 2 else c0[:, None],
                                    m, 1, "c2w0")[:, 0]
        sub = self.new_state(m)
        sub.pose0.copy_(pose0)
        sub.pose.copy_(pose0)
        sub.intrinsics.copy_(k)
        if seed is None:
            seeds = torch.randint(0, 2**31 - 1, (m,))
        elif isinstance(seed, int | np.integer):
            seeds = torch.arange(m) + int(seed)
        else:  # one seed per restarted world
            seeds = torch.as_tensor(np.asarray(seed), dtype=torch.int64).reshape(-1)
            if seeds.numel() != m:
                raise ValueError(f"seed must be an int or {m} per-world seeds, got {seeds.numel()}")
        sub.seed.copy_(seeds.to(self.device))
        if captions is not None:
            cap = rows(captions, "captions").to(self.device, self.dtype)
            if tuple(cap.shape) != tuple(sub.caption.shape):
                raise ValueError(f"captions must be ({m} or {b}, {sub.caption.shape[1]}, {sub.caption.shape[2]}), "
                                 f"got {tuple(cap.shape)}")
            sub.caption.copy_(cap)
        # The image latent is chunk 0: one clean pass writes the caches (deferred: the first step's, which finds it
        # pending); the VAE cache is primed with it.
        x = self.to_model_hw(frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)[:, :, None])  # (M, 3, 1, h', w')
        z0 = self.vae.encode_image(x, self._prefix).to(self.dtype)               # (M, C, 1, h, w)
        cond, pl = self._first_camera(m, self._k_lat(k))
        if self.defer_clean:
            sub.pending_cond.copy_(cond)
            sub.pending_plucker.copy_(pl)
            sub.chunk_index.fill_(1)
        else:
            warp = None if not self.cfg.warp_condition else z0.new_zeros(m, self.model.warp_channels, *z0.shape[2:])
            self._forward(sub, z0, torch.zeros(m, 1, device=self.device), self._prepare(sub, 1, cond, pl, warp),
                          write=True)
            self._commit(sub)
        sub.latent.copy_(z0)
        sub.latent0.copy_(z0)
        f0 = self.vae.decode_step(z0.float(), sub.vae, first=True)                # (M, 3, 1, H, W)
        if sub.frame.shape[1]:
            sub.frame.copy_(f0)
            sub.frame0.copy_(f0)
        state.assign_rows_(idx, sub)
        return state

    # ------------------------------------------------------------------ step
    def _forward(self, state: WorldState, x, t, prepared, write: bool):
        return self.model(x, t, caption_mask=state.caption_mask, chunks=[x.shape[2]], cache=state.blocks,
                          write=write, stream=(state.chunk_index, state.slot_chunk), prepared=prepared)

    def _prepare(self, state: WorldState, frames: int, cond, pl, warp=None, skip_targets=None):
        return self.model.prepare(frames, cond, pl, state.caption, [frames], 0, (state.chunk_index, state.slot_chunk),
                                  state.batch_size, self.device, warp, skip_targets)

    def _warp(self, state: WorldState, cond: torch.Tensor) -> tuple[torch.Tensor | None, Any]:
        """The next chunk's reprojection conditioning (model/warp.py): the state's last clean latent (or, in pixel
        space, its last decoded frame), seen from its anchor pose, and the image latent (frame 0), seen from the
        identity, warped into each of the chunk's latent views (cond [B, T_c, 20]) -> (B, n(C + 1), T_c, h, w), or
        None without it; the same sources as `warp.sequence_warp` over the whole sequence, in one batch.
        Second: the skip's chunk targets (`warp_targets`) of the same sources, as a `beside` handle, else None. Why
        apart: their clip encodes are most of the warp's cost and only the pass's last op (the skip) reads them, so
        a CPU trace runs them beside the conditioning and the pass's blocks (model/parallel.py)."""
        cfg = self.cfg
        if not cfg.warp_condition:
            return None, None
        b, tc = cond.shape[:2]
        n = 1 + int(cfg.warp_sink)
        prev = (se3_inverse(state.pose0) @ state.pose).float().reshape(b, 1, 16)      # the last latent's anchor
        eye = torch.eye(4, device=cond.device, dtype=cond.dtype).reshape(1, 1, 16)
        poses = [prev, eye.expand(b, 1, 16)][:n]
        cond_src = torch.cat([torch.cat([p.expand(b, tc, 16), cond[..., 16:]], -1) for p in poses])  # (nB, T_c, 20)
        cond_dst = cond.repeat(n, 1, 1)                                               # (nB, T_c, 20)
        if not cfg.warps_pixels:
            src = torch.cat([state.latent, state.latent0][:n]).expand(-1, -1, tc, -1, -1)  # (nB, C, T_c, h, w)
            return stack_sources(warp_latents(src, cond_src, cond_dst, self._depth), n), None
        src = torch.cat([state.frame, state.frame0][:n]).expand(-1, -1, tc, -1, -1)   # (nB, 3, T_c, H, W)
        dtype = state.latent.dtype

        def targets() -> torch.Tensor:   # each latent turns from the view before it: (B, n(C + 1), T_c, h, w)
            before = torch.cat([torch.cat([prev, cond[:, :1, 16:]], -1), cond[:, :-1]], 1)  # (B, T_c, 20)
            out = warp_chunks(self.vae, src, cond_src, before.repeat(n, 1, 1), cond_dst, self._prefix, self._depth)
            return stack_sources(out.to(dtype), n)

        handle = beside(targets) if cfg.warp_targets else None
        out = warp_frames(self.vae, src, cond_src, cond_dst, self._prefix, self._depth).to(dtype)  # (nB, C + 1, ..)
        return stack_sources(out, n), handle                                          # (B, n(C + 1), T_c, h, w)

    def _commit(self, state: WorldState) -> None:
        """After the clean pass: record which chunk the KV slots now hold, and advance the chunk counter."""
        state.slot_chunk.copy_(self.model.recorded(state.chunk_index, state.slot_chunk))
        state.chunk_index.add_(1)

    def _step_core(self, state: WorldState, c2w: torch.Tensor) -> torch.Tensor:
        """One chunk for every world: static shapes, device ops only (the CUDA-graph body). Returns uint8 frames."""
        cfg = self.cfg
        b, k = c2w.shape[:2]
        tc = cfg.chunk_frames
        lat_h, lat_w = cfg.latent_hw
        rel = se3_inverse(state.pose0)[:, None] @ c2w                            # (B, K, 4, 4) relative to frame 0
        cond, pl = self._chunk_camera(rel, self._k_lat(state.intrinsics))
        warp, targets = self._warp(state, cond)
        x = self._noise(state.seed, state.chunk_index, 0, (cfg.in_channels, tc, lat_h, lat_w))
        passes = list(zip(self.sigmas[:-1], self.sigmas[1:]))
        if self.defer_clean:
            # The pending chunk's clean pass and this chunk's first pass in one call (a streamed pair): it writes the
            # pending chunk, and this chunk reads the caches after that write. Later passes read them alone.
            pending = state.chunk_index - 1
            slots = self.model.recorded(pending, state.slot_chunk)
            pair_warp = None if warp is None else torch.cat([state.pending_warp, warp], dim=2)
            sig = passes[0][0]
            v = self.model(torch.cat([state.latent, x], dim=2),
                           torch.cat([torch.zeros(b, tc, device=self.device),
                                      torch.full((b, tc), 1000.0 * sig, device=self.device)], dim=1),
                           caption_mask=state.caption_mask, chunks=[tc, tc], cache=state.blocks, write=True,
                           stream=(pending, state.slot_chunk),
                           prepared=self.model.prepare(
                               2 * tc, torch.cat([state.pending_cond, cond], 1),
                               torch.cat([state.pending_plucker, pl], 2), state.caption, [tc, tc], 0,
                               (pending, state.slot_chunk), b, self.device, pair_warp, targets))
            state.slot_chunk.copy_(slots)
            prepared = self._prepare(state, tc, cond, pl, warp, targets) if len(passes) > 1 else None
        else:
            prepared = self._prepare(state, tc, cond, pl, warp, targets)
            v = None
        for i, (sig, nxt) in enumerate(passes):
            if v is None:
                t = torch.full((b, tc), 1000.0 * sig, device=self.device)
                v = self._forward(state, x, t, prepared, write=False)
            if self.sampler == "euler" or nxt == 0.0:
                x = x + (nxt - sig) * v
            else:  # predict x0, re-noise to the next level with fresh noise (few-step distilled sampling)
                x0 = x - sig * v
                x = (1.0 - nxt) * x0 + nxt * self._noise(state.seed, state.chunk_index, i + 1, x.shape[1:])
            v = None
        # Not deferred: the clean pass (DiT caches) and the decode (VAE cache) read the same latent and write
        # disjoint state, so a CPU trace runs them at once (model/parallel.py). Its output is not read, so it runs
        # without the output skip.
        clean = None if self.defer_clean else beside(
            lambda: self._forward(state, x, torch.zeros(b, tc, device=self.device), (*prepared[:4], None), write=True))
        frames = [self.vae.decode_step(x[:, :, j:j + 1].float(), state.vae) for j in range(tc)]  # (B, 3, s, H, W)
        if self.defer_clean:   # this chunk waits for the next step's pair
            state.chunk_index.add_(1)
            state.pending_cond.copy_(cond)
            state.pending_plucker.copy_(pl)
            if warp is not None:
                state.pending_warp.copy_(warp)
        else:
            join(clean)
            self._commit(state)
        state.pose.copy_(c2w[:, -1])
        state.latent.copy_(x[:, :, -1:])
        if state.frame.shape[1]:
            state.frame.copy_(frames[-1][:, :, -1:])
        return self.to_frames(torch.cat(frames, dim=2)), x                      # (B, K, H, W, 3), clean latents

    @torch.no_grad()
    def step(self, state: WorldState, c2w, return_latents: bool = False):
        """Advance every world by one chunk: c2w (B, K, 4, 4) -> uint8 frames (B, K, H, W, 3) on the device
        (and the chunk's clean latents (B, C, T_c, h, w) with return_latents).

        Input is validated before anything changes, so a bad call leaves the state untouched.
        """
        # A trace's forks each get half the cores (model/parallel.py); the whole call, checks included: an op at
        # all the threads just before the replay leaves OpenMP workers spinning into it (measured 5-9 ms a step).
        with halved_threads() if self.trace else contextlib.nullcontext():
            return self._step(state, c2w, return_latents)

    def _step(self, state: WorldState, c2w, return_latents: bool):
        self._check_state(state)
        if self.graph:  # validated on the host, uploaded without a sync (see _upload_poses)
            c2w = self._check_c2w(_as_tensor(c2w, "c2w").cpu(), state.batch_size, self.frames_per_step, host=True)
            rgb, lat = self._graph_step(state, c2w)
        else:
            c2w = self._check_c2w(c2w, state.batch_size, self.frames_per_step)
            replay = self.trace or self.compile is not None
            rgb, lat = self._replayed_step(state, c2w) if replay else self._step_core(state, c2w)
        return (rgb, lat) if return_latents else rgb

    # ------------------------------------------------------------------ traced or compiled replay (CPU)
    def _replayed_step(self, state: WorldState, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step body recorded once per batch size and replayed without Python: the CPU counterpart of the CUDA
        graph (a step is ~10k small ops, and Python dispatch is a third of its time). `trace`: torch.jit;
        `compile`: torch.compile, which also fuses the small ops. Any state of that layout is stepped in place
        through its tensors; `_step_core` stays the reference."""
        fn = self._replays.get(state.batch_size)
        if fn is None:
            template = state.clone()   # its layout, and the example inputs the recording steps (then unused)

            def body(c2w, *flat):
                return self._step_core(template.with_tensors(flat), c2w)

            fn = self._compiled(body, c2w, template) if self.compile else None
            if fn is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # TracerWarnings: the body is static by construction
                    fn = torch.jit.trace(body, (c2w, *template._all()), check_trace=False)
                if self.specialize:
                    fn = specialize(fn, "step")
            self._replays[state.batch_size] = fn
        return fn(c2w, *state._all())

    def _compiled(self, body, c2w: torch.Tensor, template: WorldState) -> Callable | None:
        """torch.compile of the step body, compiled now by stepping the template (a copy: a failure leaves the
        caller's state alone); None, with a warning, where it cannot compile, so the trace takes over.
        Each body gets its own code object: dynamo keys its cache on the code, and a shared one would count every
        generator of the process against one recompile limit (8), past which a fullgraph compile fails
        (FailOnRecompileLimitHit; checked on a toy closure, where fresh code objects compiled 12 of 12)."""
        body = types.FunctionType(body.__code__.replace(), body.__globals__, body.__name__, body.__defaults__,
                                  body.__closure__)
        fn = torch.compile(body, backend=self.compile, fullgraph=True, dynamic=False)
        try:
            fn(c2w, *template._all())
        except Exception as e:  # no C++ compiler, an unsupported platform...
            while (inner := getattr(e, "inner_exception", None) or e.__cause__) is not None:
                e = inner   # dynamo wraps the backend's error
            warnings.warn(f"torch.compile({self.compile!r}) of the step failed, replaying a trace instead: "
                          f"{type(e).__name__}: {e}", stacklevel=4)
            return None
        return fn

    # ------------------------------------------------------------------ CUDA graph
    def _upload_poses(self, c2w_host: torch.Tensor) -> None:
        """Host poses -> the static device buffer with no host synchronisation: a pinned staging buffer and an
        asynchronous copy on the current stream. The staging buffer is rewritten only after its previous copy has
        finished (an event query; in a loop that reads frames back it always has)."""
        if self._pinned_c2w is None:
            self._pinned_c2w = torch.empty(c2w_host.shape, dtype=torch.float64, pin_memory=True)
            self._upload_done = torch.cuda.Event()
        elif not self._upload_done.query():
            self._upload_done.synchronize()
        self._pinned_c2w.copy_(c2w_host)
        self._static_c2w.copy_(self._pinned_c2w, non_blocking=True)
        self._upload_done.record()

    def _graph_step(self, state: WorldState, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay the captured step against static buffers; any state of the right layout can be stepped.
        c2w: validated host poses (B, K, 4, 4) float64."""
        if self._graph is None:
            self._capture(state, c2w.to(self.device))
        self._take_buffers(state)
        self._upload_poses(c2w)
        self._graph.replay()
        return tuple(t.clone() for t in self._static_out)

    def _take_buffers(self, state: WorldState) -> None:
        """Ownership of the captured buffers: `state` becomes (shares the storage of) the static state. The
        previous owner, if still alive, gets a private copy first; a state that already owns them pays nothing."""
        if state.shares_storage(self._static):
            return
        state._check_layout(self._static)
        previous = self._resident() if self._resident is not None else None
        if previous is not None and previous.shares_storage(self._static):
            previous.share_(self._static.clone())
        self._static.copy_(state)
        state.share_(self._static)
        self._resident = weakref.ref(state)

    def _capture(self, state: WorldState, c2w: torch.Tensor) -> None:
        self._static = state.clone()
        self._static_c2w = c2w.clone()
        scratch = state.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (allocator, cuDNN/cuBLAS handles) on copies
            for _ in range(2):
                self._static.copy_(scratch)
                self._step_core(self._static, self._static_c2w)
        torch.cuda.current_stream().wait_stream(side)
        self._static.copy_(scratch)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self._step_core(self._static, self._static_c2w)
        self._graph = graph  # capture records without executing; the caller replays


class RecomputeGenerator:
    """The naive baseline and test oracle: no caches; every pass recomputes the whole visible context.

    It keeps the clean latents and camera conditioning of every chunk so far, and each denoising pass runs
    the full chunk-causal forward over [history at t = 0, current chunk at its noise level] with the same
    sink + window plans and positions. Its cost grows with the episode; StreamingGenerator's does not.
    """

    def __init__(self, gen: StreamingGenerator):
        self.gen = gen
        self.latents: list[torch.Tensor] = []
        self.conds: list[torch.Tensor] = []
        self.pluckers: list[torch.Tensor] = []

    @torch.no_grad()
    def reset(self, first_frames, intrinsics=None, seed: int = 0) -> torch.Tensor:
        g = self.gen
        b = first_frames.shape[0]
        self.k = g._check_intrinsics(intrinsics, b)
        self.seed = torch.arange(b, device=g.device) + int(seed)
        frames = g._check_frames(first_frames, b)
        z0 = g.vae.encode(g.to_model_hw(frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)[:, :, None]))
        z0 = z0.to(g.dtype)
        cond, pl = g._first_camera(b, g._k_lat(self.k))
        self.latents, self.conds, self.pluckers = [z0], [cond], [pl]
        self.pose0 = torch.eye(4, dtype=torch.float64, device=g.device).repeat(b, 1, 1)
        return z0

    @torch.no_grad()
    def step(self, c2w) -> torch.Tensor:
        """c2w (B, K, 4, 4) -> the chunk's clean latents (B, C, T_c, h, w)."""
        g, cfg = self.gen, self.gen.cfg
        b = self.latents[0].shape[0]
        c2w = g._check_c2w(c2w, b, g.frames_per_step)
        tc = cfg.chunk_frames
        lat_h, lat_w = cfg.latent_hw
        cond, pl = g._chunk_camera(se3_inverse(self.pose0)[:, None] @ c2w, g._k_lat(self.k))
        chunk = len(self.latents)
        x = g._noise(self.seed, torch.full((b,), chunk, device=g.device), 0, (cfg.in_channels, tc, lat_h, lat_w))
        hist = torch.cat(self.latents, dim=2)
        conds = torch.cat(self.conds + [cond], dim=1)
        pls = torch.cat(self.pluckers + [pl], dim=2)
        layout = [1] + [tc] * (chunk - 1) + [tc]
        warp = g.model.warp_of(torch.cat([hist, x], dim=2), conds, layout, g.vae)    # shared by the passes
        for i, (sig, nxt) in enumerate(zip(g.sigmas[:-1], g.sigmas[1:])):
            t = torch.cat([torch.zeros(b, hist.shape[2], device=g.device),
                           torch.full((b, tc), 1000.0 * sig, device=g.device)], dim=1)
            v = g.model(torch.cat([hist, x], dim=2), t, conds, pls, chunks=layout, warp=warp)[:, :, -tc:]
            if g.sampler == "euler" or nxt == 0.0:
                x = x + (nxt - sig) * v
            else:
                x0 = x - sig * v
                x = (1.0 - nxt) * x0 + nxt * g._noise(self.seed, torch.full((b,), chunk, device=g.device), i + 1,
                                                      x.shape[1:])
        self.latents.append(x)
        self.conds.append(cond)
        self.pluckers.append(pl)
        return x

    @torch.no_grad()
    def decode(self) -> torch.Tensor:
        """All frames after the first: uint8 (B, F-1, H, W, 3), decoded in one full causal pass."""
        x = self.gen.vae.decode(torch.cat(self.latents, dim=2).float())           # (B, 3, F, h, w)
        return self.gen.to_frames(x[:, :, 1:])

