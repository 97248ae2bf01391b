"""The SANA-WM building blocks that are not attention: norms, embedders, cross-attention, the temporal FFN,
and the final layer. Module and parameter names follow the published checkpoint (sana_wm_architecture.md §1.6).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Sana RMSNorm over the last dim: statistics in float32, weight applied in the input dtype."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32 and hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)  # one fused op (torch >= 2.4)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return y.to(weight.dtype) * weight


class RMSNorm(nn.Module):
    """`rms_norm` with a learned weight. `fn` is the function that computes it: `rms_norm`, or its compiled form
    (model/fused.py)."""

    def __init__(self, dim: int, eps: float = 1e-5, init: float = 1.0):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((dim,), float(init)))
        self.fn = rms_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.weight, self.eps)


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[N] timesteps -> [N, dim] features in [cos, sin] order (the published order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid -> Linear -> SiLU -> Linear (keys t_embedder.mlp.0 / mlp.2)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_sinusoid(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class Mlp(nn.Module):
    """timm-style two-layer MLP with tanh-GELU (keys fc1 / fc2)."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    """Caption features -> model width. `y_embedding` is the null caption used when none is given.

    The published checkpoint stores a (300, 2304) null embedding; here it is also the default input,
    so nothing needs a text encoder to run.
    """

    def __init__(self, caption_channels: int, hidden: int, caption_len: int):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden, hidden)
        self.register_buffer("y_embedding", torch.randn(caption_len, caption_channels) / caption_channels**0.5)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.y_proj(caption)


class PatchEmbed(nn.Module):
    """Conv3d with kernel = stride = patch, flattened to tokens in (t, h, w) raster order (key `proj`)."""

    def __init__(self, patch: tuple[int, int, int], in_channels: int, hidden: int):
        super().__init__()
        self.patch = tuple(patch)
        self.proj = nn.Conv3d(in_channels, hidden, kernel_size=self.patch, stride=self.patch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, T, h, w) -> (B, T*h*w, C)

    def visible_projector(self) -> torch.Tensor | None:
        """(D, D) float64 orthogonal projector onto the patch vectors this embedding can tell apart (its weight's row
        space; D = C * pt * ph * pw in the weight's (c, t, h, w) order), or None where it tells all of them apart.

        Where D exceeds the hidden size (tiny128: 256 values per patch, 192 channels), part of every patch is
        invisible to the model, so a sampler's x0 = x - sigma * v keeps that part of the noise in x: it decodes as
        coloured speckle. Noise projected onto the row space leaves every model output unchanged and removes it."""
        w = self.proj.weight.detach().flatten(1)                           # (hidden, D)
        if w.shape[0] >= w.shape[1]:   # by the shape, reading no value back: a trained map this wide has full rank
            return None
        w = w.double()
        return torch.linalg.pinv(w) @ w

    def visible(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, C, T, H, W] projected per patch onto what this embedding sees, z itself where it sees all; the
        projector comes from the weights at each call (training, where they change; a generator keeps its own)."""
        projector = self.visible_projector()
        return z if projector is None else self.project(z, projector.to(z.device))

    def project(self, x: torch.Tensor, projector: torch.Tensor) -> torch.Tensor:
        """Each patch of x [B, C, T, H, W] replaced by its projection (projector: (D, D), e.g. `visible_projector`)."""
        b, c, t, h, w = x.shape
        pt, ph, pw = self.patch
        v = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        shape = v.shape                                                    # (B, T', H', W', C, pt, ph, pw)
        v = v.reshape(*shape[:4], -1) @ projector.to(x.dtype).T             # (B, T', H', W', D)
        return v.reshape(shape).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, c, t, h, w)


class CrossAttention(nn.Module):
    """Queries from the video tokens, keys and values from the caption; full-width q/k RMSNorm; no gate."""

    def __init__(self, hidden: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.q_linear = nn.Linear(hidden, hidden)
        self.kv_linear = nn.Linear(hidden, 2 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.q_norm = RMSNorm(hidden, eps)
        self.k_norm = RMSNorm(hidden, eps)

    def keys_values(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption keys and values [B, heads, L, d]: they depend on the caption only, so a step computes them once."""
        b, _, c = y.shape
        k, v = self.kv_linear(y).view(b, -1, 2, c).unbind(2)                          # (B, L, C) each
        k = self.k_norm(k).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        return k, v.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, N, C]; y: [B, L, C] caption tokens, or their precomputed `keys_values`; mask: [B, L] or None."""
        b, n, c = x.shape
        q = self.q_norm(self.q_linear(x)).view(b, n, self.heads, -1).transpose(1, 2)  # (B, heads, N, d)
        k, v = y if isinstance(y, tuple) else self.keys_values(y)
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ConvLayer(nn.Module):
    """A 2-D conv wrapped as `.conv` so the checkpoint keys read mlp.inverted_conv.conv.weight etc."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def depthwise3x3_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A depthwise 3x3 conv with zero padding 1 as a sum of nine shifted, weighted copies, channels last:
    x [N, h, w, C], weight [C, 1, 3, 3] -> [N, h, w, C]. Why: on a 4x4 token grid the oneDNN call costs ~0.3 ms
    for ~0.1 MFLOP (24 of them per tiny step), and under torch.compile these pointwise taps fuse into one loop.
    `F.conv2d` stays the reference (test_layers.py)."""
    h, w = x.shape[1:3]
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))                                           # (N, h+2, w+2, C)
    taps = weight.flatten(1).t()                                               # (9, C), row i*3+j
    out = xp[:, :h, :w] * taps[0] if bias is None else torch.addcmul(bias, xp[:, :h, :w], taps[0])
    for k in range(1, 9):
        i, j = divmod(k, 3)
        out = out + xp[:, i:i + h, j:j + w] * taps[k]
    return out


class GLUMBConvTemp(nn.Module):
    """Per-frame gated inverted-bottleneck conv, then a residual temporal conv across frames.

    The temporal conv (kernel 3, zero-initialised when trained from scratch) mixes each frame with its
    neighbours. Bidirectionally it sees frames t-1..t+1 of the clip. Chunk-causally it sees the previous
    chunk's last frame on the left and zeros past the end of its own chunk, so a streamed chunk only
    needs the last pre-conv frame of the previous chunk (`tail`).
    """

    def __init__(self, hidden: int, mlp_hidden: int, t_kernel: int = 3):
        super().__init__()
        if t_kernel != 3:
            raise ValueError(f"the temporal conv supports kernel 3 (one frame each side), got {t_kernel}")
        self.inverted_conv = ConvLayer(hidden, 2 * mlp_hidden, 1)
        self.depth_conv = ConvLayer(2 * mlp_hidden, 2 * mlp_hidden, 3, groups=2 * mlp_hidden)
        self.point_conv = ConvLayer(mlp_hidden, hidden, 1, bias=False)
        self.t_conv = nn.Conv2d(hidden, hidden, kernel_size=(t_kernel, 1), padding=(t_kernel // 2, 0), bias=False)

    def spatial(self, x: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        """[B, T*h*w, C] -> [B, T, h*w, C]: the per-frame part, before the temporal conv.

        The 1x1 convs run as linears on tokens and the depthwise 3x3 on a channels-last view, so no
        layout change costs a copy.
        """
        b, n, c = x.shape
        wi = self.inverted_conv.conv
        y = F.silu(F.linear(x, wi.weight.flatten(1), wi.bias))                 # (B, N, 2h)
        y = y.reshape(b * frames, h, w, -1)                                      # (B*T, h, w, 2h)
        dc = self.depth_conv.conv
        if torch.compiler.is_compiling():  # one fused loop instead of a oneDNN call per block and pass
            y = depthwise3x3_taps(y, dc.weight, dc.bias)                         # (B*T, h, w, 2h)
        else:  # on a channels-last view (B*T, 2h, h, w): no layout copy
            y = F.conv2d(y.permute(0, 3, 1, 2), dc.weight, dc.bias, padding=1, groups=dc.groups).permute(0, 2, 3, 1)
        a, g = y.chunk(2, dim=-1)
        y = F.linear(a * F.silu(g), self.point_conv.conv.weight.flatten(1))    # (B*T, h, w, C)
        return y.reshape(b, frames, h * w, c)

    def temporal(self, y: torch.Tensor, chunks: list[int] | None, tail: torch.Tensor | None) -> torch.Tensor:
        """y: [B, T, S, C] -> y + t_conv(y) along frames.

        chunks=None: the whole clip with zero padding at both ends; else chunk-causal: the left neighbour
        of a chunk's first frame is the previous chunk's last frame (`tail` [B, 1, S, C] for the first
        chunk of this call, zeros at stream start) and the right neighbour past a chunk's end is zero.
        """
        prev = torch.cat([tail if tail is not None else torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1)
        nxt = torch.cat([y[:, 1:], torch.zeros_like(y[:, :1])], dim=1)
        if chunks is not None and len(chunks) > 1:  # zero the right neighbour of each chunk's last frame; plain
            end = 0                                   # Python indices, so a CUDA graph captures it (no host tensor)
            for n in chunks[:-1]:
                end += n
                nxt[:, end - 1] = 0.0
        # One matmul against the weight as stored: (C_out, C_in, 3, 1) flattens to (C_out, 3 C_in) with the tap
        # fastest, so the neighbours are interleaved the same way. Slicing one tap out instead gives a strided
        # weight that every F.linear copies (48 copies of C x C per tiny step, measured 8 % of the CPU step).
        taps = torch.stack([prev, y, nxt], dim=-1).flatten(-2)                  # (B, T, S, 3C) index c * 3 + tap
        return y + F.linear(taps, self.t_conv.weight.flatten(1))

    def forward(self, x: torch.Tensor, frames: int, h: int, w: int, chunks: list[int] | None = None,
                tail: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        return self.temporal(self.spatial(x, frames, h, w), chunks, tail).reshape(b, n, c)


class FinalLayer(nn.Module):
    """LayerNorm, per-frame shift/scale from the table plus the raw timestep embedding, Linear to patch outputs."""

    def __init__(self, hidden: int, patch: tuple[int, int, int], out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, math.prod(patch) * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden) / hidden**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, T*S, C]; t: [B, T, C] raw timestep embedding per frame."""
        b, n, c = x.shape
        frames = t.shape[1]
        shift, scale = (self.scale_shift_table[None, None] + t[:, :, None]).unbind(2)  # (B, T, C) each
        y = self.norm_final(x).view(b, frames, -1, c) * (1 + scale[:, :, None]) + shift[:, :, None]
        return self.linear(y.view(b, n, c))
