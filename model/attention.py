"""Self-attention of a SANA-WM block: a main branch (frame-wise Gated DeltaNet, or softmax every 4th block)
plus the UCPE camera branch, summed before one shared output gate and projection (§2-§4.1 of the reference).

The two kinds share parameter names (the softmax blocks only lack the short convs), so the block never
branches on type. Layers own parameters; the maths lives in `model/gdn.py`, `model/rope.py` and
`model/camera.py`.

Time layouts (`AttnContext`):
- bidirectional: every token sees the whole clip (the released bidirectional model);
- chunk-causal, full sequence (training): a token sees its own chunk and earlier ones. GDN scans forward
  across chunks and backward inside each chunk; a softmax query chunk sees the sink chunk (chunk 0) and the
  `window` most recent chunks, as listed by its `SoftmaxPlan`;
- streaming (`cache` given): one chunk, with everything earlier read from the block's `BlockCache`. The
  denoising passes only read it; the clean pass (`write=True`) writes states, tails and K/V slots. A streamed
  pair (`AttnContext.written`) is two chunks in one call: the first one's clean pass, which writes, and the
  next chunk's first denoising pass, which reads the cache as the first one left it. Its per-token ops run
  once for both; only the recurrences and the softmax reads run per chunk.
Both chunk-causal forms use the same plans and positions, so streaming equals the full forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import gdn
from .camera import UCPETransforms
from .config import WorldModelConfig
from .fused import EAGER
from .layers import RMSNorm
from .parallel import beside, join
from .state import BlockCache


@dataclass
class SoftmaxPlan:
    """Keys and RoPE tables for one query chunk of a chunk-causal softmax block."""

    q_tokens: slice                       # the query chunk's tokens in this call
    key_tokens: torch.Tensor | None       # [Nk] token indices of its keys in this call (None: streaming)
    q_rope: torch.Tensor                  # [B|1, Nq, D/2] complex
    k_rope: torch.Tensor                  # [B|1, Nk, D/2] complex (streaming: cache slots then the chunk)
    q_cam_rope: torch.Tensor | None       # [B|1, Nq, D/4]
    k_cam_rope: torch.Tensor | None       # [B|1, Nk, D/4]
    key_valid: torch.Tensor | None = None  # [B, Nk] bool (streaming: empty slots are False)


@dataclass
class AttnContext:
    """What every block's attention needs to know about the tokens of this call (shared by all blocks)."""

    frames: int                            # latent frames T in this call
    grid: tuple[int, int]                  # token grid (h, w); S = h * w tokens per frame
    rope: torch.Tensor                     # [B|1, T*S, D/2] complex, absolute frame positions (GDN, bidirectional)
    chunks: list[int] | None = None        # None: bidirectional; else the chunk-causal layout of this call
    cam: UCPETransforms | None = None      # per-token ray transforms; None disables the camera branch
    cam_mats: dict | None = None           # cam.role_matrices(): {"q", "kv", "out"} -> [B, 1, N, 4, 4]
    cam_rope: torch.Tensor | None = None   # [B|1, T*S, D/4] complex
    plans: list[SoftmaxPlan] | None = None  # chunk-causal softmax key sets (one per query chunk)
    write_slot: torch.Tensor | None = None  # [B] int64 KV slot each world's chunk goes to (streaming)
    slot_sizes: tuple[int, ...] = ()        # tokens per KV slot (streaming)
    written: int | None = None              # streaming: leading frames the clean write covers (None: all; a pair:
                                            # the first chunk's, and the rest reads the cache after that write)

    @property
    def write_frames(self) -> int:
        return self.frames if self.written is None else self.written

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


def _stream_parts(ctx: AttnContext) -> list[tuple[int, int]]:
    """Frame ranges a streamed call runs its recurrences over, in order: the whole chunk, or a pair's two chunks."""
    w = ctx.write_frames
    return [(0, ctx.frames)] if w == ctx.frames else [(0, w), (w, ctx.frames)]


def _stream_recurrence(ctx: AttnContext, step, tensors: list[torch.Tensor], cached: tuple[torch.Tensor, ...],
                       write: bool) -> torch.Tensor:
    """A streamed call's recurrence (GDN or camera): `step(tensors sliced to a part's frames, states)` -> (out,
    states) over each of `_stream_parts` in order, starting from the `cached` states; with `write` the states after
    the first part (the clean chunk) are copied into `cached`, so a pair's second chunk continues from them.
    tensors are [B, H, T, ...] (frames on dim 2); returns the outputs joined along frames."""
    outs, states = [], cached
    for part, (a, e) in enumerate(_stream_parts(ctx)):
        o, states = step([t[:, :, a:e] for t in tensors], states)
        if write and part == 0:
            for dst, src in zip(cached, states):
                dst.copy_(src)
        outs.append(o)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _write_slots(buf: torch.Tensor, new: torch.Tensor, ctx: AttnContext) -> None:
    """Write each world's chunk [B, H, n, D] into its KV slot of `buf` [B, H, L, D], in place, no host sync."""
    start = 0
    for j, size in enumerate(ctx.slot_sizes):
        if size == new.shape[2]:
            sel = (ctx.write_slot == j).view(-1, 1, 1, 1)
            part = buf[:, :, start:start + size]
            part.copy_(torch.where(sel, new.to(buf.dtype), part))
        start += size


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
        self.ops = EAGER   # the hot-path functions: EAGER, or their compiled forms (model/fused.py)
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
        return x.reshape(b, h, ctx.frames, ctx.tokens_per_frame, d)  # (B, H, N, D) -> (B, H, T, S, D)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)  # (B, H, N, D) -> (B, N, C)

    def _conv(self, x, conv: ShortConv, ctx: AttnContext, cross_chunk: bool, cache: BlockCache | None, write: bool):
        """Temporal short conv of [B, N, C] keys along frames; the main branch carries a tail across chunks."""
        b, n, c = x.shape
        xt = x.view(b, ctx.frames, ctx.tokens_per_frame, c)
        if ctx.chunks is None:
            y = gdn.short_conv_bidirectional(xt, conv.weight)
        else:
            tail = cache.k_tail if (cache is not None and cross_chunk) else None
            y, new_tail = self.ops.short_conv_chunk_causal(xt, conv.weight, ctx.chunks, tail=tail,
                                                           cross_chunk=cross_chunk)
            if write and cache is not None and cross_chunk:
                if ctx.write_frames < ctx.frames:   # a pair: the tail after its first chunk
                    k = tail.shape[1]
                    new_tail = torch.cat([tail, xt[:, :ctx.write_frames].to(tail.dtype)], 1)[:, -k:]
                cache.k_tail.copy_(new_tail)
        return y.reshape(b, n, c).to(x.dtype)

    def _linears(self) -> list[nn.Linear]:
        """The input projections of x, in the order `_project` returns them."""
        lin = [self.qkv, self.q_proj_cam, self.k_proj_cam, self.v_proj_cam, self.output_gate]
        return lin if self.softmax else lin + [self.beta_proj, self.gate_proj]

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Concatenate the input projections into one matrix for inference (one matmul instead of seven).

        A derived copy of the weights, used only in eval mode; call again after changing the weights.
        """
        lins = self._linears()
        w = torch.cat([m.weight for m in lins])
        b = torch.cat([m.bias if m.bias is not None else torch.zeros(m.out_features, device=w.device, dtype=w.dtype)
                       for m in lins])
        self.register_buffer("_fused_w", w, persistent=False)
        self.register_buffer("_fused_b", b, persistent=False)
        self._fused_sizes = [m.out_features for m in lins]

    def _project(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[q|k|v, q_cam, k_cam, v_cam, output gate, (beta logits, decay logits)] of x, each [B, N, .]."""
        if getattr(self, "_fused_sizes", None) and not self.training:
            return list(F.linear(x, self._fused_w, self._fused_b).split(self._fused_sizes, dim=-1))
        return [m(x) for m in self._linears()]

    def _gates(self, beta_logit: torch.Tensor, decay_logit: torch.Tensor, ctx: AttnContext):
        """beta [B, H, T, S] per token and gamma [B, H, T] per frame, float32 (`gdn.gdn_gates`)."""
        return self.ops.gdn_gates(beta_logit, decay_logit, self.A_log, self.dt_bias, ctx.frames)

    def _key_scale(self, ctx: AttnContext) -> float:
        return (self.head_dim ** -0.5) * (ctx.tokens_per_frame ** -0.5)

    def _cam_pad(self) -> int | None:
        d = self.head_dim
        if self.cfg.cam_sdpa_pad and d < 256 and d not in (32, 64, 128):
            return 128 if d <= 128 else 256
        return None

    # ------------------------------------------------------------------ GDN branches
    def _main_gdn(self, qkv, ctx, beta, gamma, cache, write):
        b, n, _ = qkv.shape
        q, k, v = qkv.chunk(3, dim=-1)
        k = self._conv(k, self.conv_k, ctx, cross_chunk=True, cache=cache, write=write)
        q = F.relu(self.q_norm(q))
        k = F.relu(self.k_norm(k)) * self._key_scale(ctx)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        q_rot, k_rot = self.ops.apply_rope(q, ctx.rope), self.ops.apply_rope(k, ctx.rope)
        args = [self._frames(t, ctx) for t in (q, k, v, q_rot, k_rot)]
        if ctx.chunks is None:
            out = gdn.gdn_bidirectional(*args, beta, gamma, eps=self.cfg.gdn_eps)
        elif cache is None:
            out, _, _ = gdn.gdn_chunk_causal(*args, beta, gamma, chunks=ctx.chunks, eps=self.cfg.gdn_eps)
        else:
            def step(t, states):
                o, s_kv, s_z = self.ops.gdn_chunk_step(*t, s_kv=states[0], s_z=states[1], eps=self.cfg.gdn_eps)
                return o, (s_kv, s_z)
            out = _stream_recurrence(ctx, step, [*args, beta, gamma], (cache.s_kv, cache.s_z), write)
        return self._merge(out.reshape(b, self.heads, n, self.head_dim))

    def _cam_gdn(self, q, k, v, qc, kc, vc, ctx, beta, gamma, cache, write):
        b, h, n, d = q.shape
        beta_cam = self.ops.cam_beta_discount(beta, self._frames(k, ctx), self._frames(kc, ctx))
        args = [self._frames(t, ctx) for t in (qc, kc, vc)]
        if ctx.chunks is None:
            out = gdn.cam_delta_bidirectional(*args, beta_cam, gamma)
        elif cache is None:
            out, _ = gdn.cam_delta_chunk_causal(*args, beta_cam, gamma, chunks=ctx.chunks)
        else:
            def step(t, states):
                o, s = self.ops.cam_delta_chunk_step(*t, s=states[0])
                return o, (s,)
            out = _stream_recurrence(ctx, step, [*args, beta_cam, gamma], (cache.s_cam,), write)
        return out.reshape(b, h, n, d)

    # ------------------------------------------------------------------ softmax branches
    def _softmax_chunked(self, q, k, v, ctx, cam: bool, cache, write):
        """Chunk-causal softmax over the plans: q, k, v [B, H, N, D] without RoPE (camera: UCPE matrix applied)."""
        outs = []
        for i, plan in enumerate(ctx.plans):
            qs = q[:, :, plan.q_tokens]
            if plan.key_tokens is None:  # streaming: cached slots then this chunk
                ks = torch.cat([cache.kc if cam else cache.k, k[:, :, plan.q_tokens]], dim=2)
                vs = torch.cat([cache.vc if cam else cache.v, v[:, :, plan.q_tokens]], dim=2)
            else:
                ks, vs = k[:, :, plan.key_tokens], v[:, :, plan.key_tokens]
            if cam:  # UCPE rotates the second half of q, k and v by the camera RoPE
                half = self.head_dim // 2
                qs = torch.cat([qs[..., :half], self.ops.apply_rope(qs[..., half:], plan.q_cam_rope)], -1)
                ks = torch.cat([ks[..., :half], self.ops.apply_rope(ks[..., half:], plan.k_cam_rope)], -1)
                vs = torch.cat([vs[..., :half], self.ops.apply_rope(vs[..., half:], plan.k_cam_rope)], -1)
            else:
                qs, ks = self.ops.apply_rope(qs, plan.q_rope), self.ops.apply_rope(ks, plan.k_rope)
            mask = None if plan.key_valid is None else plan.key_valid[:, None, None, :]
            outs.append(_sdpa(qs, ks, vs, mask, bf16=self.cfg.softmax_bf16, pad_to=self._cam_pad() if cam else None))
            if cache is not None and write and i == 0:
                # after reading: the clean pass sees exactly what the denoising passes saw; a pair's second chunk
                # then reads the slots with its first chunk in them
                _write_slots(cache.kc if cam else cache.k, k[:, :, plan.q_tokens], ctx)
                _write_slots(cache.vc if cam else cache.v, v[:, :, plan.q_tokens], ctx)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)

    def _main_softmax(self, qkv, ctx, cache, write):
        q, k, v = qkv.chunk(3, dim=-1)
        q, k, v = self._heads(self.q_norm(q)), self._heads(self.k_norm(k)), self._heads(v)
        if ctx.chunks is None:
            q, k = self.ops.apply_rope(q, ctx.rope), self.ops.apply_rope(k, ctx.rope)
            return self._merge(_sdpa(q, k, v, None, bf16=self.cfg.softmax_bf16))
        return self._merge(self._softmax_chunked(q, k, v, ctx, cam=False, cache=cache, write=write))

    # ------------------------------------------------------------------ camera branch
    def _camera(self, q, k, v, ctx, beta, gamma, cache, write):
        dtype = v.dtype
        if not self.softmax:
            # In streaming the camera conv has no cross-chunk context, so chunk-causal mode matches it.
            k = self._conv(k, self.conv_k_cam, ctx, cross_chunk=False, cache=None, write=False)
        q, k = self.q_norm_cam(q), self.k_norm_cam(k)
        if not self.softmax:
            q, k = F.relu(q), F.relu(k) * self._key_scale(ctx)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        chunked_softmax = self.softmax and ctx.chunks is not None
        rope = None if chunked_softmax else ctx.cam_rope  # chunked softmax rotates at read time (plans)
        mats = ctx.cam_mats
        qc = self.ops.apply_ucpe_fast(q, mats["q"], rope)
        kc = self.ops.apply_ucpe_fast(k, mats["kv"], rope)
        vc = self.ops.apply_ucpe_fast(v, mats["kv"], rope)
        if self.cfg.cam_post_renorm:  # RoPE preserves norms, so renorm before or after it is the same
            renorm = self.ops.post_ucpe_renorm
            qc, kc, vc = renorm(qc, q), renorm(kc, k), renorm(vc, v)
        if not self.softmax:
            out = self._cam_gdn(q, k, v, qc, kc, vc, ctx, beta, gamma, cache, write).to(dtype)
        elif chunked_softmax:
            out = self._softmax_chunked(qc, kc, vc, ctx, cam=True, cache=cache, write=write)
        else:
            out = _sdpa(qc, kc, vc, None, bf16=self.cfg.softmax_bf16, pad_to=self._cam_pad())
        if chunked_softmax:  # inverse camera RoPE at each query's own (plan) position
            out = self.ops.apply_ucpe_fast(out, mats["out"])
            half = self.head_dim // 2
            parts = [self.ops.apply_rope(out[:, :, p.q_tokens, half:], p.q_cam_rope, inverse=True) for p in ctx.plans]
            out = torch.cat([out[..., :half], torch.cat(parts, dim=2)], dim=-1)
        else:
            out = self.ops.apply_ucpe_fast(out, mats["out"], ctx.cam_rope, inverse=True)
        return self._merge(out)

    def forward(self, x: torch.Tensor, ctx: AttnContext, cache: BlockCache | None = None,
                write: bool = False) -> torch.Tensor:
        """x: [B, T*S, C] modulated block input -> [B, T*S, C]. With `cache`, stream one chunk (write on the
        clean pass)."""
        proj = self._project(x)
        beta = gamma = None
        if not self.softmax:
            beta, gamma = self._gates(proj[5], proj[6], ctx)
        cam = None  # the camera branch runs beside the main one in a CPU trace (model/parallel.py)
        if ctx.cam is not None:
            cam = beside(lambda: self.out_proj_cam(self._camera(proj[1], proj[2], proj[3], ctx, beta, gamma,
                                                                cache, write)))
        if self.softmax:
            out = self._main_softmax(proj[0], ctx, cache, write)
        else:
            out = self._main_gdn(proj[0], ctx, beta, gamma, cache, write).to(x.dtype)
        if cam is not None:
            out = out + join(cam)
        out = out.float() * F.silu(proj[4].float())
        return self.proj(out.to(x.dtype))
