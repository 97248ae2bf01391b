"""Causal video autoencoder with a streaming (cached) decoder, plus a wrapper for the published LTX-2 VAE.

What is notable, and why:
- Compression is LTX-2 style: 8x in space, 4x in time with the first frame alone. F = 1 + 4k raw frames give
  1 + k latent frames; latent 0 encodes frame 0 only and latent i >= 1 encodes frames 4i-3 .. 4i.
- First frame alone, by padding: the encoder prepends 3 zero frames (mid-grey), so raw frames group as
  [0, 0, 0, f0], [f1..f4], ... Every layer then sees uniform groups of 4 and every latent decodes to 4 frames;
  the full decode drops the first 3 (the pad slots). One code path covers stream start, steady state and a batch
  row that restarts while the others go on.
- Causal convs pad time on the left with ZEROS, not with a replicated first frame: a zeroed cache is then exactly
  a stream start, so `reset_` is a masked fill and `decode_step` never branches on the step number.
- Nothing runs at full resolution: a pixel-unshuffle stem (space-to-depth) enters at H/2 (tiny), and levels go
  down by space-to-depth, up by depth-to-space. Each resolution change carries a parameter-free residual shortcut
  (channel-group mean down, channel repeat up; DC-AE "residual autoencoding", Chen et al. 2024, the SANA family's
  own autoencoder), which makes high-compression autoencoders train fast.
- Residual blocks use a (k_t, 3, 3) causal conv then a (1, 3, 3) conv, with per-position channel RMSNorm: no norm
  mixes frames, so the whole network is causal in time. Inside, tensors are frame-major and channels-last,
  (B, T, H, W, C), and every conv is one Conv2d over all frames with the temporal taps stacked along channels:
  on a CPU core that is several times faster than Conv3d, and it is cuDNN's preferred layout too.
- Deterministic encoder: `encode` returns a point, not a distribution (no KL term). Training may add latent noise
  or an L2 penalty; that lives in `model/train`, not here.
- Latent normalisation as in LTX-2: z = (z_raw - latents_mean) * scaling_factor / latents_std, with the three
  stored as buffers, so the DiT sees about unit-variance latents and a safetensors file carries them.
- No hidden state: the streaming decoder reads and writes a caller-owned `VAEDecoderCache` of preallocated
  tensors, in place, with static shapes and no host synchronisation (CUDA-graph capturable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class CausalVAEConfig:
    """Shape of the causal autoencoder. Levels run from fine (index 0, just after the stem) to coarse (last)."""

    in_channels: int = 3
    latent_channels: int = 16
    spatial_factor: int = 8                        # H / h; = stem patch * 2 ** (levels - 1)
    temporal_factor: int = 4                       # frames per latent after the first; a power of two
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    blocks_per_level: tuple[int, ...] = (1, 1, 2)  # residual blocks per level, same in encoder and decoder
    temporal_kernels: tuple[int, ...] = (1, 3, 3)  # k_t of each level's causal convs; 1 = no temporal mixing there
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        if levels < 1 or len(self.blocks_per_level) != levels or len(self.temporal_kernels) != levels:
            raise ValueError(f"blocks_per_level and temporal_kernels need one entry per level ({levels}), got "
                             f"{self.blocks_per_level} and {self.temporal_kernels}")
        if min(self.temporal_kernels) < 1:
            raise ValueError(f"temporal_kernels must be >= 1, got {self.temporal_kernels}")
        if self.temporal_factor < 1 or self.temporal_factor & (self.temporal_factor - 1):
            raise ValueError(f"temporal_factor must be a power of two, got {self.temporal_factor}")
        down = 2 ** (levels - 1)
        if self.spatial_factor < down or self.spatial_factor % down:
            raise ValueError(f"spatial_factor {self.spatial_factor} must be a multiple of 2 ** (levels - 1) = {down}")
        # The residual shortcuts average or repeat runs of channels, so widths must divide evenly.
        c = self.block_out_channels
        for i, ft in enumerate(self.level_temporal_strides):
            if (c[i] * 4 * ft) % c[i + 1]:
                raise ValueError(f"level {i}->{i + 1}: {c[i]} channels x {4 * ft} (space-to-depth) must be a "
                                 f"multiple of {c[i + 1]}")
        if c[-1] % self.latent_channels:
            raise ValueError(f"deepest width {c[-1]} must be a multiple of latent_channels {self.latent_channels}")

    @property
    def patch_size(self) -> int:
        """Spatial pixel-unshuffle factor of the stem."""
        return self.spatial_factor // 2 ** (len(self.block_out_channels) - 1)

    @property
    def level_temporal_strides(self) -> tuple[int, ...]:
        """Temporal factor (1 or 2) of each level transition; time is halved at the coarsest transitions first."""
        n = len(self.block_out_channels) - 1
        k = min(int(math.log2(self.temporal_factor)), n)
        return (1,) * (n - k) + (2,) * k

    @property
    def patch_size_t(self) -> int:
        """Temporal space-to-depth of the stem: whatever the transitions do not cover."""
        return self.temporal_factor // math.prod(self.level_temporal_strides)


VAE_PRESETS: dict[str, CausalVAEConfig] = {
    # Realistic quality for 128x128 frames; decoder levels run at 16x16 (1 frame), 32x32 (2), 64x64 (4).
    "tiny": CausalVAEConfig(),
    # Unit tests: the same layout as "tiny" (stem, two spatio-temporal transitions) at the smallest widths.
    "micro": CausalVAEConfig(latent_channels=4, block_out_channels=(8, 8, 16), blocks_per_level=(1, 1, 1)),
}


def vae_config(name: str) -> CausalVAEConfig:
    """Named preset; raises ValueError listing the known names."""
    if name not in VAE_PRESETS:
        raise ValueError(f"unknown VAE preset {name!r}; expected one of {sorted(VAE_PRESETS)}")
    return VAE_PRESETS[name]


# ----------------------------------------------------------------------------------------------------------------------
# Streaming state


@dataclass
class FrozenTail:
    """A causal conv's past that never changes (the pad frames before an image), folded into its output once: with
    it the conv runs only its current-frame tap on a single new frame. Derived from the weights."""

    out: torch.Tensor       # (1, 1, H, W, C_out): the past taps applied to the past, plus the bias
    weight: torch.Tensor    # (C_out, k_s, k_s, C_in): the current frame's tap


@dataclass
class ImagePrefix:
    """The encoder's stream state after the pad frames in front of every first frame (`CausalVAE.image_prefix`),
    batch 1: per-conv frozen tails, the same tails as frames (`stream_tails`, for clips: `encode_clip`) and
    per-stride carries. Derived from the weights, never written by `encode_image` or `encode_clip`."""

    tails: list[FrozenTail]
    carries: list[torch.Tensor]
    height: int
    width: int
    stream_tails: list[torch.Tensor]


@dataclass
class VAEDecoderCache:
    """Everything the streaming decoder carries between latent frames, preallocated for one batch and grid.

    `tails[i]` holds the last k_t - 1 input frames of the i-th causal conv of the decoder, frame-major and
    channels-last, (B, k_t - 1, h_i, w_i, C_i); all zeros means "stream start". `step` (B,) int64 counts the latent
    frames decoded since the row's start, so a caller can tell which rows are on their latent 0 (whose 4 decoded
    frames are 3 pad slots and then frame 0). `lat_h`, `lat_w` record the latent grid the tensors were sized for.
    """

    tails: list[torch.Tensor]
    step: torch.Tensor       # (B,) int64
    lat_h: int
    lat_w: int

    @property
    def batch_size(self) -> int:
        return self.step.shape[0]

    def clone(self) -> VAEDecoderCache:
        """An independent copy (fork a stream)."""
        return replace(self, tails=[t.clone() for t in self.tails], step=self.step.clone())

    def nbytes(self) -> int:
        """Bytes held by the cache tensors (constant over the stream)."""
        return sum(t.numel() * t.element_size() for t in [*self.tails, self.step])

    def reset_(self, mask: torch.Tensor) -> VAEDecoderCache:
        """Send the rows where `mask` (B,) bool is True back to stream start, in place; other rows are untouched."""
        if mask.shape != (self.batch_size,) or mask.dtype != torch.bool:
            raise ValueError(f"reset_ mask: expected a bool tensor of shape ({self.batch_size},), "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        m = mask.to(self.step.device)
        for t in self.tails:
            t.masked_fill_(m.view(-1, 1, 1, 1, 1), 0)
        self.step.masked_fill_(m, 0)
        return self

    def select(self, idx: torch.Tensor | Sequence[int]) -> VAEDecoderCache:
        """A new cache holding the rows `idx` (in that order), e.g. to drop finished streams or to repeat one."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.step.device)
        if idx.dim() != 1:
            raise ValueError(f"select: expected a 1-D index, got shape {tuple(idx.shape)}")
        return replace(self, tails=[t.index_select(0, idx) for t in self.tails], step=self.step.index_select(0, idx))

    def copy_(self, src: VAEDecoderCache) -> VAEDecoderCache:
        """Overwrite this cache with `src` in place (same batch and grid); keeps this cache's storage."""
        if (src.batch_size, src.lat_h, src.lat_w, len(src.tails)) != (self.batch_size, self.lat_h, self.lat_w,
                                                                        len(self.tails)):
            raise ValueError(f"copy_: expected a cache for batch {self.batch_size}, grid {self.lat_h}x{self.lat_w}, "
                             f"{len(self.tails)} tails; got batch {src.batch_size}, grid {src.lat_h}x{src.lat_w}, "
                             f"{len(src.tails)} tails")
        for dst, s in zip(self.tails, src.tails):
            dst.copy_(s)
        self.step.copy_(src.step)
        return self


# ----------------------------------------------------------------------------------------------------------------------
# Layers


class ChannelRMSNorm(nn.Module):
    """RMS over channels at each (frame, pixel): never mixes frames, so it keeps the network causal and streamable."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, H, W, C), normalised over C
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class CausalConv(nn.Module):
    """Convolution causal in time, 2-D in space, on frame-major channels-last tensors (B, T, H, W, C).

    Time is padded on the left only: with zeros (whole clip) or with the cached tail (streaming). The k_t temporal
    taps are stacked along channels, oldest first, and run as one channels-last Conv2d over all frames. On a CPU core
    this is 2-8x faster than the equivalent NCDHW Conv3d (measured at 64x64 / 32 ch and 32x32 / 64 ch).
    The weight is stored channels-last, (C_out, k_s, k_s, k_t * C_in) with taps oldest first, so the kernel never
    reorders it per call and the state_dict stays contiguous. Init matches nn.Conv2d.
    `slot` indexes this layer's tail in a `VAEDecoderCache`; the owning decoder assigns it once at construction.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_t: int, kernel_s: int = 3):
        super().__init__()
        self.in_channels, self.kernel_t, self.padding = in_channels, kernel_t, kernel_s // 2
        fan_in = kernel_t * in_channels * kernel_s**2
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_s, kernel_s, kernel_t * in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self.slot = -1

    def forward(self, x: torch.Tensor, tails: Sequence[torch.Tensor | FrozenTail] | None = None) -> torch.Tensor:
        # x: (B, T, H, W, C) -> (B, T, H, W, C_out)
        t = x.shape[1]
        k = self.kernel_t - 1
        if k:
            tail = None if tails is None else tails[self.slot]
            if isinstance(tail, FrozenTail):  # a constant past: only the current frame's tap is left to run
                if t != 1:
                    raise ValueError(f"a frozen tail continues with exactly one frame, got {t}")
                return self._conv(x, tail.weight, None) + tail.out
            if tail is None:
                xp = F.pad(x, (0, 0, 0, 0, 0, 0, k, 0))             # (B, k + T, H, W, C), zeros before frame 0
            else:
                xp = torch.cat([tail, x], dim=1)                     # (B, k + T, H, W, C)
                tail.copy_(xp[:, -k:])
            x = torch.cat([xp[:, j:j + t] for j in range(k + 1)], dim=-1)  # (B, T, H, W, k_t*C)
        return self._conv(x, self.weight, self.bias)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # x: (B, T, H, W, C') with weight (C_out, k_s, k_s, C') -> (B, T, H, W, C_out)
        if weight.shape[1] == 1:  # 1x1: a matmul on the channels-last rows; F.conv2d picks its im2col path here
            return F.linear(x, weight.flatten(1), bias)   # at 1 thread and copies to NCHW (0.4 ms a call, tiny)
        b, t = x.shape[:2]
        y = F.conv2d(x.flatten(0, 1).permute(0, 3, 1, 2), weight.permute(0, 3, 1, 2), bias,
                     padding=self.padding)                           # (B*T, C_out, H, W), channels-last strides
        return y.permute(0, 2, 3, 1).unflatten(0, (b, t))

    @torch.no_grad()
    def freeze(self, tail: torch.Tensor) -> FrozenTail:
        """Fold a constant past (1, k_t - 1, H, W, C) into the output: the past taps applied to it, plus the bias."""
        k = self.kernel_t - 1
        xp = torch.cat([tail, torch.zeros_like(tail[:, :1])], dim=1)            # (1, k + 1, H, W, C): no present
        past = self._conv(torch.cat([xp[:, j:j + 1] for j in range(k + 1)], dim=-1), self.weight, self.bias)
        return FrozenTail(past, self.weight[..., k * self.in_channels:].contiguous())


class ResBlock(nn.Module):
    """x + conv(1,3,3)(act(norm(conv(k_t,3,3)(act(norm(x)))))): one temporal mixing per block keeps it cheap."""

    def __init__(self, channels: int, kernel_t: int, eps: float):
        super().__init__()
        self.norm1 = ChannelRMSNorm(channels, eps)
        self.conv1 = CausalConv(channels, channels, kernel_t)
        self.norm2 = ChannelRMSNorm(channels, eps)
        self.conv2 = CausalConv(channels, channels, 1)

    def forward(self, x: torch.Tensor, tails: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), tails)
        return x + self.conv2(F.silu(self.norm2(h)))


def space_to_depth(x: torch.Tensor, ft: int, fs: int) -> torch.Tensor:
    """(B, T*ft, H*fs, W*fs, C) -> (B, T, H, W, C*ft*fs*fs), channels ordered (c ft fh fw).

    Two copies, each with a contiguous inner run, instead of one 8-d permute whose inner stride is C: that one
    copy ran at 25 ns per element on this CPU (4.8 ms for a step's largest, 0.9 ms in two). The one-permute
    `rearrange` stays the reference (test_vae.py)."""
    b, tt, hh, ww, c = x.shape
    t, h, w, g = tt // ft, hh // fs, ww // fs, ft * fs * fs
    y = x.reshape(b, t, ft, h, fs, w, fs, c).permute(0, 1, 3, 5, 2, 4, 6, 7).contiguous()  # (B, T, H, W, ft, fh, fw, C)
    return y.reshape(b, t, h, w, g, c).transpose(-1, -2).reshape(b, t, h, w, g * c)


def depth_to_space(x: torch.Tensor, ft: int, fs: int) -> torch.Tensor:
    """(B, T, H, W, C*ft*fs*fs) -> (B, T*ft, H*fs, W*fs, C); the inverse of `space_to_depth`."""
    return rearrange(x, "b t h w (c ft fh fw) -> b (t ft) (h fh) (w fw) c", ft=ft, fh=fs, fw=fs)


def group_mean(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """(..., G*C_out) -> (..., C_out): mean of each run of G consecutive channels (the shortcut down)."""
    return x.unflatten(-1, (out_channels, -1)).mean(dim=-1)


def group_repeat(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """(..., C) -> (..., G*C = out_channels): each channel repeated G times in a row (the shortcut up)."""
    return x.repeat_interleave(out_channels // x.shape[-1], dim=-1)


class Downsample(nn.Module):
    """Space-to-depth by (ft, 2, 2), a 1x1 conv, plus the channel-group-mean shortcut."""

    def __init__(self, in_channels: int, out_channels: int, ft: int):
        super().__init__()
        self.ft, self.out_channels = ft, out_channels
        self.proj = CausalConv(in_channels * ft * 4, out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = space_to_depth(x, self.ft, 2)       # (B, T/ft, H/2, W/2, C*ft*4)
        return self.proj(x) + group_mean(x, self.out_channels)


class Upsample(nn.Module):
    """A 1x1 conv, plus the channel-repeat shortcut, then depth-to-space by (ft, 2, 2)."""

    def __init__(self, in_channels: int, out_channels: int, ft: int):
        super().__init__()
        self.ft = ft
        self.proj = CausalConv(in_channels, out_channels * ft * 4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)                        # (B, T, H, W, C_out*ft*4)
        y = y + group_repeat(x, y.shape[-1])
        return depth_to_space(y, self.ft, 2)    # (B, T*ft, 2H, 2W, C_out)


class Encoder(nn.Module):
    """Front-padded frames (B, tf*T, H, W, 3) -> raw latents (B, T, H/s, W/s, C_lat), frame-major channels-last.

    Passing `tails` and `carries` streams: every causal conv continues from its tail, and every time-striding step
    (the stem and each Downsample) first prepends its carry, the frames that did not fill a group last time, and
    keeps the new leftovers. Any split of a clip into pieces then gives the whole clip's latents (`image_prefix`).
    """

    def __init__(self, cfg: CausalVAEConfig):
        super().__init__()
        self.cfg = cfg
        c, kt = cfg.block_out_channels, cfg.temporal_kernels
        self.conv_in = CausalConv(cfg.in_channels * cfg.patch_size_t * cfg.patch_size**2, c[0], kt[0])
        self.levels = nn.ModuleList(
            nn.ModuleList(ResBlock(c[i], kt[i], cfg.norm_eps) for _ in range(cfg.blocks_per_level[i]))
            for i in range(len(c)))
        self.downs = nn.ModuleList(Downsample(c[i], c[i + 1], ft) for i, ft in enumerate(cfg.level_temporal_strides))
        self.norm_out = ChannelRMSNorm(c[-1], cfg.norm_eps)
        self.conv_out = CausalConv(c[-1], cfg.latent_channels, 1)
        # Stream layout: one tail per causal conv with k_t > 1, in module order: (k_t - 1, channels, downscale);
        # one carry per time stride: (stride, channels, downscale) of the frames it groups.
        scale = {id(self.conv_in): cfg.patch_size}
        for i, blocks in enumerate(self.levels):
            scale.update({id(block.conv1): cfg.patch_size * 2**i for block in blocks})
        self.tail_spec: list[tuple[int, int, int]] = []
        self.temporal_convs: list[CausalConv] = []   # by slot (a plain list: not registered twice)
        for m in self.modules():
            if isinstance(m, CausalConv) and m.kernel_t > 1:
                m.slot = len(self.tail_spec)
                self.tail_spec.append((m.kernel_t - 1, m.in_channels, scale[id(m)]))
                self.temporal_convs.append(m)
        self.carry_spec = [(cfg.patch_size_t, cfg.in_channels, 1)] + [
            (ft, c[i], cfg.patch_size * 2**i) for i, ft in enumerate(cfg.level_temporal_strides)]

    def forward(self, x: torch.Tensor, tails: Sequence[torch.Tensor | FrozenTail] | None = None,
                carries: list[torch.Tensor] | None = None) -> torch.Tensor:
        cfg = self.cfg
        x = _regroup(x, cfg.patch_size_t, carries, 0)
        h = self.conv_in(space_to_depth(x, cfg.patch_size_t, cfg.patch_size), tails)  # (B, T', H/p, W/p, c0)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, tails)
            if i < len(self.downs):
                h = self.downs[i](_regroup(h, self.downs[i].ft, carries, i + 1))
        return self.conv_out(F.silu(self.norm_out(h))) + group_mean(h, cfg.latent_channels)


def _regroup(x: torch.Tensor, ft: int, carries: list[torch.Tensor] | None, i: int) -> torch.Tensor:
    """Before a time stride of ft when streaming: prepend carries[i] and keep the frames past the last whole group
    as the new carries[i]. (B, T, ...) -> (B, ft * n, ...)."""
    if carries is None:
        return x
    x = torch.cat([carries[i], x], dim=1)                          # (B, r + T, ...)
    whole = x.shape[1] - x.shape[1] % ft
    carries[i] = x[:, whole:]
    return x[:, :whole]


class Decoder(nn.Module):
    """Raw latents (B, T, h, w, C_lat) -> (B, tf*T, H, W, 3), pad slots included; the mirror of `Encoder`.

    Passing `tails` (a `VAEDecoderCache`'s list) switches every causal conv to streaming.
    """

    def __init__(self, cfg: CausalVAEConfig):
        super().__init__()
        self.cfg = cfg
        c, kt = cfg.block_out_channels, cfg.temporal_kernels
        self.conv_in = CausalConv(cfg.latent_channels, c[-1], kt[-1])
        self.levels = nn.ModuleList(
            nn.ModuleList(ResBlock(c[i], kt[i], cfg.norm_eps) for _ in range(cfg.blocks_per_level[i]))
            for i in range(len(c)))
        self.ups = nn.ModuleList(Upsample(c[i + 1], c[i], ft) for i, ft in enumerate(cfg.level_temporal_strides))
        self.norm_out = ChannelRMSNorm(c[0], cfg.norm_eps)
        self.conv_out = CausalConv(c[0], cfg.in_channels * cfg.patch_size_t * cfg.patch_size**2, 1)
        # Cache layout: one slot per causal conv with k_t > 1, in module order: (k_t - 1, channels, spatial scale).
        scale = {id(self.conv_in): 1}
        for i, blocks in enumerate(self.levels):
            scale.update({id(block.conv1): 2 ** (len(c) - 1 - i) for block in blocks})
        self.cache_spec: list[tuple[int, int, int]] = []
        for m in self.modules():
            if isinstance(m, CausalConv) and m.kernel_t > 1:
                m.slot = len(self.cache_spec)
                self.cache_spec.append((m.kernel_t - 1, m.in_channels, scale[id(m)]))

    def forward(self, z: torch.Tensor, tails: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        cfg = self.cfg
        h = self.conv_in(z, tails) + group_repeat(z, cfg.block_out_channels[-1])     # (B, T, h, w, c_last)
        for i in reversed(range(len(self.levels))):
            for block in self.levels[i]:
                h = block(h, tails)
            if i > 0:
                h = self.ups[i - 1](h)
        h = self.conv_out(F.silu(self.norm_out(h)))                                  # (B, T', H/p, W/p, 3*pt*p*p)
        return depth_to_space(h, cfg.patch_size_t, cfg.patch_size)


# ----------------------------------------------------------------------------------------------------------------------
# The autoencoder


class CausalVAE(nn.Module):
    """Causal video autoencoder: frames in [-1, 1] (B, 3, F, H, W) <-> latents (B, C, T_lat, H/8, W/8).

    `encode` / `decode` work on whole clips (F = 1 + 4k <-> T_lat = 1 + k). `decode_step` decodes one latent frame
    through a caller-owned `VAEDecoderCache` and matches `decode` to float32 round-off.
    """

    def __init__(self, config: CausalVAEConfig | None = None):
        super().__init__()
        self.config = config = config or CausalVAEConfig()
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.register_buffer("latents_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latents_std", torch.ones(config.latent_channels))
        self.register_buffer("scaling_factor", torch.ones(1))

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T_lat, h, w) of a clip; raises ValueError if the clip cannot be encoded."""
        self._check_frames_shape((1, self.config.in_channels, num_frames, height, width))
        s, t = self.spatial_factor, self.temporal_factor
        return self.latent_channels, 1 + (num_frames - 1) // t, height // s, width // s

    def num_frames(self, num_latents: int) -> int:
        """Raw frames decoded from `num_latents` latent frames: 1 + tf * (T_lat - 1)."""
        return 1 + self.temporal_factor * (num_latents - 1)

    # -- latent normalisation -------------------------------------------------------------------------------------

    def normalize_latents(self, z_raw: torch.Tensor) -> torch.Tensor:
        """Raw encoder output -> what the DiT sees: (z - mean) * scaling_factor / std, per channel."""
        mean, std = self.latents_mean.view(1, -1, 1, 1, 1), self.latents_std.view(1, -1, 1, 1, 1)
        return (z_raw - mean) * (self.scaling_factor / std)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize_latents`."""
        mean, std = self.latents_mean.view(1, -1, 1, 1, 1), self.latents_std.view(1, -1, 1, 1, 1)
        return z * (std / self.scaling_factor) + mean

    @torch.no_grad()
    def set_latent_stats_(self, z_raw: torch.Tensor) -> None:
        """Fit `latents_mean` / `latents_std` to a sample of raw latents (B, C, T, h, w), in place, after training."""
        self._check_latent_shape(z_raw)
        flat = z_raw.transpose(0, 1).reshape(self.latent_channels, -1).float()    # (C, N)
        self.latents_mean.copy_(flat.mean(dim=1))
        self.latents_std.copy_(flat.std(dim=1).clamp_min(1e-6))

    # -- whole clips --------------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Frames (B, 3, 1 + tf*k, H, W) in [-1, 1] -> latents (B, C, 1 + k, H/s, W/s), normalised by default."""
        self._check_frames_shape(tuple(x.shape))
        x = x.permute(0, 2, 3, 4, 1)                                  # (B, F, H, W, 3): frame-major, channels-last
        x = F.pad(x, (0, 0, 0, 0, 0, 0, self.temporal_factor - 1, 0))  # (B, tf*(1+k), H, W, 3): first frame alone
        z = self.encoder(x).permute(0, 4, 1, 2, 3).contiguous()       # (B, C, 1+k, h, w)
        return self.normalize_latents(z) if normalize else z

    def image_prefix(self, height: int, width: int) -> ImagePrefix:
        """The encoder's stream state after the tf - 1 pad frames that precede every first frame: a function of the
        weights alone (batch 1). Why: `encode` of an image runs 4 frames at the finest level where 1 is the image,
        and every temporal conv runs all its taps where all but one see constants; from this state the image runs
        once per level and one tap per conv (`encode_image`). Recompute it after the weights change."""
        p = next(self.parameters())
        tails = [torch.zeros(1, k, height // s, width // s, ch, device=p.device, dtype=p.dtype)
                 for k, ch, s in self.encoder.tail_spec]
        carries = [torch.zeros(1, 0, height // s, width // s, ch, device=p.device, dtype=p.dtype)
                   for _, ch, s in self.encoder.carry_spec]
        pad = torch.zeros(1, self.temporal_factor - 1, height, width, self.config.in_channels, device=p.device,
                          dtype=p.dtype)
        with torch.no_grad():
            z = self.encoder(pad, tails, carries)
            if z.shape[1] != 0:
                raise RuntimeError(f"the pad frames must not complete a latent, got {z.shape[1]}")
            frozen = [conv.freeze(tail) for conv, tail in zip(self.encoder.temporal_convs, tails)]
        return ImagePrefix(frozen, carries, height, width, tails)

    def encode_image(self, x: torch.Tensor, prefix: ImagePrefix | None = None, normalize: bool = True) -> torch.Tensor:
        """Single frames (B, 3, 1, H, W) -> latents (B, C, 1, h, w): `encode` of each as a clip of one frame, by
        streaming it from `image_prefix` (given, or computed here at batch 1). Equal to `encode` to float round-off."""
        self._check_frames_shape(tuple(x.shape))
        if x.shape[2] != 1:
            raise ValueError(f"encode_image takes single frames (B, 3, 1, H, W), got {tuple(x.shape)}")
        z = self._encode_from_prefix(x, prefix, clip=False)                 # (B, C, 1, h, w)
        return self.normalize_latents(z) if normalize else z

    def encode_clip(self, x: torch.Tensor, prefix: ImagePrefix | None = None) -> torch.Tensor:
        """Clips (B, 3, 1 + tf*k, H, W) -> normalised latents (B, C, 1 + k, h, w): `encode`, streamed from the
        prefix's state after the pad frames, so they do not run again (5 frames instead of 8 for k = 1)."""
        self._check_frames_shape(tuple(x.shape))
        return self.normalize_latents(self._encode_from_prefix(x, prefix, clip=True))

    def _encode_from_prefix(self, x: torch.Tensor, prefix: ImagePrefix | None, clip: bool) -> torch.Tensor:
        """Frames (B, 3, F, H, W) streamed from the pad prefix's state -> raw latents (B, C, T, h, w). One frame
        runs the frozen tails (one tap per conv); a clip runs from copies of the stream tails, which its convs
        write as it goes. The prefix itself is never written."""
        b, _, _, hgt, wid = x.shape
        prefix = self.image_prefix(hgt, wid) if prefix is None else prefix
        if (prefix.height, prefix.width) != (hgt, wid):
            raise ValueError(f"prefix was made for {prefix.height}x{prefix.width} frames, got {hgt}x{wid}")
        tails = [t.expand(b, *t.shape[1:]).clone() for t in prefix.stream_tails] if clip else prefix.tails
        carries = [c.expand(b, *c.shape[1:]) for c in prefix.carries]        # replaced in this list, never written
        z = self.encoder(x.permute(0, 2, 3, 4, 1), tails, carries)          # (B, T, h, w, C)
        return z.permute(0, 4, 1, 2, 3).contiguous()                       # (B, C, T, h, w)

    def decode(self, z: torch.Tensor, normalized: bool = True, clamp: bool = True) -> torch.Tensor:
        """Latents (B, C, T, h, w) -> frames (B, 3, 1 + tf*(T-1), h*s, w*s), causal in time, in [-1, 1] if `clamp`."""
        self._check_latent_shape(z)
        if normalized:
            z = self.denormalize_latents(z)
        x = self.decoder(z.permute(0, 2, 3, 4, 1))[:, self.temporal_factor - 1:]   # (B, F, H, W, 3), pads dropped
        x = x.permute(0, 4, 1, 2, 3)                                                 # (B, 3, F, H, W)
        return (x.clamp(-1.0, 1.0) if clamp else x).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training reconstruction: encode then decode raw latents, unclamped (a clamp would stop gradients)."""
        return self.decode(self.encode(x, normalize=False), normalized=False, clamp=False)

    # -- streaming ------------------------------------------------------------------------------------------------

    def init_decoder_cache(self, batch_size: int, lat_h: int, lat_w: int, device: torch.device | str | None = None,
                           dtype: torch.dtype | None = None) -> VAEDecoderCache:
        """A zeroed (stream-start) cache for `decode_step` on a lat_h x lat_w latent grid."""
        p = next(self.parameters())
        device = p.device if device is None else torch.device(device)
        dtype = p.dtype if dtype is None else dtype
        tails = [torch.zeros(batch_size, k, lat_h * s, lat_w * s, ch, device=device, dtype=dtype)
                 for k, ch, s in self.decoder.cache_spec]
        return VAEDecoderCache(tails=tails, step=torch.zeros(batch_size, dtype=torch.long, device=device),
                               lat_h=lat_h, lat_w=lat_w)

    @torch.no_grad()
    def decode_step(self, z_t: torch.Tensor, cache: VAEDecoderCache, first: bool = False, normalized: bool = True,
                    clamp: bool = True) -> torch.Tensor:
        """Decode one latent frame z_t (B, C, 1, h, w), updating `cache` in place.

        Returns (B, 3, tf, H, W): the frames of this latent. With `first=True` (the whole batch is on its latent 0)
        it returns only the real frame, (B, 3, 1, H, W). A row that restarts while others go on (after `reset_`)
        can use `first=False`: its 4 frames are 3 pad slots and then its frame 0 (`cache.step` tells which rows).
        Static shapes, in-place cache writes, no host sync: capturable as a CUDA graph (one per value of `first`).
        """
        expected = (cache.batch_size, self.latent_channels, 1, cache.lat_h, cache.lat_w)
        if tuple(z_t.shape) != expected:
            raise ValueError(f"decode_step: expected z_t of shape {expected} (B, C, 1, h, w) for this cache, "
                             f"got {tuple(z_t.shape)}")
        if normalized:
            z_t = self.denormalize_latents(z_t)
        x = self.decoder(z_t.permute(0, 2, 3, 4, 1), cache.tails)    # (B, tf, H, W, 3)
        cache.step.add_(1)
        if first:
            x = x[:, -1:]
        x = x.permute(0, 4, 1, 2, 3)                                  # (B, 3, tf or 1, H, W)
        return (x.clamp(-1.0, 1.0) if clamp else x).contiguous()

    # -- checks ---------------------------------------------------------------------------------------------------

    def _check_frames_shape(self, shape: tuple[int, ...]) -> None:
        cin, s, t = self.config.in_channels, self.spatial_factor, self.temporal_factor
        if len(shape) != 5:
            raise ValueError(f"expected frames of shape (B, {cin}, F, H, W), got {shape}")
        _, c, f, h, w = shape
        if c != cin:
            raise ValueError(f"expected {cin} channels in frames (B, C, F, H, W), got {c} (shape {shape})")
        if f < 1 or (f - 1) % t:
            raise ValueError(f"expected F = 1 + {t}k frames (1, {1 + t}, {1 + 2 * t}, ...), got F = {f}")
        if h % s or w % s or h == 0 or w == 0:
            raise ValueError(f"expected H and W divisible by {s}, got H x W = {h} x {w}")

    def _check_latent_shape(self, z: torch.Tensor) -> None:
        c = self.latent_channels
        if z.dim() != 5 or z.shape[1] != c or z.shape[2] < 1:
            raise ValueError(f"expected latents of shape (B, {c}, T, h, w) with T >= 1, got {tuple(z.shape)}")


# ----------------------------------------------------------------------------------------------------------------------
# The published LTX-2 VAE


class LTX2VAE(nn.Module):
    """diffusers' `AutoencoderKLLTX2Video` behind the same `encode` / `decode` API, with SANA-WM's normalisation.

    Encode takes the posterior mode and normalises z = (z - latents_mean) * scaling_factor / latents_std per channel
    (the VAE's own buffers and config); decode applies the inverse with no timestep conditioning. Whole clips only:
    diffusers' LTX-2 convs keep no cache, so there is no `decode_step`. diffusers is imported lazily and weights load
    from a local folder only; nothing is downloaded.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    @classmethod
    def from_pretrained(cls, path: str | Path, subfolder: str | None = None,
                        torch_dtype: torch.dtype | None = None) -> LTX2VAE:
        """Load from a local diffusers folder (config.json + weights), e.g. `<SANA-WM root>` with subfolder="vae"."""
        try:
            from diffusers import AutoencoderKLLTX2Video
        except ImportError as e:
            raise ImportError("LTX2VAE needs diffusers (the 'dev' extra: diffusers==0.42.1)") from e
        folder = Path(path) / subfolder if subfolder else Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"LTX2VAE: expected a local diffusers folder with config.json at {folder}; "
                                    f"nothing is downloaded")
        vae = AutoencoderKLLTX2Video.from_pretrained(path, subfolder=subfolder, torch_dtype=torch_dtype,
                                                     local_files_only=True)
        return cls(vae.eval())

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.spatial_compression_ratio)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.temporal_compression_ratio)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def num_frames(self, num_latents: int) -> int:
        """Raw frames decoded from `num_latents` latent frames: 1 + tf * (T_lat - 1)."""
        return 1 + self.temporal_factor * (num_latents - 1)

    def normalize_latents(self, z_raw: torch.Tensor) -> torch.Tensor:
        """Posterior mode -> what the DiT sees: (z - mean) * scaling_factor / std, per channel."""
        mean, std = self.vae.latents_mean.view(1, -1, 1, 1, 1), self.vae.latents_std.view(1, -1, 1, 1, 1)
        return (z_raw - mean.to(z_raw)) * self.scaling_factor / std.to(z_raw)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize_latents`."""
        mean, std = self.vae.latents_mean.view(1, -1, 1, 1, 1), self.vae.latents_std.view(1, -1, 1, 1, 1)
        return z * std.to(z) / self.scaling_factor + mean.to(z)

    def encode(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Frames (B, 3, 1 + tf*k, H, W) in [-1, 1] -> latents (B, C, 1 + k, H/s, W/s)."""
        cin, s, t = self.vae.config.in_channels, self.spatial_factor, self.temporal_factor
        if x.dim() != 5 or x.shape[1] != cin or (x.shape[2] - 1) % t or x.shape[3] % s or x.shape[4] % s:
            raise ValueError(f"expected frames (B, {cin}, 1 + {t}k, H, W) with H and W divisible by {s}, "
                             f"got {tuple(x.shape)}")
        z = self.vae.encode(x).latent_dist.mode()          # (B, C, 1 + k, H/s, W/s)
        return self.normalize_latents(z) if normalize else z

    def image_prefix(self, height: int, width: int) -> None:
        """No streaming encoder here: `encode_image` encodes whole one-frame clips."""
        return None

    def encode_clip(self, x: torch.Tensor, prefix: None = None) -> torch.Tensor:
        """Clips (B, 3, 1 + tf*k, H, W) -> normalised latents, as `encode`."""
        return self.encode(x)

    def encode_image(self, x: torch.Tensor, prefix: None = None, normalize: bool = True) -> torch.Tensor:
        """Single frames (B, 3, 1, H, W) -> latents (B, C, 1, h, w), as `encode`."""
        return self.encode(x, normalize)

    def decode(self, z: torch.Tensor, normalized: bool = True, clamp: bool = True) -> torch.Tensor:
        """Latents (B, C, T, h, w) -> frames (B, 3, 1 + tf*(T-1), h*s, w*s)."""
        c = self.latent_channels
        if z.dim() != 5 or z.shape[1] != c:
            raise ValueError(f"expected latents of shape (B, {c}, T, h, w), got {tuple(z.shape)}")
        if normalized:
            z = self.denormalize_latents(z)
        x = self.vae.decode(z, return_dict=False)[0]
        return x.clamp(-1.0, 1.0) if clamp else x
