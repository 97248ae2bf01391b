"""SanaWMTransformer: the hybrid Gated-DeltaNet / softmax diffusion transformer of SANA-WM, one class for
every preset, with the published module and state_dict names (872 keys for `sana-wm-1600m-720p`).

- Per-frame adaLN: every latent frame carries its own timestep (the clean image latent has t = 0).
- Blocks: GDN self-attention, softmax at every 4th block, each with the UCPE camera branch; a Plücker
  embedding is added after self-attention in every block; cross-attention to caption embeddings (a null
  caption buffer is the default); GLUMBConvTemp FFN with a temporal conv.
- Time layouts: bidirectional (`chunks=None`, the released bidirectional model) or chunk-causal
  (`chunks=[...]`, training and streaming).
- Ours, off in the published preset (`warp_condition`, `warp_sink`, `warp_space`): the previous clean latent and
  the image latent reprojected by the camera rotation (in the latent grid, or as decoded frames re-encoded by the
  VAE), embedded and added to the latent tokens (model/warp.py explains why).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttnContext, SanaWMAttention, SoftmaxPlan
from .camera import ray_transforms
from .config import WorldModelConfig
from .fused import EAGER, FUSIBLE, SCOPES, fused_forward, fused_ops
from .layers import CaptionEmbedder, CrossAttention, FinalLayer, GLUMBConvTemp, PatchEmbed, RMSNorm, TimestepEmbedder
from .parallel import join
from .rope import rope_at
from .state import BlockCache
from .warp import WarpDepth, sequence_warp

# prepare()'s result: attention context, Plücker embedding, caption tokens (per-block K/V at inference), warp embedding,
# and the output skip's inputs (warp_skip models; else None): the warp (or a `beside` handle of it) and the sink's
# fade [B, T] (or None)
Prepared = tuple[AttnContext, "torch.Tensor | None", "torch.Tensor | list", "torch.Tensor | None",
                 "tuple[torch.Tensor | Any, torch.Tensor | None] | None"]


def _is_pair(stream, chunks) -> bool:
    """A streamed pair (`SanaWMTransformer.context`): two chunks, the first written, the second read after it."""
    return stream is not None and chunks is not None and len(chunks) == 2


def _rope_heads(*args, **kwargs) -> torch.Tensor:
    """`rope_at` with a heads axis: [B, 1, N, n], so per-world tables broadcast over [B, H, N, D]."""
    return rope_at(*args, **kwargs).unsqueeze(1)


class SanaWMBlock(nn.Module):
    """adaLN-single block: gated self-attention, + Plücker, + cross-attention, gated FFN."""

    def __init__(self, cfg: WorldModelConfig, index: int):
        super().__init__()
        c = cfg.hidden_size
        # 1. Self-attention (GDN or softmax) with its camera branch.
        self.norm1 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.attn = SanaWMAttention(cfg, softmax=cfg.is_softmax(index))
        # 2. Camera rays of the raw frames, injected after self-attention.
        self.plucker_proj = nn.Linear(c, c)
        # 3. Caption cross-attention (no norm, no modulation, no gate).
        self.cross_attn = CrossAttention(c, cfg.num_heads, cfg.cross_norm_eps)
        # 4. Feed-forward with a temporal conv.
        self.norm2 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.mlp = GLUMBConvTemp(c, cfg.mlp_hidden, cfg.temporal_kernel)
        self.scale_shift_table = nn.Parameter(torch.randn(6, c) / c**0.5)

    def forward(self, x, y, y_mask, t0, ctx: AttnContext, plucker: torch.Tensor | None,
                cache: BlockCache | None = None, write: bool = False):
        """x: [B, T*S, C]; y: [B, L, C] (or this block's caption keys/values); y_mask: [B, L];
        t0: [B, T, 6, C]; plucker: [B, T*S, C] or None.

        With `cache`, this is one streamed chunk; `write` (the clean pass) updates the cache in place.
        """
        b, n, c = x.shape
        frames, s = ctx.frames, ctx.tokens_per_frame
        mod = (self.scale_shift_table[None, None] + t0).unsqueeze(3)  # (B, T, 6, 1, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(2)  # (B, T, 1, C) each

        def per_frame(z):
            return z.view(b, frames, s, c)  # (B, N, C) -> (B, T, S, C)

        # 1.
        x_in = (per_frame(self.norm1(x)) * (1 + scale_msa) + shift_msa).view(b, n, c)
        x = x + (gate_msa * per_frame(self.attn(x_in, ctx, cache, write))).view(b, n, c)
        # 2.
        if plucker is not None:
            x = x + self.plucker_proj(plucker)
        # 3.
        x = x + self.cross_attn(x, y, y_mask)
        # 4.
        x_mlp = (per_frame(self.norm2(x)) * (1 + scale_mlp) + shift_mlp).view(b, n, c)
        h, w = ctx.grid
        y_sp = self.mlp.spatial(x_mlp, frames, h, w)                       # (B, T, S, C) before the temporal conv
        out = self.mlp.temporal(y_sp, ctx.chunks, cache.ffn_tail if cache is not None else None)
        if write and cache is not None:
            cache.ffn_tail.copy_(y_sp[:, ctx.write_frames - 1:ctx.write_frames])
        return x + (gate_mlp * out).view(b, n, c)


class SanaWMTransformer(nn.Module):
    """The SANA-WM DiT. Predicts the flow velocity v = noise - x0 for every latent frame."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        self.cfg = cfg
        c, p = cfg.hidden_size, cfg.patch_size
        gh, gw = cfg.token_hw
        # 1. Patch and condition embeddings.
        self.x_embedder = PatchEmbed(p, cfg.in_channels, c)
        self.t_embedder = TimestepEmbedder(c)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.y_embedder = CaptionEmbedder(cfg.caption_channels, c, cfg.caption_len)
        self.attention_y_norm = RMSNorm(c, eps=1e-5, init=cfg.y_norm_scale)
        self.plucker_embedder = PatchEmbed(p, cfg.plucker_channels, c)
        self.raymap_embedder = PatchEmbed(p, 3, c)  # in the checkpoint; unused (chunk-Plücker post-attention)
        self.register_buffer("pos_embed", torch.zeros(1, gh * gh, c))  # vestigial in the checkpoint; unused
        # 2. Blocks.
        self.blocks = nn.ModuleList([SanaWMBlock(cfg, i) for i in range(cfg.depth)])
        # 3. Output.
        self.final_layer = FinalLayer(c, p, cfg.in_channels)
        # 4. Ours (not in the published checkpoint): the reprojected previous / image latent and validity (warp.py).
        if cfg.warp_condition:
            self.warp_embedder = PatchEmbed(p, cfg.in_channels + 1, c)
        if cfg.warp_sink:
            self.sink_embedder = PatchEmbed(p, cfg.in_channels + 1, c)
        if cfg.warp_skip:  # per source and latent channel; zero = no skip (see `_skip`)
            self.warp_gate = nn.Parameter(torch.zeros(1 + int(cfg.warp_sink), cfg.in_channels))
        self.gradient_checkpointing = False
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Initialisation for training from scratch: xavier linears, and the published zero-inits that make the
        camera branch, the Plücker injection, the temporal conv and the output start silent."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for blk in self.blocks:
            blk.attn.reset_training_init()
            nn.init.zeros_(blk.plucker_proj.weight)
            nn.init.zeros_(blk.mlp.t_conv.weight)
        for emb in (self.plucker_embedder, self.raymap_embedder, getattr(self, "warp_embedder", None),
                    getattr(self, "sink_embedder", None)):
            if emb is None:
                continue
            nn.init.zeros_(emb.proj.weight)
            nn.init.zeros_(emb.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.cfg.warp_skip:
            nn.init.zeros_(self.warp_gate)

    def fuse_kernels(self, backend: str | Callable | None = "inductor", scope: str = "ops") -> None:
        """Run the blocks' elementwise hot spots (RoPE, UCPE products, short convs, gates, beta discount, RMSNorms,
        the streamed recurrences' prep) as compiled kernels (model/fused.py): each function alone (scope "ops"), or
        each block's whole forward (scope "block"). None restores the eager functions. Inference only, like
        `fuse_projections`: the compiled forms are not differentiated."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        ops = EAGER if backend is None else (FUSIBLE if scope == "block" else fused_ops(backend))
        for m in self.modules():
            if isinstance(m, SanaWMAttention):
                m.ops = ops
            elif isinstance(m, RMSNorm):
                m.fn = ops.rms_norm
        forward = fused_forward(SanaWMBlock.forward, backend) if backend is not None and scope == "block" else None
        for blk in self.blocks:
            if forward is None:
                blk.__dict__.pop("forward", None)            # back to the class's forward
            else:
                blk.forward = types.MethodType(forward, blk)

    def null_caption(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.y_embedder.y_embedding[None].expand(batch, -1, -1)
        return y, torch.ones(batch, y.shape[1], dtype=torch.bool, device=y.device)

    # ------------------------------------------------------------------ time layout
    def chunk_first_frame(self, c: torch.Tensor) -> torch.Tensor:
        """First latent frame of chunk c in the streaming layout [1, T_c, T_c, ...] (chunk 0 = the image latent)."""
        return torch.where(c <= 0, torch.zeros_like(c), 1 + (c - 1) * self.cfg.chunk_frames)

    def _positions(self, key_chunks: torch.Tensor, cur: torch.Tensor, first_frame) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE frame positions of key chunks [B, n] and of the query chunk [B] for softmax attention.

        `first_frame` maps chunk indices to their first latent frame. Absolute (published) unless `rope_window`:
        then the frames between the sink and the oldest window chunk are skipped, so the window sits right after
        the sink, keys keep their distance to the query, and positions stay inside what training covered.
        """
        f_cur, f_key = first_frame(cur), first_frame(key_chunks)
        if not self.cfg.rope_window:
            return f_key, f_cur
        oldest = torch.clamp(cur - self.cfg.window_chunks, min=1)
        gap = torch.where(cur >= 1, first_frame(oldest) - first_frame(torch.ones_like(cur)), torch.zeros_like(cur))
        return torch.where(key_chunks == 0, f_key, f_key - gap[:, None]), f_cur - gap

    def _frame_positions(self, first: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """[B, n] first frames of n chunks of the given sizes -> [B, sum(sizes)] per-frame positions."""
        return torch.cat([first[:, i:i + 1] + torch.arange(sz, device=first.device) for i, sz in enumerate(sizes)], 1)

    def _full_plans(self, chunks: list[int], device) -> list[SoftmaxPlan]:
        """Key sets of a full chunk-causal sequence: each query chunk sees the sink (chunk 0), the `window` most
        recent earlier chunks, and itself."""
        s, d, w = self.cfg.tokens_per_frame, self.cfg.head_dim, self.cfg.window_chunks
        gh, gw = self.cfg.token_hw
        starts = torch.tensor([0] + torch.tensor(chunks).cumsum(0).tolist(), device=device)  # len(chunks) + 1

        def first_frame(c):
            return starts[c]

        plans = []
        for c in range(len(chunks)):
            keys = [0] + list(range(max(1, c - w), c + 1)) if c > 0 else [0]
            kpos, qpos = self._positions(torch.tensor([keys], device=device), torch.tensor([c], device=device),
                                         first_frame)
            kframes = self._frame_positions(kpos, [chunks[j] for j in keys])
            qframes = self._frame_positions(qpos[:, None], [chunks[c]])
            tokens = torch.cat([torch.arange(int(starts[j]) * s, (int(starts[j]) + chunks[j]) * s, device=device)
                                for j in keys])
            q0 = int(starts[c]) * s
            plans.append(SoftmaxPlan(
                q_tokens=slice(q0, q0 + chunks[c] * s), key_tokens=tokens,
                q_rope=_rope_heads(d, qframes, gh, gw), k_rope=_rope_heads(d, kframes, gh, gw),
                q_cam_rope=_rope_heads(d, qframes, gh, gw, cam=True),
                k_cam_rope=_rope_heads(d, kframes, gh, gw, cam=True)))
        return plans

    def _stream_plan(self, chunk_index: torch.Tensor, slot_chunk: torch.Tensor, frames: int, offset: int = 0):
        """The one key set of a streamed chunk: KV slots [sink | window ring] then the chunk itself (its queries
        start at frame `offset` of the call)."""
        gh, gw = self.cfg.token_hw
        d, s, tc = self.cfg.head_dim, self.cfg.tokens_per_frame, self.cfg.chunk_frames
        slot_sizes = [1] + [tc] * self.cfg.window_chunks                      # frames per slot
        kpos, qpos = self._positions(slot_chunk.clamp_min(0), chunk_index, self.chunk_first_frame)
        qframes = self._frame_positions(qpos[:, None], [frames])
        kframes = torch.cat([self._frame_positions(kpos, slot_sizes), qframes], 1)
        b = slot_chunk.shape[0]
        filled = slot_chunk >= 0
        valid = torch.cat([filled[:, j:j + 1].expand(b, sz * s) for j, sz in enumerate(slot_sizes)]
                          + [torch.ones(b, frames * s, dtype=torch.bool, device=slot_chunk.device)], 1)
        plan = SoftmaxPlan(q_tokens=slice(offset * s, (offset + frames) * s), key_tokens=None,
                           q_rope=_rope_heads(d, qframes, gh, gw), k_rope=_rope_heads(d, kframes, gh, gw),
                           q_cam_rope=_rope_heads(d, qframes, gh, gw, cam=True),
                           k_cam_rope=_rope_heads(d, kframes, gh, gw, cam=True), key_valid=valid)
        return plan, self._slot_of(chunk_index), tuple(sz * s for sz in slot_sizes)

    def _slot_of(self, chunk_index: torch.Tensor) -> torch.Tensor:
        """The KV slot [B] chunk `chunk_index` [B] goes to: 0 (the sink) for chunk 0, else its place in the ring."""
        return torch.where(chunk_index <= 0, torch.zeros_like(chunk_index),
                           1 + (chunk_index - 1) % self.cfg.window_chunks)

    def recorded(self, chunk_index: torch.Tensor, slot_chunk: torch.Tensor) -> torch.Tensor:
        """slot_chunk [B, 1+W] once chunk `chunk_index` [B] is in its KV slot (a new tensor)."""
        return slot_chunk.scatter(1, self._slot_of(chunk_index)[:, None], chunk_index[:, None])

    def context(self, frames: int, camera_conditions: torch.Tensor | None, chunks: list[int] | None,
                frame_offset: int | torch.Tensor, device, stream: tuple[torch.Tensor, torch.Tensor] | None = None,
                batch: int = 1) -> AttnContext:
        """The per-call attention context (RoPE tables, UCPE transforms, time layout), shared by all blocks.

        stream: (chunk_index [B], slot_chunk [B, 1+W]) to stream one chunk against a cache; with chunks=[T_c, T_c],
        a pair: chunk `chunk_index` (clean, written) and the next one, which reads the cache after that write.
        """
        gh, gw = self.cfg.token_hw
        d = self.cfg.head_dim
        if chunks is not None and sum(chunks) != frames:
            raise ValueError(f"chunks {chunks} must sum to the number of latent frames {frames}")
        pair = _is_pair(stream, chunks)
        if stream is not None:   # each streamed chunk (one, or a pair) at its own first frame
            chunk_index, slot_chunk = stream
            firsts = torch.stack([self.chunk_first_frame(chunk_index + j) for j in range(len(chunks))], 1)  # (B, n)
            pos = self._frame_positions(firsts, chunks)                                                     # (B, T)
        else:
            first = torch.full((batch if torch.is_tensor(frame_offset) else 1, 1), 0, device=device) + frame_offset
            pos = first + torch.arange(frames, device=device)[None]              # (B|1, T) absolute frames
        ctx = AttnContext(frames=frames, grid=(gh, gw), rope=_rope_heads(d, pos, gh, gw), chunks=chunks)
        if camera_conditions is not None:
            ctx.cam = ray_transforms(camera_conditions, gh, gw, patch_size=self.cfg.patch_size[1])
            ctx.cam_mats = ctx.cam.role_matrices(torch.float32)
            ctx.cam_rope = _rope_heads(d, pos, gh, gw, cam=True)
        if pair:
            plan, ctx.write_slot, ctx.slot_sizes = self._stream_plan(chunk_index, slot_chunk, chunks[0])
            second, _, _ = self._stream_plan(chunk_index + 1, self.recorded(chunk_index, slot_chunk), chunks[1],
                                             offset=chunks[0])
            ctx.plans, ctx.written = [plan, second], chunks[0]
        elif stream is not None:
            plan, ctx.write_slot, ctx.slot_sizes = self._stream_plan(chunk_index, slot_chunk, frames)
            ctx.plans = [plan]
        elif chunks is not None:
            ctx.plans = self._full_plans(chunks, device)
        return ctx

    def prepare(self, frames: int, camera_conditions, plucker, caption, chunks, frame_offset, stream, batch: int,
                device, warp: torch.Tensor | None = None, skip_targets: Any = None) -> Prepared:
        """Everything of a forward that does not depend on the noisy latents or the timestep: the attention context,
        the Plücker embedding, the caption tokens and the warp embedding. Denoising passes of one step share it.

        warp: [B, warp_channels, T, h, w] from `warp.sequence_warp` (or the generator's `_warp`); required when the
        config has `warp_condition` (forward derives it from its own latents when it is not given).
        skip_targets: the chunk skip targets (`warp_targets` models) given apart, as a tensor or as a
        `parallel.beside` handle that the skip joins: warp then holds the conditioning only (for a streamed pair,
        `context`, the targets are the second chunk's). Why: the skip is a
        pass's last op, so a CPU trace encodes the targets beside the pass's blocks (the generator's step)."""
        dtype = self.x_embedder.proj.weight.dtype
        ctx = self.context(frames, camera_conditions, chunks, frame_offset, device, stream=stream, batch=batch)
        plucker_emb = self.plucker_embedder(plucker.to(dtype)) if plucker is not None else None
        if caption is None:
            caption, _ = self.null_caption(batch)
        y = self.attention_y_norm(self.y_embedder(caption.to(dtype)))    # (B, L, C)
        if not self.training:  # per-block caption keys / values, shared by every pass
            y = [blk.cross_attn.keys_values(y) for blk in self.blocks]
        warp_emb = skip = None
        if self.cfg.warp_condition:
            cw = self.cfg.in_channels + 1
            apart = skip_targets is not None
            if apart and not self.cfg.warp_targets:
                raise ValueError("skip_targets are the chunk skip targets of warp_skip_target='chunk' models; this "
                                 f"model has warp_skip_target={self.cfg.warp_skip_target!r}")
            want = (batch, self.warp_channels // (2 if apart else 1), frames, *self.cfg.latent_hw)
            if warp is None or tuple(warp.shape) != want:
                hint = " (without the chunk skip targets: recompute it, e.g. python -m model.train.warps)" \
                    if warp is not None and self.cfg.warp_targets and not apart and warp.shape[1] * 2 == want[1] \
                    else ""
                raise ValueError(f"this model is warp-conditioned: warp must be {list(want)}, got "
                                 f"{None if warp is None else list(warp.shape)}{hint}")
            warp = warp.to(dtype)
            sources = self.warp_condition_channels                         # conditioning; then the skip targets
            warp_emb = self.warp_embedder(warp[:, :cw])                    # (B, N, C)
            if self.cfg.warp_sink:
                warp_emb = warp_emb + self.sink_embedder(warp[:, cw:sources])
            if self.cfg.warp_skip:   # a pair's skip is its second chunk's (given apart: those frames only)
                target = skip_targets if apart else warp[:, sources:] if self.cfg.warp_targets else warp
                cams = camera_conditions
                if _is_pair(stream, chunks):
                    cams = None if cams is None else cams[:, chunks[0]:]
                    target = target if apart else target[:, :, chunks[0]:]
                skip = (target, self._sink_fade(cams))
        return ctx, plucker_emb, y, warp_emb, skip

    def warp_of(self, latents: torch.Tensor, camera_conditions: torch.Tensor | None,
                chunks: list[int], vae=None) -> torch.Tensor | None:
        """The warp input of a full chunk-causal sequence (`sequence_warp`; the history of `latents` must be clean):
        None for models without it, zeros without camera conditions (nothing to reproject). It does not depend on
        the noise of the last chunk, so the denoising passes of one chunk share it. `warp_space="pixel"` models
        need the VAE that decodes their latents."""
        if not self.cfg.warp_condition:
            return None
        if camera_conditions is None:
            b, _, t, h, w = latents.shape
            return latents.new_zeros(b, self.warp_channels, t, h, w)
        pixel = self.cfg.warps_pixels
        if pixel and vae is None:
            raise ValueError("this model warps in pixel space (warp_space='pixel'): pass vae= to warp_of, or pass "
                             "warp= to forward")
        return sequence_warp(latents, camera_conditions, chunks, self.cfg.warp_sink, vae if pixel else None,
                             self.cfg.warp_targets, WarpDepth.of(self.cfg))

    @property
    def warp_channels(self) -> int:
        """Channels of the warp input: the conditioning (`warp_condition_channels`), then as many for the skip's
        chunk targets (`warp_skip_target="chunk"`)."""
        return self.warp_condition_channels * (1 + int(self.cfg.warp_targets))

    @property
    def warp_condition_channels(self) -> int:
        """[latent | validity] per source: the previous frame, and the sink (0 without `warp_condition`)."""
        return (self.cfg.in_channels + 1) * (int(self.cfg.warp_condition) + int(self.cfg.warp_sink))

    def unpatchify(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, T*gh*gw, pt*ph*pw*C] -> [B, C, T*pt, gh*ph, gw*pw]."""
        b = x.shape[0]
        gh, gw = self.cfg.token_hw
        pt, ph, pw = self.cfg.patch_size
        c = self.cfg.in_channels
        x = x.reshape(b, frames, gh, gw, pt, ph, pw, c)
        return torch.einsum("nfhwopqc->ncfohpwq", x).reshape(b, c, frames * pt, gh * ph, gw * pw)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, camera_conditions: torch.Tensor | None = None,
                plucker: torch.Tensor | None = None, caption: torch.Tensor | None = None,
                caption_mask: torch.Tensor | None = None, chunks: list[int] | None = None,
                frame_offset: int = 0, cache: list[BlockCache] | None = None, write: bool = False,
                stream: tuple[torch.Tensor, torch.Tensor] | None = None,
                prepared: Prepared | None = None, warp: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity for latents.

        latents: [B, C_lat, T, h, w]; timestep: [B, T] per frame, 0..1000 (truncated to integers, as published);
        streaming a pair (chunks=[T/2, T/2], write=True): the first chunk clean (t = 0, written to the caches), the
        second read-only after that write; returns the second chunk's velocity [B, C_lat, T/2, h, w] only;
        camera_conditions: [B, T, 20] (relative c2w + latent intrinsics, see camera.py) or None;
        plucker: [B, 6*vae_temporal, T, h, w] or None; caption: [B, L, caption_channels] or None (null caption);
        caption_mask: [B, L] (1 = valid); chunks: None (bidirectional) or chunk-causal frame counts;
        frame_offset: absolute index of the first latent frame;
        cache / write / stream: stream one chunk (chunks=[T]) against per-block caches; `stream` is
        (chunk_index [B], slot_chunk [B, 1+W]) from the WorldState; `write` on the clean pass;
        prepared: `prepare(...)`'s (context, Plücker embedding, caption tokens, warp embedding), reused by passes;
        warp: [B, warp_channels, T, h, w] reprojection conditioning (warp_condition models). Without it a full forward
        derives it from `latents` (`sequence_warp`: their history must be clean; zeros without camera_conditions);
        streaming and pixel-space models (`warp_of(..., vae=)`) must pass it.
        Returns [B, C_lat, T, h, w].
        """
        cfg = self.cfg
        b, _, frames, lat_h, lat_w = latents.shape
        if (lat_h, lat_w) != cfg.latent_hw or latents.shape[1] != cfg.in_channels:
            raise ValueError(f"latents must be [B, {cfg.in_channels}, T, {cfg.latent_hw[0]}, {cfg.latent_hw[1]}], "
                             f"got {list(latents.shape)}")
        if tuple(timestep.shape) != (b, frames):
            raise ValueError(f"timestep must be [B, T] = [{b}, {frames}], got {list(timestep.shape)}")
        # 1. Embeddings.
        x = self.x_embedder(latents)                                       # (B, N, C)
        pair = _is_pair(stream, chunks)
        if cache is not None and (stream is None or not (chunks == [frames] or (pair and write))
                                  or len(cache) != len(self.blocks)):
            raise ValueError(f"streaming needs chunks=[T] = [{frames}] (or a pair [T/2, T/2] with write=True), "
                             f"stream=(chunk_index, slot_chunk) and one cache per block ({len(self.blocks)})")
        if prepared is None:
            if warp is None and stream is None and not self.cfg.warps_pixels:
                warp = self.warp_of(latents, camera_conditions, chunks or [frames])
            prepared = self.prepare(frames, camera_conditions, plucker, caption, chunks, frame_offset, stream, b,
                                    latents.device, warp)
        ctx, plucker_emb, y, warp_emb, skip = prepared
        if warp_emb is not None:
            x = x + warp_emb
        if caption_mask is None:
            n_cap = y[0][0].shape[2] if isinstance(y, list) else y.shape[1]
            caption_mask = torch.ones(b, n_cap, dtype=torch.bool, device=latents.device)
        t = self.t_embedder(timestep.long().float().flatten())             # (B*T, C)
        t0 = self.t_block(t).view(b, frames, 6, -1)                        # (B, T, 6, C)
        t = t.view(b, frames, -1)
        # 2. Blocks.
        for i, blk in enumerate(self.blocks):
            bc = cache[i] if cache is not None else None
            yi = y[i] if isinstance(y, list) else y
            if self.gradient_checkpointing and torch.is_grad_enabled() and bc is None:
                x = checkpoint(blk, x, yi, caption_mask, t0, ctx, plucker_emb, use_reentrant=False)
            else:
                x = blk(x, yi, caption_mask, t0, ctx, plucker_emb, bc, write)
        # 3. Output (of a pair: its second chunk's only).
        if pair:
            first = chunks[0]
            x, t, latents, timestep = x[:, first * ctx.tokens_per_frame:], t[:, first:], latents[:, :, first:], \
                timestep[:, first:]
        v = self.unpatchify(self.final_layer(x, t), latents.shape[2])     # (B, C_lat, T, h, w)
        return v if skip is None else self._skip(v, latents, timestep, *skip)

    def _sink_fade(self, camera_conditions: torch.Tensor | None) -> torch.Tensor | None:
        """exp(-d / warp_skip_range) [B, T], d the camera's distance from frame 0 (the translation of the relative
        c2w in the conditions); None without a range, a sink or cameras."""
        if not (self.cfg.warp_skip_range > 0 and self.cfg.warp_sink) or camera_conditions is None:
            return None
        c2w = camera_conditions[..., :16].unflatten(-1, (4, 4)).float()  # (B, T, 4, 4) relative to frame 0
        d = c2w[..., :3, 3].norm(dim=-1)                                   # (B, T) metres
        return torch.exp(-d / self.cfg.warp_skip_range)

    def _skip(self, v: torch.Tensor, latents: torch.Tensor, timestep: torch.Tensor, warp: torch.Tensor,
              sink_fade: torch.Tensor | None) -> torch.Tensor:
        """The output skip of `warp_skip` models: the x0 estimate x0 = x - sigma v moves toward each warped source by
        sigma * gate * validity, i.e. v += gate * validity * (x0 - warp), with no division by sigma; the gate is one
        number per source and latent channel. Why: where the view only turned, the warp is the answer (a warp-only
        rollout turns the right way in 0.98-1.00 of steps), and a gate copies it instead of rebuilding it through 8
        blocks; at small sigma the noisy latent itself knows better, so the pull fades with sigma. The warp only
        rotates, so the sink's pull also fades with the distance walked since frame 0 (`sink_fade`). With
        `warp_skip_fill` the previous frame pulls only where the sink's warp is invalid, and with the sink's fade: a
        turn in place that leaves the start view then keeps following a warp (the sink alone held steps there), while
        the previous frame, the model's own and re-warped every step, never overrides the start frame.
        warp: [B, S*(C+1), T, h, w], S sources; sink_fade: [B, T] or None."""
        c = self.cfg.in_channels
        warp = join(warp).to(v.dtype)   # a `beside` handle when the targets were encoded beside the pass
        sigma = (timestep.long().float() / 1000.0).to(v.dtype)[:, None, :, None, None]   # (B, 1, T, 1, 1)
        x0 = latents.to(v.dtype) - sigma * v
        fade = None if sink_fade is None else sink_fade[:, None, :, None, None].to(v.dtype)   # (B, 1, T, 1, 1)
        srcs = [warp[:, s * (c + 1):(s + 1) * (c + 1)] for s in range(self.warp_gate.shape[0])]  # (B, C+1, T, h, w)
        for s, src in enumerate(srcs):
            gate = self.warp_gate[s].view(1, c, 1, 1, 1)
            mask = src[:, c:]                                                # (B, 1, T, h, w)
            if s == 1 and fade is not None:
                gate = gate * fade
            if s == 0 and self.cfg.warp_skip_fill:  # only where the sink does not reach, while near frame 0
                mask = mask * (1.0 - srcs[1][:, c:]) * (1.0 if fade is None else fade)
            v = v + gate * mask * (x0 - src[:, :c])
        return v

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: WorldModelConfig, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> SanaWMTransformer:
    """Construct a model (use device="meta" to size the published preset without allocating it)."""
    with torch.device(device):
        model = SanaWMTransformer(cfg)
    return model.to(dtype=dtype) if str(device) != "meta" else model

