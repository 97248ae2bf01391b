"""Frame upscaler: the world model's decoded frames at `scale` times their size, as a last decoder stage.

Why a separate stage and not a bigger model: a 128x128 DiT costs 2.7x the 64x64 step on the CPU and, trained on
from the 64x64 weights, still drew a worse 128x128 picture than the 64x64 model upsampled (model card, item 17).
This stage leaves the world model as it is. Everything inside the step (latents, caches, the pixel-space warps of
the decoded frames) stays at the model's size; only the frames handed out are upscaled.

- Output = bilinear upsampling + a learned residual whose last conv starts at zero: an untrained upscaler is
  exactly the bilinear baseline, so training can only be measured against it.
- The residual branch runs at half the input size (pixel-unshuffle stem), channels-last, with the VAE's residual
  blocks at k_t = 1: it never mixes frames, so it carries no state between steps.
- `detail_only` (off by default): the residual is made zero-mean over the s x s output pixels of each input pixel,
  so the output's s x s means are the bilinear baseline's and the upscaler cannot recolour what the model drew.
  Measured (model card, item 18): what the trained upscalers gained over bilinear was almost all in those means
  (sharper at the model's own scale, and colour): imposed on a trained one, it removed its gains and its losses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from .checkpoint import FORMAT, CheckpointError, metadata, read_state_dict
from .vae import CausalConv, ChannelRMSNorm, ResBlock, depth_to_space, space_to_depth


@dataclass(frozen=True)
class UpscalerConfig:
    scale: int = 2          # output size / input size
    channels: int = 32      # width of the residual branch (at half the input size)
    blocks: int = 2         # residual blocks
    detail_only: bool = False  # the residual averages to zero over each input pixel's s x s output pixels
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.scale < 2 or self.channels < 1 or self.blocks < 0:
            raise ValueError(f"an upscaler needs scale >= 2, channels >= 1 and blocks >= 0, got {self}")


class FrameUpscaler(nn.Module):
    """(B, 3, T, H, W) frames in [-1, 1] -> (B, 3, T, sH, sW); H and W even."""

    def __init__(self, config: UpscalerConfig | None = None):
        super().__init__()
        self.config = cfg = config or UpscalerConfig()
        out = 2 * cfg.scale   # output pixels per residual-branch pixel, per side
        self.conv_in = CausalConv(3 * 4, cfg.channels, 1)
        self.blocks = nn.ModuleList(ResBlock(cfg.channels, 1, cfg.norm_eps) for _ in range(cfg.blocks))
        self.norm_out = ChannelRMSNorm(cfg.channels, cfg.norm_eps)
        self.conv_out = CausalConv(cfg.channels, 3 * out * out, 1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def scale(self) -> int:
        return self.config.scale

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """The bilinear part alone: (B, 3, T, H, W) -> (B, 3, T, sH, sW)."""
        b, c, t, h, w = x.shape
        y = F.interpolate(x.transpose(1, 2).reshape(b * t, c, h, w), scale_factor=self.scale, mode="bilinear",
                          align_corners=False)                                   # (B*T, 3, sH, sW)
        return y.reshape(b, t, c, h * self.scale, w * self.scale).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"frames must be (B, 3, T, H, W) with H and W even, got {tuple(x.shape)}")
        h = self.conv_in(space_to_depth(x.permute(0, 2, 3, 4, 1), 1, 2))         # (B, T, H/2, W/2, C)
        for block in self.blocks:
            h = block(h)
        r = self.conv_out(F.silu(self.norm_out(h)))                             # (B, T, H/2, W/2, 3 * (2s)^2)
        r = depth_to_space(r, 1, 2 * self.scale).permute(0, 4, 1, 2, 3)         # (B, 3, T, sH, sW)
        if self.config.detail_only:
            s = self.scale
            mean = F.avg_pool3d(r, (1, s, s))                                   # (B, 3, T, H, W)
            r = r - F.interpolate(mean, scale_factor=(1, s, s), mode="nearest")   # each mean over its s x s
        return self.base(x) + r


def upscaler_path(dit_path: str | Path) -> Path:
    """Where a DiT checkpoint's upscaler sits: `<stem>_sr.safetensors` beside it (`tiny_dit` -> `tiny_sr`)."""
    p = Path(dit_path)
    return p.with_name(p.stem.replace("_dit", "") + "_sr.safetensors")


def save_upscaler(up: FrameUpscaler, path: str | Path, meta: dict[str, str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in up.state_dict().items()}
    save_file(sd, str(path), metadata={"format": FORMAT, "kind": "upscaler",
                                       "config": json.dumps(asdict(up.config)), **(meta or {})})
    return path


def upscaler_config(path: str | Path) -> UpscalerConfig:
    """The config in an upscaler file's header, read without its weights."""
    meta = metadata(path)
    if meta.get("kind") != "upscaler" or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: not a sanawm upscaler (metadata kind {meta.get('kind')!r})")
    return UpscalerConfig(**meta["config"])


def load_upscaler(path: str | Path) -> FrameUpscaler:
    up = FrameUpscaler(upscaler_config(path))
    sd, _ = read_state_dict(path)
    up.load_state_dict(sd)
    return up
