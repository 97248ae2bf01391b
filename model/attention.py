"""Self-attention of a SANA-WM block: a main branch (frame-wise Gated DeltaNet, or softmax every 4th block)
plus the UCPE camera branch, summed before one shared output gate and projection (§2-§4.1 of the reference).

The two kinds share parameter names (the softmax blocks only lack the short convs), so the block never
branches on type. Layers own parameters; the maths lives in `model/gdn.py`, `model/rope.py` and
`model/camera.py`.

Time layouts, given by `AttnContext.chunks`:
- None: bidirectional over the whole clip (the released bidirectional model);
- [c0, c1, ...]: chunk-causal (training and streaming): a token sees its own chunk fully and all earlier
  chunks; GDN runs its forward scan across chunks and its backward scan inside each chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import gdn
from .camera import UCPETransforms, apply_ucpe, post_ucpe_renorm
from .config import WorldModelConfig
from .layers import RMSNorm
from .rope import apply_rope


@dataclass
class AttnContext:
    """What every block's attention needs to know about the tokens of this call (shared by all blocks)."""

    frames: int                          # latent frames T in this call
    grid: tuple[int, int]                # token grid (h, w); S = h * w tokens per frame
    rope: torch.Tensor                   # [T*S, D/2] complex, absolute frame positions
    chunks: list[int] | None = None      # None: bidirectional; else chunk-causal layout (sums to T)
    cam: UCPETransforms | None = None    # per-token ray transforms; None disables the camera branch
    cam_rope: torch.Tensor | None = None  # [T*S, D/4] complex, reduced table for the camera branch

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


class ShortConv(nn.Module):
    """Depthwise temporal conv weight (C, 1, K), FLA layout (tap K-1 multiplies the current frame)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        w = torch.zeros(channels, 1, kernel)
        w[:, 0, -1] = 1.0  # identity at init
        self.weight = nn.Parameter(w)


def chunk_causal_mask(chunks: list[int], tokens_per_frame: int, device) -> torch.Tensor:
    """[N, N] bool, True where query token may attend key token: chunk(q) >= chunk(k)."""
    ids = torch.repeat_interleave(torch.arange(len(chunks), device=device),
                                  torch.tensor(chunks, device=device) * tokens_per_frame)
    return ids[:, None] >= ids[None, :]


def _sdpa(q, k, v, mask, bf16: bool, pad_to: int | None = None):
    """SDPA on [B, H, N, D]; optional bf16 cast (as published for fp32 inputs) and zero head-dim padding.

    Zero padding without an explicit scale changes the temperature to 1/sqrt(pad_to): the published
    camera branch does this, so it is a flag, not an accident.
    """
    dtype = v.dtype
    if bf16 and q.dtype == torch.float32:
        q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    d = q.shape[-1]
    if pad_to is not None and pad_to > d:
        q, k, v = (F.pad(t, (0, pad_to - d)) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out[..., :d].to(dtype)


class SanaWMAttention(nn.Module):
    """GDN (softmax=False) or softmax (softmax=True) self-attention with the UCPE camera branch."""

    def __init__(self, cfg: WorldModelConfig, softmax: bool):
        super().__init__()
        c, h = cfg.hidden_size, cfg.num_heads
        self.cfg, self.softmax, self.heads, self.head_dim = cfg, softmax, h, cfg.head_dim
        # 1. Main branch.
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.proj = nn.Linear(c, c)
        self.q_norm = RMSNorm(c, cfg.qk_norm_eps)
        self.k_norm = RMSNorm(c, cfg.qk_norm_eps)
        # 2. Gates (used by GDN; present in softmax blocks too, as in the checkpoint).
        self.beta_proj = nn.Linear(c, h)
        self.gate_proj = nn.Linear(c, h)
        self.A_log = nn.Parameter(torch.zeros(h))
        self.dt_bias = nn.Parameter(torch.full((h,), -5.0))
        self.register_buffer("recall_gate", torch.zeros(1))
        self.output_gate = nn.Linear(c, c)
        # 3. Camera branch.
        self.q_proj_cam = nn.Linear(c, c)
        self.k_proj_cam = nn.Linear(c, c)
        self.v_proj_cam = nn.Linear(c, c)
        self.out_proj_cam = nn.Linear(c, c)
        self.q_norm_cam = RMSNorm(c, cfg.qk_norm_eps)
        self.k_norm_cam = RMSNorm(c, cfg.qk_norm_eps)
        if not softmax:
            self.conv_k = ShortConv(c, cfg.conv_kernel)
            self.conv_k_cam = ShortConv(c, cfg.conv_kernel)
        self.reset_training_init()

    @torch.no_grad()
    def reset_training_init(self) -> None:
        """Published training init: beta bias 5, decay gate ~ plain linear attention, output gate SiLU(b) = 1,
        camera output projection zero (the camera branch starts silent)."""
        nn.init.constant_(self.beta_proj.bias, 5.0)
        nn.init.zeros_(self.gate_proj.weight)
        nn.init.zeros_(self.output_gate.weight)
        nn.init.constant_(self.output_gate.bias, 1.27846)
        nn.init.zeros_(self.out_proj_cam.weight)
        nn.init.zeros_(self.out_proj_cam.bias)

    # ------------------------------------------------------------------ helpers
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, N, C) -> (B, H, N, D)

    def _frames(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.view(b, h, ctx.frames, ctx.tokens_per_frame, d)  # (B, H, N, D) -> (B, H, T, S, D)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)  # (B, H, N, D) -> (B, N, C)

    def _conv(self, x: torch.Tensor, conv: ShortConv, ctx: AttnContext, cross_chunk: bool) -> torch.Tensor:
        """Temporal short conv of [B, N, C] keys along frames."""
        b, n, c = x.shape
        xt = x.view(b, ctx.frames, ctx.tokens_per_frame, c)
        if ctx.chunks is None:
            y = gdn.short_conv_bidirectional(xt, conv.weight)
        else:
            y, _ = gdn.short_conv_chunk_causal(xt, conv.weight, ctx.chunks, cross_chunk=cross_chunk)
        return y.reshape(b, n, c).to(x.dtype)

    def _gates(self, x: torch.Tensor, ctx: AttnContext) -> tuple[torch.Tensor, torch.Tensor]:
        """beta [B, H, T, S] per token; gamma [B, H, T] per frame (from the spatial mean), in float32."""
        b, n, c = x.shape
        beta = torch.sigmoid(self.beta_proj(x)).view(b, ctx.frames, ctx.tokens_per_frame, self.heads)
        beta = beta.permute(0, 3, 1, 2).float()
        a = self.gate_proj(x.view(b, ctx.frames, ctx.tokens_per_frame, c).mean(2)).float()  # (B, T, H)
        gamma = torch.exp(-torch.exp(self.A_log.float()) * F.softplus(a + self.dt_bias.float()))
        return beta, gamma.transpose(1, 2)

    def _key_scale(self, ctx: AttnContext) -> float:
        return (self.head_dim ** -0.5) * (ctx.tokens_per_frame ** -0.5)

    # ------------------------------------------------------------------ branches
    def _main_gdn(self, x, ctx, beta, gamma):
        b, n, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k = self._conv(k, self.conv_k, ctx, cross_chunk=True)
        q = F.relu(self.q_norm(q))
        k = F.relu(self.k_norm(k)) * self._key_scale(ctx)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        q_rot, k_rot = apply_rope(q, ctx.rope), apply_rope(k, ctx.rope)
        args = [self._frames(t, ctx) for t in (q, k, v, q_rot, k_rot)]
        if ctx.chunks is None:
            out = gdn.gdn_bidirectional(*args, beta, gamma, eps=self.cfg.gdn_eps)
        else:
            out, _, _ = gdn.gdn_chunk_causal(*args, beta, gamma, chunks=ctx.chunks, eps=self.cfg.gdn_eps)
        return self._merge(out.reshape(b, self.heads, n, self.head_dim))

    def _main_softmax(self, x, ctx, mask):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self._heads(self.q_norm(q)), self._heads(self.k_norm(k)), self._heads(v)
        q, k = apply_rope(q, ctx.rope), apply_rope(k, ctx.rope)
        return self._merge(_sdpa(q, k, v, mask, bf16=self.cfg.softmax_bf16))

    def _camera(self, x, ctx, beta, gamma, mask):
        b, n, c = x.shape
        q, k, v = self.q_proj_cam(x), self.k_proj_cam(x), self.v_proj_cam(x)
        if not self.softmax:
            # In streaming the camera conv has no cross-chunk context, so chunk-causal mode matches it.
            k = self._conv(k, self.conv_k_cam, ctx, cross_chunk=False)
        q, k = self.q_norm_cam(q), self.k_norm_cam(k)
        if not self.softmax:
            q, k = F.relu(q), F.relu(k) * self._key_scale(ctx)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        qc = apply_ucpe(q, ctx.cam, "q", ctx.cam_rope)
        kc = apply_ucpe(k, ctx.cam, "kv", ctx.cam_rope)
        vc = apply_ucpe(v, ctx.cam, "kv", ctx.cam_rope)
        if self.cfg.cam_post_renorm:
            qc, kc, vc = post_ucpe_renorm(qc, q), post_ucpe_renorm(kc, k), post_ucpe_renorm(vc, v)
        if self.softmax:
            d = self.head_dim
            pad = (128 if d <= 128 else 256) if self.cfg.cam_sdpa_pad and d < 256 and d not in (32, 64, 128) else None
            out = _sdpa(qc, kc, vc, mask, bf16=self.cfg.softmax_bf16, pad_to=pad)
        else:
            beta_cam = gdn.cam_beta_discount(beta, self._frames(k, ctx), self._frames(kc, ctx))
            args = [self._frames(t, ctx) for t in (qc, kc, vc)]
            if ctx.chunks is None:
                out = gdn.cam_delta_bidirectional(*args, beta_cam, gamma)
            else:
                out, _ = gdn.cam_delta_chunk_causal(*args, beta_cam, gamma, chunks=ctx.chunks)
            out = out.reshape(b, self.heads, n, self.head_dim).to(x.dtype)
        out = apply_ucpe(out, ctx.cam, "out", ctx.cam_rope)
        return self.out_proj_cam(self._merge(out))

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """x: [B, T*S, C] modulated block input -> [B, T*S, C]."""
        mask = None
        if self.softmax and ctx.chunks is not None:
            mask = chunk_causal_mask(ctx.chunks, ctx.tokens_per_frame, x.device)
        beta = gamma = None
        if self.softmax:
            out = self._main_softmax(x, ctx, mask)
        else:
            beta, gamma = self._gates(x, ctx)
            out = self._main_gdn(x, ctx, beta, gamma).to(x.dtype)
        if ctx.cam is not None:
            out = out + self._camera(x, ctx, beta, gamma, mask)
        out = out.float() * F.silu(self.output_gate(x).float())
        return self.proj(out.to(x.dtype))
