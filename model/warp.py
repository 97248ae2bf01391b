"""Reprojection conditioning: the previous clean latent, warped into the new view by the camera's rotation.

Why: a few-step model of 16 tokens per frame has to shift its image by a fraction of a token when the camera turns,
and learning that from Plücker rays and UCPE alone proved too slow for the compute we have (the shipped model held
still under yaw and pitch). A camera rotation about its centre maps one image onto the next by the homography
H = K R_src^T R_dst K^-1 at every depth, so the new view's rotated content can be handed to the model directly; it
still has to fill in what enters the frame and what translation moves (parallax, approach). Without depth,
translation has no exact warp; a `WarpDepth` (`WorldModelConfig.warp_inverse_depth`, `warp_floor`) moves the warps
with the camera as if every pixel lay at one depth, or on a floor below the camera where its ray meets that floor
nearer, so walking forward zooms the warped view and a step sideways shifts it. Why: with rotation-only warps the
model drew a forward walk's approach at a tenth of its true zoom (`benchmarks/fidelity.py`, forward). The default
`WarpDepth()` is the rotation-only warp exactly.

- The source of every latent frame of chunk c is the last latent frame of chunk c-1 (clean history, as streaming
  holds it); chunk 0 (the image latent) has none and gets zeros with a zero validity mask.
- With `warp_sink`, a second source: the image latent (chunk 0, the sink), reprojected by the whole rotation since
  the first frame. Why: a step turns the view by less than a latent pixel (0.4-0.7 at 64x64), and a model that
  keeps its output on the latent grid loses that sub-pixel motion step after step when it only sees the previous
  frame (measured: shifts of 0 or a whole latent pixel, then none). The sink's warp carries the exact accumulated
  rotation, so motion cannot be rounded away while the start view is in sight.
- The model gets [warped latent | validity] (C + 1 channels) per source through its own zero-initialised patch
  embeddings (`warp_embedder`, `sink_embedder`), added to the latent tokens; `WorldModelConfig.warp_condition` /
  `warp_sink` switch them on. The published preset leaves them off, so its architecture and keys are unchanged.
- Poses and intrinsics come from the camera conditions (B, T, 20): the relative c2w of each latent's anchor frame
  (16) and its latent-grid intrinsics (fx, fy, cx, cy), pixel centres at integer coordinates (camera.py).
- `warp_space="pixel"`: the sources are decoded frames (the last raw frame of chunk c-1, and frame 0), warped at
  frame resolution and encoded alone by the VAE; the mask is the valid share of each latent pixel. Why: a bilinear
  warp of a latent is not the VAE's latent of the turned view (measured: it decodes to whole-latent-pixel jumps,
  8, 8, 16, 24 px where the view moved 6, 11, 17, 24), while warping decoded pixels and re-encoding decodes to the
  turn's own motion (a rollout that only re-encodes warps moved the right way in 1.00 of yaw and 0.98 of pitch
  steps). The cost is one image encode per source and step, from the encoder's state after the pad frames
  (`CausalVAE.image_prefix`), so only the image itself runs.
- `warp_skip` uses the same warps a second time, at the output: the x0 estimate is pulled toward them where they are
  valid, by learned or hand-set gates (`SanaWMTransformer._skip`, which says why); with `warp_skip_fill` the
  previous frame's pull covers only what the sink's warp does not.
- `warp_skip_target="chunk"`: the skip pulls toward each source's *chunk* latent instead (`warp_chunks`): the
  source warped into the view before the latent and into its tf raw views (rotations interpolated between the two
  anchors), encoded as a clip of 1 + tf frames, latent 1. Why: a latent after the first stands for tf frames and the
  decoder spreads it over them; an image latent in that slot decodes the chunk's first tf - 1 frames at 16-18 dB
  where a static clip's latent decodes them at 28 dB (measured on 8 held-out pitch turns), and a rollout pulled
  toward image latents blurred the frames between step ends. The cost is one clip encode of 1 + tf frames per source,
  streamed from the encoder's state after the pad frames (`CausalVAE.encode_clip`). One clip per world, the sink's
  views composited over the previous frame's, would halve it, but measured worse (tuning split yaw / pitch 0.958 /
  0.958 against 0.979 / 0.990; benchmark pitch 0.896 against 0.958).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .camera import scale_intrinsics

if TYPE_CHECKING:
    from .vae import CausalVAE, ImagePrefix

__all__ = ["ROTATION", "WarpDepth", "warp_grid", "warp_latents", "warp_frames", "warp_chunks", "interpolate_rotations",
           "sequence_warp", "stack_sources"]


@dataclass(frozen=True)
class WarpDepth:
    """Where the warps take the destination view's pixels to lie, so that translation moves them too.

    inverse: 1 / metres, every pixel at depth 1 / inverse along the view's axis (0: infinitely far, rotation only).
    floor: metres below the first camera (whose frame the poses are relative to; its y axis points down): a pixel
    whose ray meets that level plane nearer than `1 / inverse` lies on it (0: no floor). Why: the lower half of a
    walker's view is floor, whose depth follows from the ray alone; one depth for everything over-moves far ground.
    """

    inverse: float = 0.0
    floor: float = 0.0

    @classmethod
    def of(cls, cfg) -> WarpDepth:
        return cls(cfg.warp_inverse_depth, cfg.warp_floor)

    @property
    def moves(self) -> bool:
        return self.inverse > 0 or self.floor > 0

    def inverse_map(self, r_dst: torch.Tensor, rays: torch.Tensor, y: torch.Tensor) -> torch.Tensor | float:
        """Inverse z-depth of each ray: r_dst [N, 3, 3] the view's rotation, rays [N, h, w, 3] (z = 1 in the view's
        camera), y [N] its height coordinate (down) in the first camera's frame -> [N, h, w, 1], or the one
        inverse depth as a float where there is no floor."""
        if self.floor <= 0:
            return self.inverse
        down = torch.einsum("nj,nhwj->nhw", r_dst[:, 1], rays)                  # (N, h, w) the ray's drop per unit z
        return (down / (self.floor - y).clamp_min(1e-3)[:, None, None]).clamp_min(self.inverse)[..., None]


ROTATION = WarpDepth()


def warp_grid(cond_src: torch.Tensor, cond_dst: torch.Tensor, hw: tuple[int, int],
              depth: WarpDepth = ROTATION) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel of the destination view looks in the source view, under the rotation between them and, when
    `depth` moves, the translation, each pixel taken at the depth it gives.

    cond_src, cond_dst: [B, T, 20]. Returns (grid [B*T, h, w, 2] in grid_sample's normalised coordinates with
    align_corners=True, valid [B*T, 1, h, w]: the ray is in front of the source camera and lands inside it).
    """
    h, w = hw
    b, t = cond_dst.shape[:2]
    c2w_src = cond_src[..., :16].reshape(b * t, 4, 4).float()
    c2w_dst = cond_dst[..., :16].reshape(b * t, 4, 4).float()
    r_src, r_dst = c2w_src[:, :3, :3], c2w_dst[:, :3, :3]
    fx, fy, cx, cy = cond_dst[..., 16:20].reshape(b * t, 4).float().unbind(-1)
    ys, xs = torch.meshgrid(torch.arange(h, device=cond_dst.device, dtype=torch.float32),
                            torch.arange(w, device=cond_dst.device, dtype=torch.float32), indexing="ij")
    rays = torch.stack([(xs[None] - cx[:, None, None]) / fx[:, None, None],
                        (ys[None] - cy[:, None, None]) / fy[:, None, None],
                        torch.ones(b * t, h, w, device=cond_dst.device)], -1)           # (BT, h, w, 3) dst camera
    rel = r_src.transpose(1, 2) @ r_dst                                                # (BT, 3, 3) dst -> src camera
    d = torch.einsum("nij,nhwj->nhwi", rel, rays)                                      # (BT, h, w, 3) src camera
    if depth.moves:   # the point rays / q (q the inverse depth), seen from the source, scaled by q
        move = r_src.transpose(1, 2) @ (c2w_dst[:, :3, 3] - c2w_src[:, :3, 3])[..., None]  # (BT, 3, 1) src camera
        q = depth.inverse_map(r_dst, rays, c2w_dst[:, 1, 3])                            # (BT, h, w, 1) or a float
        d = d + q * move[:, None, None, :, 0]
    z = d[..., 2]
    front = z > 1e-6
    z = torch.where(front, z, torch.ones_like(z))
    sx, sy, scx, scy = cond_src[..., 16:20].reshape(b * t, 4).float().unbind(-1)
    u = sx[:, None, None] * d[..., 0] / z + scx[:, None, None]                         # (BT, h, w) source pixels
    v = sy[:, None, None] * d[..., 1] / z + scy[:, None, None]
    inside = front & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5)
    grid = torch.stack([2.0 * u / max(w - 1, 1) - 1.0, 2.0 * v / max(h - 1, 1) - 1.0], -1)
    grid = torch.where(front[..., None], grid, torch.full_like(grid, -4.0))            # behind: off the image
    return grid, inside[:, None].float()


def _sample(src: torch.Tensor, cond_src: torch.Tensor, cond_dst: torch.Tensor,
            depth: WarpDepth = ROTATION) -> tuple[torch.Tensor, torch.Tensor]:
    """src [B, C, T, h, w] -> (warped [B*T, C, h, w], zero outside the source view; valid [B*T, 1, h, w])."""
    b, c, t, h, w = src.shape
    grid, valid = warp_grid(cond_src, cond_dst, (h, w), depth)
    flat = src.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)                         # (BT, C, h, w)
    out = F.grid_sample(flat.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out * valid, valid


def _stack(out: torch.Tensor, valid: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """(BT, C, h, w), (BT, 1, h, w) -> [B, C + 1, T, h, w]."""
    out = torch.cat([out, valid], 1)                                                   # (BT, C + 1, h, w)
    return out.reshape(b, t, *out.shape[1:]).permute(0, 2, 1, 3, 4)


def warp_latents(src: torch.Tensor, cond_src: torch.Tensor, cond_dst: torch.Tensor,
                 depth: WarpDepth = ROTATION) -> torch.Tensor:
    """src [B, C, T, h, w] seen from cond_src [B, T, 20], warped into cond_dst's views -> [B, C + 1, T, h, w]
    (the warped latents, then the validity mask). Outside the source view the latents are 0."""
    b, _, t = src.shape[:3]
    out, valid = _sample(src, cond_src, cond_dst, depth)
    return _stack(out, valid, b, t).to(src.dtype)


def _to_pixels(cond: torch.Tensor, lat_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Camera conditions [..., 20] with latent-grid intrinsics -> the same with frame intrinsics."""
    return torch.cat([cond[..., :16], scale_intrinsics(cond[..., 16:20], lat_hw, hw)], -1)


def stack_sources(out: torch.Tensor, n: int) -> torch.Tensor:
    """n sources warped in one batch, (nB, C + 1, T, h, w) source-major -> (B, n(C + 1), T, h, w): the warp input's
    layout, one source after the other along channels."""
    return torch.cat(out.chunk(n, 0), 1)


def warp_frames(vae: CausalVAE, frames: torch.Tensor, cond_src: torch.Tensor, cond_dst: torch.Tensor,
                prefix: ImagePrefix | None = None, depth: WarpDepth = ROTATION) -> torch.Tensor:
    """Pixel space: frames [B, 3, T, H, W] in [-1, 1] seen from cond_src [B, T, 20] (latent intrinsics, as
    everywhere), warped into cond_dst's views at frame resolution and encoded alone -> [B, C + 1, T, h, w] (the
    normalised latents, 0 where no pixel of the source lands; then the valid share of each latent pixel).
    prefix: the VAE's `image_prefix` for this frame size, if the caller keeps one (else computed per call)."""
    b, _, t, fh, fw = frames.shape
    s = vae.spatial_factor
    lat_hw = (fh // s, fw // s)
    out, valid = _sample(frames, _to_pixels(cond_src, lat_hw, (fh, fw)),
                         _to_pixels(cond_dst, lat_hw, (fh, fw)), depth)        # (BT, 3, H, W), (BT, 1, H, W)
    z = vae.encode_image(out[:, :, None], prefix)[:, :, 0]                             # (BT, C, h, w)
    share = F.avg_pool2d(valid, s)                                                     # (BT, 1, h, w)
    return _stack(z * (share > 0), share, b, t)


def _rodrigues(phi: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors [..., 3] -> rotation matrices [..., 3, 3] (exact, and finite at angle 0)."""
    a = phi.norm(dim=-1)[..., None, None]                                             # (..., 1, 1)
    small = a < 1e-6
    safe = torch.where(small, torch.ones_like(a), a)
    s = torch.where(small, 1.0 - a * a / 6.0, torch.sin(safe) / safe)                 # sin(a) / a
    c = torch.where(small, 0.5 - a * a / 24.0, (1.0 - torch.cos(safe)) / (safe * safe))  # (1 - cos a) / a^2
    x, y, z = phi.unbind(-1)
    o = torch.zeros_like(x)
    k = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).unflatten(-1, (3, 3))         # (..., 3, 3) skew(phi)
    eye = torch.eye(3, device=phi.device, dtype=phi.dtype).expand_as(k)
    return eye + s * k + c * (k @ k)


def interpolate_rotations(r0: torch.Tensor, r1: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Geodesic interpolation: r0, r1 [..., 3, 3], fractions [n] -> [..., n, 3, 3], r0 exp(f log(r0^T r1)).

    For rotations below pi (a latent's turn is a few degrees); atan2 keeps small angles precise in fp32."""
    d = r0.transpose(-1, -2) @ r1                                                     # (..., 3, 3)
    w = 0.5 * torch.stack([d[..., 2, 1] - d[..., 1, 2], d[..., 0, 2] - d[..., 2, 0],
                           d[..., 1, 0] - d[..., 0, 1]], -1)                          # (..., 3) sin(a) * axis
    sin_a = w.norm(dim=-1, keepdim=True)
    a = torch.atan2(sin_a, 0.5 * (d.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) - 1.0))
    phi = w * torch.where(sin_a > 1e-7, a / sin_a.clamp_min(1e-7), torch.ones_like(a))  # (..., 3) axis * angle
    steps = _rodrigues(phi[..., None, :] * fractions[:, None].to(phi.dtype))          # (..., n, 3, 3)
    return r0[..., None, :, :] @ steps


def warp_chunks(vae: CausalVAE, frames: torch.Tensor, cond_src: torch.Tensor, cond_prev: torch.Tensor,
                cond_dst: torch.Tensor, prefix: ImagePrefix | None = None, depth: WarpDepth = ROTATION) -> torch.Tensor:
    """The skip targets of `warp_skip_target="chunk"`: frames [B, 3, T, H, W] in [-1, 1] seen from cond_src
    [B, T, 20] -> [B, C + 1, T, h, w]: per latent, the frame warped into cond_prev's view (the latent before) and
    into tf views turning from there to cond_dst's (the last one cond_dst itself), encoded as one clip of 1 + tf
    frames; its latent 1, 0 where no pixel lands, then the valid share of each latent pixel in cond_dst's view.
    Rotations are interpolated on the geodesic, positions on the straight line (used where `depth` moves).
    prefix: the VAE's `image_prefix`, which `encode_clip` streams from (else computed per call)."""
    b, _, t, fh, fw = frames.shape
    tf, s = vae.temporal_factor, vae.spatial_factor
    lat_hw = (fh // s, fw // s)
    r0 = cond_prev[..., :16].unflatten(-1, (4, 4))[..., :3, :3].float()               # (B, T, 3, 3)
    r1 = cond_dst[..., :16].unflatten(-1, (4, 4))[..., :3, :3].float()
    fr = torch.arange(1, tf, device=frames.device, dtype=torch.float32) / tf          # (tf - 1,)
    rots = torch.cat([r0[:, :, None], interpolate_rotations(r0, r1, fr), r1[:, :, None]], 2)  # (B, T, 1 + tf, 3, 3)
    c2w = torch.zeros(*rots.shape[:3], 4, 4, device=frames.device)
    c2w[..., :3, :3] = rots
    c2w[..., 3, 3] = 1.0
    if depth.moves:
        t0 = cond_prev[..., :16].unflatten(-1, (4, 4))[..., :3, 3].float()            # (B, T, 3)
        t1 = cond_dst[..., :16].unflatten(-1, (4, 4))[..., :3, 3].float()
        f = torch.arange(0, tf + 1, device=frames.device, dtype=torch.float32) / tf   # (1 + tf,)
        c2w[..., :3, 3] = t0[:, :, None] + f[:, None] * (t1 - t0)[:, :, None]          # (B, T, 1 + tf, 3)
    k_px = scale_intrinsics(cond_dst[..., 16:20].float(), lat_hw, (fh, fw))          # (B, T, 4)
    views = torch.cat([c2w.flatten(-2), k_px[:, :, None].expand(b, t, 1 + tf, 4)], -1).flatten(1, 2)
    src = _to_pixels(cond_src.float(), lat_hw, (fh, fw))[:, :, None]                 # (B, T, 1, 20)
    src = src.expand(b, t, 1 + tf, 20).flatten(1, 2)                                  # (B, T(1 + tf), 20)
    clip = frames[:, :, :, None].expand(b, 3, t, 1 + tf, fh, fw).flatten(2, 3)       # (B, 3, T(1 + tf), H, W)
    out, valid = _sample(clip, src, views, depth)                             # (BT(1 + tf), 3 | 1, H, W)
    out = out.unflatten(0, (b * t, 1 + tf)).transpose(1, 2)                           # (BT, 3, 1 + tf, H, W)
    z = vae.encode_clip(out, prefix)[:, :, 1]                                         # (BT, C, h, w)
    share = F.avg_pool2d(valid.unflatten(0, (b * t, 1 + tf))[:, -1], s)               # (BT, 1, h, w)
    return _stack(z * (share > 0), share, b, t)


def sequence_warp(latents: torch.Tensor, cond: torch.Tensor, chunks: list[int], sink: bool = False,
                  vae: CausalVAE | None = None, targets: bool = False, depth: WarpDepth = ROTATION) -> torch.Tensor:
    """The conditioning of a chunk-causal sequence: latents [B, C, T, h, w] (their history clean), cond [B, T, 20],
    chunks the layout (e.g. [1, 1, 1]) -> [B, (C + 1) * (1 + sink), T, h, w]; frames of chunk c warp the last frame
    of chunk c-1 (and, with sink, frame 0); chunk 0 gets zeros. With a VAE, in pixel space: the latents are decoded
    (causally, as streaming decodes them) and their frames warped and re-encoded (`warp_frames`). `targets` (pixel
    space only) appends the same sources' chunk latents (`warp_chunks`, the skip targets of
    `warp_skip_target="chunk"`), doubling the channels. depth: as `warp_grid`."""
    b, c, t, h, w = latents.shape
    dev = latents.device
    if targets and vae is None:
        raise ValueError("chunk skip targets are encoded from decoded frames: pass the VAE (pixel-space warps)")
    ends = torch.tensor(chunks, device=dev).cumsum(0)                                  # (n,) one past each chunk
    chunk_of = torch.repeat_interleave(torch.arange(len(chunks), device=dev), torch.tensor(chunks, device=dev))  # (T,)
    src_idx = (ends[(chunk_of - 1).clamp_min(0)] - 1)                                  # (T,) last frame before
    first = torch.zeros_like(src_idx)
    if vae is None:
        def warp(idx, cond_src):
            return warp_latents(latents[:, :, idx], cond_src, cond, depth)
    else:  # a condition, like the clean history it comes from: no gradient through the VAE
        with torch.no_grad():
            frames = vae.decode(latents.float())                                       # (B, 3, 1 + s(T-1), H, W)
            prefix = vae.image_prefix(*frames.shape[-2:])                              # one for both sources
        before = cond[:, (torch.arange(t, device=dev) - 1).clamp_min(0)]               # (B, T, 20) the latent before

        def warp(idx, cond_src):                                                       # latent j ends at raw s*j
            with torch.no_grad():
                return warp_frames(vae, frames[:, :, idx * vae.temporal_factor], cond_src, cond,
                                   prefix, depth).to(latents.dtype)

        def chunk_targets(srcs):                                                       # both in one batch
            src = torch.cat([frames[:, :, i * vae.temporal_factor] for i, _ in srcs])  # (SB, 3, T, H, W)
            with torch.no_grad():
                out = warp_chunks(vae, src, torch.cat([cs for _, cs in srcs]), before.repeat(len(srcs), 1, 1),
                                  cond.repeat(len(srcs), 1, 1), prefix, depth)
            return stack_sources(out.to(latents.dtype), len(srcs))                      # (B, S(C + 1), T, h, w)
    sources = [(src_idx, cond[:, src_idx])] + ([(first, cond[:, first])] if sink else [])
    out = torch.cat([warp(i, cs) for i, cs in sources] + ([chunk_targets(sources)] if targets else []), 1)
    has_src = (chunk_of > 0).to(out.dtype)[None, None, :, None, None]
    return out * has_src
