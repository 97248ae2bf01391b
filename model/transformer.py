"""SanaWMTransformer: the hybrid Gated-DeltaNet / softmax diffusion transformer of SANA-WM, one class for
every preset, with the published module and state_dict names (872 keys for `sana-wm-1600m-720p`).

- Per-frame adaLN: every latent frame carries its own timestep (the clean image latent has t = 0).
- Blocks: GDN self-attention, softmax at every 4th block, each with the UCPE camera branch; a Plücker
  embedding is added after self-attention in every block; cross-attention to caption embeddings (a null
  caption buffer is the default); GLUMBConvTemp FFN with a temporal conv.
- Time layouts: bidirectional (`chunks=None`, the released bidirectional model) or chunk-causal
  (`chunks=[...]`, training and streaming).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttnContext, SanaWMAttention
from .camera import ray_transforms
from .config import WorldModelConfig
from .layers import CaptionEmbedder, CrossAttention, FinalLayer, GLUMBConvTemp, PatchEmbed, RMSNorm, TimestepEmbedder
from .rope import cam_rope_freqs, rope_freqs


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

    def forward(self, x, y, y_mask, t0, ctx: AttnContext, plucker: torch.Tensor | None):
        """x: [B, T*S, C]; y: [B, L, C]; y_mask: [B, L]; t0: [B, T, 6, C]; plucker: [B, T*S, C] or None."""
        b, n, c = x.shape
        frames, s = ctx.frames, ctx.tokens_per_frame
        mod = (self.scale_shift_table[None, None] + t0).unsqueeze(3)  # (B, T, 6, 1, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(2)  # (B, T, 1, C) each

        def per_frame(z):
            return z.view(b, frames, s, c)  # (B, N, C) -> (B, T, S, C)

        # 1.
        x_in = (per_frame(self.norm1(x)) * (1 + scale_msa) + shift_msa).view(b, n, c)
        x = x + (gate_msa * per_frame(self.attn(x_in, ctx))).view(b, n, c)
        # 2.
        if plucker is not None:
            x = x + self.plucker_proj(plucker)
        # 3.
        x = x + self.cross_attn(x, y, y_mask)
        # 4.
        x_mlp = (per_frame(self.norm2(x)) * (1 + scale_mlp) + shift_mlp).view(b, n, c)
        h, w = ctx.grid
        out = self.mlp(x_mlp, frames, h, w, chunks=ctx.chunks)
        return x + (gate_mlp * per_frame(out)).view(b, n, c)


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
        for emb in (self.plucker_embedder, self.raymap_embedder):
            nn.init.zeros_(emb.proj.weight)
            nn.init.zeros_(emb.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def null_caption(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.y_embedder.y_embedding[None].expand(batch, -1, -1)
        return y, torch.ones(batch, y.shape[1], dtype=torch.bool, device=y.device)

    def context(self, frames: int, camera_conditions: torch.Tensor | None, chunks: list[int] | None,
                frame_offset: int, device) -> AttnContext:
        """The per-call attention context (RoPE tables, UCPE transforms, time layout), shared by all blocks."""
        gh, gw = self.cfg.token_hw
        d = self.cfg.head_dim
        rope = rope_freqs(d, frames, gh, gw, frame_offset=frame_offset, device=device)
        cam = cam_rope = None
        if camera_conditions is not None:
            cam = ray_transforms(camera_conditions, gh, gw, patch_size=self.cfg.patch_size[1])
            cam_rope = cam_rope_freqs(d, frames, gh, gw, frame_offset=frame_offset, device=device)
        if chunks is not None and sum(chunks) != frames:
            raise ValueError(f"chunks {chunks} must sum to the number of latent frames {frames}")
        return AttnContext(frames=frames, grid=(gh, gw), rope=rope, chunks=chunks, cam=cam, cam_rope=cam_rope)

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
                frame_offset: int = 0) -> torch.Tensor:
        """Velocity for latents.

        latents: [B, C_lat, T, h, w]; timestep: [B, T] per frame, 0..1000 (truncated to integers, as published);
        camera_conditions: [B, T, 20] (relative c2w + latent intrinsics, see camera.py) or None;
        plucker: [B, 6*vae_temporal, T, h, w] or None; caption: [B, L, caption_channels] or None (null caption);
        caption_mask: [B, L] (1 = valid); chunks: None (bidirectional) or chunk-causal frame counts;
        frame_offset: absolute index of the first latent frame (RoPE positions in streaming).
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
        ctx = self.context(frames, camera_conditions, chunks, frame_offset, latents.device)
        plucker_emb = self.plucker_embedder(plucker.to(x.dtype)) if plucker is not None else None
        t = self.t_embedder(timestep.long().float().flatten())             # (B*T, C)
        t0 = self.t_block(t).view(b, frames, 6, -1)                        # (B, T, 6, C)
        t = t.view(b, frames, -1)
        if caption is None:
            caption, caption_mask = self.null_caption(b)
        y = self.attention_y_norm(self.y_embedder(caption.to(x.dtype)))   # (B, L, C)
        # 2. Blocks.
        for blk in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, y, caption_mask, t0, ctx, plucker_emb, use_reentrant=False)
            else:
                x = blk(x, y, caption_mask, t0, ctx, plucker_emb)
        # 3. Output.
        return self.unpatchify(self.final_layer(x, t), frames)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: WorldModelConfig, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> SanaWMTransformer:
    """Construct a model (use device="meta" to size the published preset without allocating it)."""
    with torch.device(device):
        model = SanaWMTransformer(cfg)
    return model.to(dtype=dtype) if str(device) != "meta" else model

