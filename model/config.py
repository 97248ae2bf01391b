"""WorldModelConfig and the named presets. Every preset runs through the same classes.

- `sana-wm-1600m-720p`: the published architecture (2,661,800,448 parameters); loads official weights.
- `tiny`: the embedded default, trained on the procedural worlds; runs on a laptop CPU.
- `tiny64`: tiny's blocks at 64x64 frames (16 tokens per frame), the shipped embedded model.
- `tiny128`: tiny64 at 128x128 frames, the same 16 tokens per frame (patch 4); grown from tiny64 (`model.train.grow`).
- `micro`: unit tests; the smallest configuration that still exercises every code path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class WorldModelConfig:
    name: str = "custom"
    # 1. Transformer (names follow the published checkpoint).
    in_channels: int = 128            # latent channels (= out channels; no learned sigma)
    hidden_size: int = 2240
    depth: int = 20
    num_heads: int = 20               # self- and cross-attention heads; head_dim = hidden_size // num_heads
    softmax_every: int = 4            # softmax attention at block i when (i + 1) % softmax_every == 0
    patch_size: tuple[int, int, int] = (1, 1, 1)   # (t, h, w); t must be 1 (one token frame per latent frame)
    mlp_ratio: float = 3.0
    temporal_kernel: int = 3          # GLUMBConvTemp t_conv kernel along frames
    conv_kernel: int = 4              # K-only short convolution along frames (GDN blocks)
    caption_channels: int = 2304
    caption_len: int = 300            # length of the null-caption buffer
    qk_norm_eps: float = 1e-5
    cross_norm_eps: float = 1e-6
    gdn_eps: float = 1e-8
    y_norm_scale: float = 0.01        # init of attention_y_norm's weight
    cam_post_renorm: bool = False     # post-UCPE RMS renorm in the camera branch (diffusers applies it; see docs)
    cam_sdpa_pad: bool = True         # softmax camera branch at temperature 1/sqrt(pad128(D)), as published
    softmax_bf16: bool = True         # softmax SDPA runs in bf16 when activations are fp32, as published
    # 2. Video geometry: pixels -> VAE latents -> tokens.
    height: int = 704
    width: int = 1280
    vae_spatial: int = 32             # pixels per latent pixel
    vae_temporal: int = 8             # raw frames per latent frame after the first (which is alone)
    fps: int = 16
    # 3. Streaming: chunks of latent frames, few-step schedule, softmax KV window.
    chunk_frames: int = 3             # latent frames generated per step
    first_chunk_frames: int = 4       # the first chunk: the clean image latent plus chunk_frames
    denoise_timesteps: tuple[int, ...] = (1000, 960, 889, 727, 0)
    sink_chunks: int = 1              # softmax KV: the first chunk is kept forever...
    window_chunks: int = 1            # ...plus this many most recent chunks
    rope_window: bool = False         # softmax RoPE positions relative to the window (bounded) instead of absolute
    vae: str = "ltx2"                 # "ltx2" (local diffusers folder) or the name of a CausalVAEConfig preset
    # 4. Ours, off in the published preset: the previous clean latent reprojected by the camera rotation as an
    #    extra input (model/warp.py), so small models can turn their view.
    warp_condition: bool = False
    warp_sink: bool = False           # ...and the image latent (the sink) reprojected into every new view
    warp_space: str = "latent"        # "latent": bilinear in the latent grid; "pixel": decoded frames warped and
    #                                   re-encoded by the VAE (exact sub-pixel motion, one image encode per source)
    warp_skip: bool = False           # the x0 estimate is pulled toward each warped source where it is valid, by a
    #                                   learned per-channel gate (zero at init): x0 += sigma g m (warp - x0)
    warp_skip_range: float = 0.0      # metres: the sink's pull fades as exp(-d / range) with the camera's distance d
    #                                   from frame 0 (a rotation-only warp is wrong once the camera moved); 0 = no fade
    warp_skip_fill: bool = False      # the previous frame's pull acts only where the sink's does not reach: its
    #                                   validity times (1 - sink validity) times the sink's fade (see `_skip`)
    warp_skip_target: str = "image"   # what the skip pulls toward: "image", each warp's own latent (the
    #                                   conditioning); "chunk", the warp's latent as a chunk of tf frames
    #                                   (`warp.warp_chunks`: pixel space only, one clip encode per source)
    warp_inverse_depth: float = 0.0   # 1 / metres: the warps also move with the camera, as if every pixel lay at
    #                                   this inverse depth; 0 = infinitely far, the rotation-only warp
    warp_floor: float = 0.0           # metres below the first camera: pixels whose ray meets that floor nearer lie on
    #                                   it (`warp.WarpDepth`); 0 = no floor

    def __post_init__(self):
        if self.warp_sink and not self.warp_condition:
            raise ValueError("warp_sink needs warp_condition")
        if self.warp_skip and not self.warp_condition:
            raise ValueError("warp_skip needs warp_condition")
        if self.warp_skip_fill and not (self.warp_skip and self.warp_sink):
            raise ValueError("warp_skip_fill needs warp_skip and warp_sink")
        if self.warp_skip_target not in ("image", "chunk"):
            raise ValueError(f"warp_skip_target must be 'image' or 'chunk', got {self.warp_skip_target!r}")
        if self.warp_skip_target == "chunk" and not (self.warp_skip and self.warp_space == "pixel"):
            raise ValueError("warp_skip_target='chunk' needs warp_skip and warp_space='pixel' (it encodes frames)")
        if not (self.warp_skip_range >= 0.0 and math.isfinite(self.warp_skip_range)):
            raise ValueError(f"warp_skip_range must be a finite number of metres >= 0, got {self.warp_skip_range}")
        if not (self.warp_inverse_depth >= 0.0 and math.isfinite(self.warp_inverse_depth)):
            raise ValueError(f"warp_inverse_depth must be a finite number of 1/metres >= 0, got "
                             f"{self.warp_inverse_depth}")
        if not (self.warp_floor >= 0.0 and math.isfinite(self.warp_floor)):
            raise ValueError(f"warp_floor must be a finite number of metres >= 0, got {self.warp_floor}")
        if self.warp_space not in ("latent", "pixel"):
            raise ValueError(f"warp_space must be 'latent' or 'pixel', got {self.warp_space!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.head_dim % 8:
            raise ValueError(f"head_dim must be a multiple of 8 (UCPE 4x4 groups on half of it), got {self.head_dim}")
        if self.patch_size[0] != 1:
            raise ValueError(f"temporal patch size must be 1, got {self.patch_size}")
        lat_h, lat_w = self.latent_hw
        if self.height % self.vae_spatial or self.width % self.vae_spatial:
            raise ValueError(
                f"frame size {self.height}x{self.width} must be divisible by vae_spatial {self.vae_spatial}")
        if lat_h % self.patch_size[1] or lat_w % self.patch_size[2]:
            raise ValueError(f"latent grid {lat_h}x{lat_w} must be divisible by patch {self.patch_size[1:]}")
        steps = list(self.denoise_timesteps)
        if steps[-1] != 0 or steps != sorted(steps, reverse=True):
            raise ValueError(f"denoise_timesteps must decrease to 0, got {self.denoise_timesteps}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def warps_pixels(self) -> bool:
        """Warp-conditioned in pixel space: the warp needs the VAE (and the state keeps decoded frames)."""
        return self.warp_condition and self.warp_space == "pixel"

    @property
    def warp_targets(self) -> bool:
        """The warp input carries the skip's chunk targets after the conditioning (`warp_skip_target="chunk"`)."""
        return self.warp_skip and self.warp_skip_target == "chunk"

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.vae_spatial, self.width // self.vae_spatial

    @property
    def token_hw(self) -> tuple[int, int]:
        lat_h, lat_w = self.latent_hw
        return lat_h // self.patch_size[1], lat_w // self.patch_size[2]

    @property
    def tokens_per_frame(self) -> int:
        gh, gw = self.token_hw
        return gh * gw

    @property
    def plucker_channels(self) -> int:
        return 6 * self.vae_temporal

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def is_softmax(self, block: int) -> bool:
        return (block + 1) % self.softmax_every == 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> WorldModelConfig:
        raw = json.loads(text)
        known = {f.name for f in fields(WorldModelConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown WorldModelConfig fields {unknown}")
        for k in ("patch_size", "denoise_timesteps"):
            if k in raw:
                raw[k] = tuple(raw[k])
        return WorldModelConfig(**raw)


# The embedded family: tiny's blocks, warps and skip; the variants below change only the frame size and patch.
_TINY = WorldModelConfig(
    name="tiny", in_channels=16, hidden_size=192, depth=8, num_heads=4, patch_size=(1, 2, 2), mlp_ratio=2.0,
    denoise_timesteps=(1000, 750, 0),
    caption_channels=64, caption_len=8, height=128, width=128, vae_spatial=8, vae_temporal=4,
    chunk_frames=1, first_chunk_frames=1, sink_chunks=1, window_chunks=3, vae="tiny",
    cam_sdpa_pad=False, softmax_bf16=False, rope_window=True, warp_condition=True, warp_sink=True,
    warp_space="pixel", warp_skip=True, warp_skip_range=0.1, warp_skip_fill=True, warp_skip_target="chunk",
)

PRESETS: dict[str, WorldModelConfig] = {
    "sana-wm-1600m-720p": WorldModelConfig(name="sana-wm-1600m-720p"),
    "tiny": _TINY,
    # The shipped variant of tiny, sized to the compute we have: 64x64 frames, 8x8 latents patched 2x2 into a 4x4
    # token grid (16 tokens per frame: a quarter of tiny's training and streaming cost), same blocks. The shipped
    # checkpoint's config runs one pass, denoise_timesteps=(1000, 0) (stage 12, model card item 12); the preset
    # keeps the two levels it was trained at.
    "tiny64": replace(_TINY, name="tiny64", height=64, width=64),
    # tiny64 at 128x128 frames: 16x16 latents patched 4x4 keep its 4x4 token grid, so its blocks carry over and only
    # the patch maps change (`python -m model.train.grow`).
    "tiny128": replace(_TINY, name="tiny128", patch_size=(1, 4, 4)),
    "micro": WorldModelConfig(
        name="micro", in_channels=4, hidden_size=32, depth=4, num_heads=2, patch_size=(1, 2, 2),
        denoise_timesteps=(1000, 500, 0),
        caption_channels=16, caption_len=4, height=32, width=32, vae_spatial=8, vae_temporal=4,
        chunk_frames=1, first_chunk_frames=1, sink_chunks=1, window_chunks=2, vae="micro",
        cam_sdpa_pad=False, softmax_bf16=False, rope_window=True, warp_condition=True, warp_sink=True,
        warp_skip=True, warp_skip_range=0.5,
    ),
}


def get_config(name: str, **overrides) -> WorldModelConfig:
    """A named preset, optionally with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
