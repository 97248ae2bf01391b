"""WorldState: every tensor that survives a streaming step, preallocated for B worlds and a fixed window.

- Per block: the FFN temporal-conv tail; GDN blocks carry the numerator / denominator states, the camera
  state and the short-conv tail of the pre-conv keys; softmax blocks carry K/V (main and camera) in a
  [sink | window] slot buffer: slot 0 holds chunk 0 (the image latent) forever, slots 1..W are a ring of
  the most recent chunks. Keys are stored without RoPE and rotated when read, so positions can be the
  absolute frame indices (as published) or window-relative ones (bounded, for long rollouts).
- The chunk generated last, when its clean pass is deferred (1-latent chunks): its latent is `latent`, and its
  camera conditions, Plücker rays and warp conditioning wait in `pending_*` until the next step's first pass
  writes it (model/generator.py). Zero-length along time when clean passes are not deferred.
- The VAE decoder cache, the first and current pose, the last clean latent frame and the last decoded frame (the warp
  sources), the intrinsics, the captions, and the RNG: a seed and the chunk counter per world. Noise is a counter-based
  hash of (seed, chunk, pass, element), so it needs no generator object, is identical on CPU and GPU, forks
  with the state, and is graph-safe.

Shapes never depend on the episode length, so `nbytes()` is constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch

from .vae import VAEDecoderCache

_M32 = 0xFFFFFFFF


@dataclass
class BlockCache:
    """One block's carried tensors (None where the block kind has no such state). Batch is dim 0."""

    ffn_tail: torch.Tensor                   # [B, 1, S, C] last frame before the FFN's temporal conv
    s_kv: torch.Tensor | None = None         # [B, H, D, D] fp32 GDN numerator state (value x key)
    s_z: torch.Tensor | None = None          # [B, H, D] fp32 GDN denominator state
    s_cam: torch.Tensor | None = None        # [B, H, D, D] fp32 camera-branch state
    k_tail: torch.Tensor | None = None       # [B, K-1, S, C] last pre-conv key frames
    k: torch.Tensor | None = None            # [B, H, L, D] softmax keys (normed, no RoPE)
    v: torch.Tensor | None = None            # [B, H, L, D]
    kc: torch.Tensor | None = None           # [B, H, L, D] camera keys (UCPE matrix applied, no camera RoPE)
    vc: torch.Tensor | None = None           # [B, H, L, D]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def _map(bc: BlockCache, fn) -> BlockCache:
    return replace(bc, **{k: fn(v) for k, v in bc.tensors().items()})


@dataclass
class WorldState:
    """The state of B streaming worlds. Create with `StreamingGenerator.reset`; never shared between generators."""

    blocks: list[BlockCache]
    vae: VAEDecoderCache
    slot_chunk: torch.Tensor      # [B, 1 + W] int64: chunk index held by each KV slot, -1 = empty
    chunk_index: torch.Tensor     # [B] int64: chunks made so far (chunk 0 = the image latent); the last one is still
                                  # pending when clean passes are deferred
    pose0: torch.Tensor           # [B, 4, 4] float64 c2w of raw frame 0 (conditioning is relative to it)
    pose: torch.Tensor            # [B, 4, 4] float64 c2w of the last raw frame
    latent: torch.Tensor          # [B, C, 1, h, w] the last clean latent frame (the next chunk's warp source)
    latent0: torch.Tensor         # [B, C, 1, h, w] the image latent (the sink's warp source)
    frame: torch.Tensor           # [B, 3, 1, H, W] float32 last decoded frame (pixel-space warp source; 0 channels
    frame0: torch.Tensor          # [B, 3, 1, H, W] ...and decoded frame 0        when the model warps latents)
    intrinsics: torch.Tensor      # [B, 4] float32 (fx, fy, cx, cy) in pixels of the frames
    seed: torch.Tensor            # [B] int64
    caption: torch.Tensor         # [B, L, caption_channels]
    caption_mask: torch.Tensor    # [B, L] bool
    pending_cond: torch.Tensor    # [B, T_c, 20] float32 camera conditions of the chunk not yet in the caches
    pending_plucker: torch.Tensor  # [B, 6s, T_c, h, w] its Plücker rays
    pending_warp: torch.Tensor    # [B, n(C+1), T_c, h, w] its warp conditioning (0 channels without warps)
    owner: int = field(default=0, compare=False)          # id() of the generator that made it
    generator: object = field(default=None, compare=False, repr=False)

    _FLAT = ("slot_chunk", "chunk_index", "pose0", "pose", "latent", "latent0", "frame", "frame0", "intrinsics", "seed",
             "caption", "caption_mask", "pending_cond", "pending_plucker", "pending_warp")

    @property
    def batch_size(self) -> int:
        return self.chunk_index.shape[0]

    @property
    def device(self) -> torch.device:
        return self.chunk_index.device

    def _all(self) -> list[torch.Tensor]:
        out = [t for b in self.blocks for t in b.tensors().values()]
        out += [*self.vae.tails, self.vae.step]
        return out + [getattr(self, n) for n in self._FLAT]

    def with_tensors(self, flat) -> WorldState:
        """A state of this layout over the given tensors, in `_all()` order (no copies): how a traced step body
        sees the state it was called with."""
        it = iter(flat)
        blocks = [replace(b, **{k: next(it) for k in b.tensors()}) for b in self.blocks]
        vae = replace(self.vae, tails=[next(it) for _ in self.vae.tails], step=next(it))
        return replace(self, blocks=blocks, vae=vae, **{n: next(it) for n in self._FLAT})

    def nbytes(self) -> int:
        """Bytes held by every tensor of the state (constant over an episode)."""
        return sum(t.numel() * t.element_size() for t in self._all())

    def _apply(self, fn, vae) -> WorldState:
        return replace(self, blocks=[_map(b, fn) for b in self.blocks], vae=vae,
                       **{n: fn(getattr(self, n)) for n in self._FLAT})

    def clone(self) -> WorldState:
        """An independent copy: fork a world for planning. Stepping either never touches the other."""
        return self._apply(torch.clone, self.vae.clone())

    def select(self, idx) -> WorldState:
        """A new state holding worlds `idx` (in that order)."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device).reshape(-1)
        if ((idx < 0) | (idx >= self.batch_size)).any():
            raise ValueError(f"select: indices must be in [0, {self.batch_size}), got {idx.tolist()}")
        return self._apply(lambda t: t.index_select(0, idx), self.vae.select(idx))

    def copy_(self, src: WorldState) -> WorldState:
        """Overwrite this state with `src` in place (same layout); keeps this state's storage (graph-safe)."""
        self._check_layout(src)
        for a, b in zip(self._all(), src._all()):
            a.copy_(b)
        return self

    def assign_rows_(self, idx, src: WorldState) -> WorldState:
        """Write the worlds of `src` into rows `idx` of this state, in place."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device).reshape(-1)
        if src.batch_size != idx.numel():
            raise ValueError(f"assign_rows_: {idx.numel()} rows but a source with {src.batch_size} worlds")
        for a, b in zip(self._all(), src._all()):
            a.index_copy_(0, idx, b)
        return self

    def reset_(self, mask, first_frames, intrinsics=None, captions=None, seed=None, c2w0=None) -> WorldState:
        """Restart the worlds where `mask` (B,) is True from new first frames; the others are left bit-identical."""
        if self.generator is None:
            raise ValueError("this WorldState has no generator; make states with StreamingGenerator.reset")
        return self.generator.reset_rows(self, mask, first_frames, intrinsics=intrinsics, captions=captions,
                                         seed=seed, c2w0=c2w0)

    def share_(self, other: WorldState) -> WorldState:
        """Make this state use `other`'s tensors (and containers) as its own; its former storage is dropped.

        The CUDA-graph generator uses it for ownership: the state being stepped *is* the captured buffers, so
        stepping the same state again copies nothing. Layouts must match."""
        self._check_layout(other)
        for f in fields(self):
            if f.compare:
                setattr(self, f.name, getattr(other, f.name))
        return self

    def shares_storage(self, other: WorldState) -> bool:
        """True when both use the very same tensors (see share_)."""
        return self.blocks is other.blocks

    def _check_layout(self, other: WorldState) -> None:
        mine, theirs = self._all(), other._all()
        if len(mine) != len(theirs) or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(mine, theirs)):
            raise ValueError("states have different layouts (batch size, window or model); expected "
                             f"batch {self.batch_size}, got {other.batch_size}")


# ----------------------------------------------------------------------------------------------------------------
# Counter-based Gaussian noise
# ----------------------------------------------------------------------------------------------------------------


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32 without int64 overflow (16-bit halves)."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + ((hi * c) & 0xFFFF) * 65536) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection with good avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def counter_normal(seed: torch.Tensor, counter: torch.Tensor, salt: int, shape: tuple[int, ...],
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise [B, *shape], a pure function of (seed[b], counter[b], salt, element index).

    seed, counter: [B] int64. Box-Muller over two 32-bit hashes per element.
    """
    n = math.prod(shape)
    device = seed.device
    e = torch.arange(n, device=device, dtype=torch.int64)[None]                        # (1, n)
    key = _fmix32((_mul32(seed[:, None] & _M32, 0x9E3779B1) ^ _mul32(counter[:, None] & _M32, 0x27D4EB2F)
                   ^ (salt * 0x165667B1 & _M32)) & _M32)                              # (B, 1)
    h1 = _fmix32((key + _mul32(2 * e, 0x9E3779B1)) & _M32)
    h2 = _fmix32((key ^ _mul32(2 * e + 1, 0x85EBCA77)) & _M32)
    u1 = (h1.double() + 1.0) / 4294967297.0   # (0, 1)
    u2 = h2.double() / 4294967296.0           # [0, 1)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(dtype).reshape(seed.shape[0], *shape)
