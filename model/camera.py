"""Camera geometry for the world model: SE(3) pose maths, intrinsics, Plücker maps and UCPE ray frames (§4).

Conventions (project-wide): poses are camera-to-world 4x4 in OpenCV axes (x right, y down, z forward), metres;
intrinsics are (fx, fy, cx, cy) in pixels of the grid they describe, pixel centres at integer coordinates.

- Poses are made relative to the first raw frame (P0^-1 P_k, frame 0 exactly the identity) before they reach the
  model, so a global rigid motion of the whole trajectory never changes the conditioning.
- `camera_conditions` (B, T_lat, 20) and `plucker_maps` (B, 6 s, T_lat, h, w) follow the published pipeline and
  diffusers' `prepare_camera`: latent i is represented by raw frame s*i; its Plücker window is the s raw frames
  [max(0, s*i - (s-1)), +s), padded at the end by repeating the last frame.
- UCPE (§4.1): every token gets a ray frame (z along its world ray, x = normalize(cam_y x z), y = z x x) and the
  4x4 world -> ray-local transform P. All matrices act on **column vectors**: a 4-channel group g of a head is
  the column vector c = x[..., 4g:4g+4], transformed as c <- M c (out_i = sum_j M_ij c_j). Queries use M = P^T,
  keys and values M = P^-1, the attention output M = P. The logit of each group is then q^T P_a P_b^-1 k: the
  relative SE(3) transform between the two tokens' ray frames, invariant to a global rigid motion G
  (P -> P G^-1). The second half of the head dim gets the reduced camera RoPE (forward on q, k, v; conjugate on
  the output). This is the maths of diffusers' `_apply_ucpe_transform` (einsum "bnij,bhnkj->bhnki").
- Ray frames are built in float32 (float64 if given) whatever the input dtype; `apply_ucpe` works in at least
  float32 and returns the input dtype.
- Nothing here checks tensor values (that would sync the host); callers validate actions and intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.rope import apply_rope

__all__ = [
    "UCPETransforms",
    "se3_inverse",
    "relative_to_first",
    "scale_intrinsics",
    "resize_crop_intrinsics",
    "latent_frame_count",
    "plucker_windows",
    "camera_conditions",
    "plucker_maps",
    "ray_transforms",
    "apply_ucpe",
    "apply_ucpe_fast",
    "apply_ucpe_pointwise",
    "post_ucpe_renorm",
]


@dataclass(frozen=True)
class UCPETransforms:
    """Per-token UCPE ray transforms for one camera trajectory batch; computed once, shared by all blocks.

    P:     [B, N, 4, 4] world -> ray-local (column vectors: x_ray = P @ x_world), N = T * gh * gw in (t, h, w) order.
    P_inv: [B, N, 4, 4] ray-local -> world (closed-form SE(3) inverse of P).
    grid:  (T, gh, gw) token grid the transforms were built for.
    """

    P: torch.Tensor
    P_inv: torch.Tensor
    grid: tuple[int, int, int]

    @property
    def num_tokens(self) -> int:
        t, gh, gw = self.grid
        return t * gh * gw

    def role_matrices(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """{"q": P^T, "kv": P^-1, "out": P} as [B, 1, N, 4, 4] in `dtype`, for `apply_ucpe_fast` (once per step)."""
        return {"q": self.P.transpose(-1, -2).unsqueeze(1).to(dtype), "kv": self.P_inv.unsqueeze(1).to(dtype),
                "out": self.P.unsqueeze(1).to(dtype)}


# ----------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------


def _check_poses(c2w: torch.Tensor, name: str = "c2w") -> tuple[int, int]:
    if c2w.ndim != 4 or tuple(c2w.shape[-2:]) != (4, 4):
        raise ValueError(f"{name} must be [B, F, 4, 4], got shape {tuple(c2w.shape)}")
    if not c2w.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {c2w.dtype}")
    return c2w.shape[0], c2w.shape[1]


def _check_intrinsics(k: torch.Tensor, b: int, f: int) -> None:
    if tuple(k.shape) != (b, f, 4):
        raise ValueError(f"intrinsics must be [B, F, 4] = [{b}, {f}, 4] (fx, fy, cx, cy), got shape {tuple(k.shape)}")


def _check_pos_int(name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Geometry runs in float32, or float64 when given float64 (half precision breaks normalisations)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------------------------
# SE(3) and intrinsics
# ----------------------------------------------------------------------------------------------------------------


def se3_inverse(T: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of rigid transforms T [..., 4, 4]: [R t; 0 1]^-1 = [R^T -R^T t; 0 1]."""
    if T.ndim < 2 or tuple(T.shape[-2:]) != (4, 4):
        raise ValueError(f"T must be [..., 4, 4], got shape {tuple(T.shape)}")
    rt = T[..., :3, :3].transpose(-1, -2)  # [..., 3, 3]
    t = -(rt @ T[..., :3, 3:])  # [..., 3, 1]
    bottom = torch.zeros_like(T[..., 3:, :])  # [..., 1, 4]
    bottom[..., 0, 3] = 1.0
    return torch.cat([torch.cat([rt, t], dim=-1), bottom], dim=-2)


def relative_to_first(c2w: torch.Tensor) -> torch.Tensor:
    """c2w [B, F, 4, 4] -> P0^-1 P_k [B, F, 4, 4]; frame 0 is set to the exact identity."""
    b, f = _check_poses(c2w)
    rel = se3_inverse(c2w[:, :1]) @ c2w[:, 1:]  # [B, F-1, 4, 4]
    eye = torch.eye(4, dtype=c2w.dtype, device=c2w.device).expand(b, 1, 4, 4)
    return torch.cat([eye, rel], dim=1)


def scale_intrinsics(k: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """k [..., 4] (fx, fy, cx, cy) in pixels of src_hw -> pixels of dst_hw; fx, cx scale with width, fy, cy with height.

    Pure scaling, no half-pixel shift: this is what the published pipeline does when it maps 704x1280 pixels to the
    22x40 latent grid, and the checkpoints were trained with it.
    """
    if k.shape[-1:] != (4,):
        raise ValueError(f"intrinsics must be [..., 4] (fx, fy, cx, cy), got shape {tuple(k.shape)}")
    (sh, sw), (dh, dw) = src_hw, dst_hw
    for name, v in (("src height", sh), ("src width", sw), ("dst height", dh), ("dst width", dw)):
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    sx, sy = dw / sw, dh / sh
    # Python scalars only: no host-to-device copy, so this runs inside a CUDA-graph capture
    return torch.stack([k[..., 0] * sx, k[..., 1] * sy, k[..., 2] * sx, k[..., 3] * sy], dim=-1)


def resize_crop_intrinsics(k: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """k [..., 4] for an image of src_hw -> after an aspect-preserving resize and centre crop to dst_hw.

    Mirrors the published preprocessing: scale = max(dst/src) per axis, resized size rounded (Python round) and at
    least dst, crop offsets floor((resized - dst) / 2).
    """
    if k.shape[-1:] != (4,):
        raise ValueError(f"intrinsics must be [..., 4] (fx, fy, cx, cy), got shape {tuple(k.shape)}")
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if min(sh, sw, dh, dw) <= 0:
        raise ValueError(f"image sizes must be positive, got src {src_hw}, dst {dst_hw}")
    s = max(dh / sh, dw / sw)
    rw, rh = max(dw, int(round(sw * s))), max(dh, int(round(sh * s)))
    left, top = (rw - dw) // 2, (rh - dh) // 2
    sx, sy = rw / sw, rh / sh
    fx, fy, cx, cy = k.unbind(-1)
    return torch.stack([fx * sx, fy * sy, cx * sx - left, cy * sy - top], dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Latent-frame conditioning: camera_conditions and Plücker maps
# ----------------------------------------------------------------------------------------------------------------


def latent_frame_count(num_frames: int, t_stride: int) -> int:
    """Raw frames -> latent frames: the first raw frame alone, then one latent per t_stride frames."""
    _check_pos_int("num_frames", num_frames)
    _check_pos_int("t_stride", t_stride)
    return (num_frames - 1) // t_stride + 1


def plucker_windows(num_frames: int, t_stride: int, device=None) -> torch.Tensor:
    """Raw-frame indices per latent frame -> [T_lat, t_stride] long.

    Latent i reads frames [max(0, s*i - (s-1)), +s); indices past the last frame repeat the last frame (padding).
    """
    t_lat = latent_frame_count(num_frames, t_stride)
    start = (torch.arange(t_lat, device=device) * t_stride - (t_stride - 1)).clamp_min(0)  # [T_lat]
    idx = start[:, None] + torch.arange(t_stride, device=device)[None, :]  # [T_lat, s]
    return idx.clamp_max(num_frames - 1)


def camera_conditions(c2w: torch.Tensor, k_lat: torch.Tensor, t_stride: int) -> torch.Tensor:
    """c2w [B, F, 4, 4], k_lat [B, F, 4] (latent pixels) -> [B, T_lat, 20].

    Row i: relative c2w (to frame 0) of raw frame t_stride * i flattened row-major (16), then fx, fy, cx, cy.
    """
    b, f = _check_poses(c2w)
    _check_intrinsics(k_lat, b, f)
    t_lat = latent_frame_count(f, t_stride)
    rel = relative_to_first(c2w)  # [B, F, 4, 4]
    idx = torch.arange(t_lat, device=c2w.device) * t_stride  # [T_lat]
    return torch.cat([rel[:, idx].reshape(b, t_lat, 16), k_lat[:, idx].to(rel.dtype)], dim=-1)  # [B, T_lat, 20]


def _plucker_frames(c2w: torch.Tensor, k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """c2w [B, F, 4, 4], k [B, F, 4] -> [B, F, 6, h, w]: d = normalize(R (u-cx)/fx, (v-cy)/fy, 1), m = t x d."""
    fx, fy, cx, cy = (k[..., i, None, None] for i in range(4))  # [B, F, 1, 1]
    u = torch.arange(w, dtype=c2w.dtype, device=c2w.device)[None, None, None, :]  # [1, 1, 1, w]
    v = torch.arange(h, dtype=c2w.dtype, device=c2w.device)[None, None, :, None]  # [1, 1, h, 1]
    x = ((u - cx) / fx).expand(-1, -1, h, w)  # [B, F, h, w]
    y = ((v - cy) / fy).expand(-1, -1, h, w)
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [B, F, h, w, 3]
    d = torch.einsum("bfij,bfhwj->bfhwi", c2w[..., :3, :3], d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    t = c2w[:, :, None, None, :3, 3].expand_as(d)  # [B, F, h, w, 3]
    m = torch.linalg.cross(t, d, dim=-1)
    return torch.cat([d, m], dim=-1).permute(0, 1, 4, 2, 3)  # [B, F, 6, h, w]


def plucker_maps(c2w: torch.Tensor, k_lat: torch.Tensor, lat_h: int, lat_w: int, t_stride: int) -> torch.Tensor:
    """c2w [B, F, 4, 4], k_lat [B, F, 4] -> Plücker maps [B, 6 * t_stride, T_lat, lat_h, lat_w].

    Per raw frame (pose relative to frame 0) channels [d, m] on the integer latent grid; latent i stacks its window's
    frames frame-major (channel 6 j + c is channel c of the window's j-th frame).
    """
    b, f = _check_poses(c2w)
    _check_intrinsics(k_lat, b, f)
    _check_pos_int("lat_h", lat_h)
    _check_pos_int("lat_w", lat_w)
    idx = plucker_windows(f, t_stride, device=c2w.device)  # [T_lat, s]
    t_lat = idx.shape[0]
    rel = relative_to_first(c2w)
    maps = _plucker_frames(rel, k_lat.to(rel.dtype), lat_h, lat_w)  # [B, F, 6, h, w]
    maps = maps[:, idx.reshape(-1)].reshape(b, t_lat, 6 * t_stride, lat_h, lat_w)  # [B, T_lat, 6 s, h, w]
    return maps.permute(0, 2, 1, 3, 4)  # [B, 6 s, T_lat, h, w]


# ----------------------------------------------------------------------------------------------------------------
# UCPE ray frames and transforms
# ----------------------------------------------------------------------------------------------------------------


def _normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def ray_transforms(cam_cond: torch.Tensor, grid_h: int, grid_w: int, patch_size: int = 1) -> UCPETransforms:
    """camera_conditions [B, T, 20] -> per-token world -> ray-local transforms on the (T, grid_h, grid_w) token grid.

    Intrinsics arrive in latent pixels; on a token grid of patch size p they become (fx, fy, cx, cy) / p and token
    (row, col) sits at the ray of latent pixel (p * col, p * row), the patch's first pixel rather than its centre, as
    in diffusers (which reaches fx / p through a pinhole FOV round trip); kept for checkpoint parity. Rays that come
    out NaN (e.g. NaN intrinsics or rotation) get the identity; NaN translations are not masked, as in diffusers.
    """
    if cam_cond.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(cam_cond.device.type):
        with torch.autocast(cam_cond.device.type, enabled=False):  # pose maths stays in fp32 under bf16 autocast
            return ray_transforms(cam_cond.float(), grid_h, grid_w, patch_size)
    if cam_cond.ndim != 3 or cam_cond.shape[-1] != 20:
        raise ValueError(f"camera conditions must be [B, T, 20] (c2w 16 + fx fy cx cy), got {tuple(cam_cond.shape)}")
    _check_pos_int("grid_h", grid_h)
    _check_pos_int("grid_w", grid_w)
    _check_pos_int("patch_size", patch_size)
    b, t, _ = cam_cond.shape
    cc = cam_cond.to(_work_dtype(cam_cond.dtype))
    c2w = cc[..., :16].reshape(b, t, 4, 4)
    fx, fy, cx, cy = (cc[..., 16 + i, None, None] / patch_size for i in range(4))  # [B, T, 1, 1]
    u = torch.arange(grid_w, dtype=cc.dtype, device=cc.device)[None, None, None, :]  # [1, 1, 1, gw]
    v = torch.arange(grid_h, dtype=cc.dtype, device=cc.device)[None, None, :, None]  # [1, 1, gh, 1]
    x = ((u - cx) / fx).expand(-1, -1, grid_h, grid_w)  # [B, T, gh, gw]
    y = ((v - cy) / fy).expand(-1, -1, grid_h, grid_w)
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1) / torch.sqrt(1 + x * x + y * y)[..., None]

    rot, trans = c2w[..., :3, :3], c2w[..., :3, 3]  # [B, T, 3, 3], [B, T, 3]
    d_world = torch.einsum("btij,bthwj->bthwi", rot, d_cam)  # [B, T, gh, gw, 3]
    cam_y = rot[:, :, None, None, :, 1].expand_as(d_world)  # camera "down" axis in world
    z_r = _normalize(d_world)
    x_r = _normalize(torch.linalg.cross(cam_y, z_r, dim=-1))
    y_r = _normalize(torch.linalg.cross(z_r, x_r, dim=-1))
    r_w2l = torch.stack([x_r, y_r, z_r], dim=-2)  # rows = ray axes: [B, T, gh, gw, 3, 3] = R_l2w^T
    t_w2l = -(r_w2l @ trans[:, :, None, None, :, None])  # [B, T, gh, gw, 3, 1]
    bottom = torch.zeros_like(r_w2l[..., :1, :])  # [B, T, gh, gw, 1, 3]
    bottom_t = torch.ones_like(t_w2l[..., :1, :])
    P = torch.cat([torch.cat([r_w2l, t_w2l], dim=-1), torch.cat([bottom, bottom_t], dim=-1)], dim=-2)
    nan_ray = torch.isnan(d_world).any(dim=-1)[..., None, None]  # [B, T, gh, gw, 1, 1]
    P = torch.where(nan_ray, torch.eye(4, dtype=P.dtype, device=P.device), P)
    P = P.reshape(b, t * grid_h * grid_w, 4, 4)  # [B, N, 4, 4]
    return UCPETransforms(P=P, P_inv=se3_inverse(P), grid=(t, grid_h, grid_w))


_ROLES = ("q", "kv", "out")


def apply_ucpe(x: torch.Tensor, tf: UCPETransforms, role: str, rope: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, heads, N, D] -> UCPE-transformed [B, heads, N, D].

    First half of D, in groups of 4 channels as column vectors c: "q" c <- P^T c, "kv" c <- P^-1 c, "out" c <- P c.
    Second half: rope [N, D // 4] complex (`cam_rope_freqs`) forward for "q"/"kv", conjugate for "out"; None leaves
    it unchanged.
    """
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    if x.ndim != 4:
        raise ValueError(f"x must be [B, heads, N, D], got shape {tuple(x.shape)}")
    b, _, n, d = x.shape
    if d % 8:
        raise ValueError(f"head dim must be a multiple of 8 (4x4 groups on half of it), got D={d}")
    tb, tn = tf.P.shape[:2]
    if n != tn or tb not in (b, 1):
        raise ValueError(f"x has B={b}, N={n} but the transforms are for B={tb} (or 1), N={tn}")
    if rope is not None and tuple(rope.shape[-2:]) != (n, d // 4):
        raise ValueError(f"camera rope must end in [N, D//4] = [{n}, {d // 4}], got shape {tuple(rope.shape)}")
    matrix = {"q": tf.P.transpose(-1, -2), "kv": tf.P_inv, "out": tf.P}[role].expand(b, n, 4, 4)  # [B, N, 4, 4]
    work = torch.promote_types(torch.promote_types(x.dtype, matrix.dtype), torch.float32)
    half = d // 2
    groups = x[..., :half].to(work).reshape(*x.shape[:3], half // 4, 4)  # [B, h, N, G, 4]
    projected = torch.einsum("bnij,bhngj->bhngi", matrix.to(work), groups).reshape(*x.shape[:3], half)
    rotated = x[..., half:]
    if rope is not None:
        rotated = apply_rope(rotated, rope, inverse=role == "out")
    return torch.cat([projected.to(x.dtype), rotated.to(x.dtype)], dim=-1)


def apply_ucpe_fast(x: torch.Tensor, matrix: torch.Tensor, rope: torch.Tensor | None = None,
                    inverse: bool = False) -> torch.Tensor:
    """`apply_ucpe` with a precomputed role matrix ([B|1, 1, N, 4, 4] from `UCPETransforms.role_matrices`) and
    no checks: the per-block hot path. `apply_ucpe` stays the reference; a test pits the two."""
    half = x.shape[-1] // 2
    groups = x[..., :half].unflatten(-1, (half // 4, 4))                                 # [B, H, N, G, 4]
    projected = (groups.to(matrix.dtype) @ matrix.transpose(-1, -2)).flatten(-2)        # c <- M c per group
    return _join_rotated(x, projected, rope, inverse)


def _join_rotated(x: torch.Tensor, projected: torch.Tensor, rope: torch.Tensor | None, inverse: bool) -> torch.Tensor:
    """[projected first half | x's second half under the camera RoPE (None: as is)], in x's dtype."""
    half = x.shape[-1] // 2
    rotated = x[..., half:] if rope is None else apply_rope(x[..., half:], rope, inverse=inverse)
    return torch.cat([projected.to(x.dtype), rotated], dim=-1)


def apply_ucpe_pointwise(x: torch.Tensor, matrix: torch.Tensor, rope: torch.Tensor | None = None,
                         inverse: bool = False) -> torch.Tensor:
    """`apply_ucpe_fast` with the 4x4 products as broadcast multiply-adds, the form `torch.compile` fuses.

    Why: inductor hands every matmul to cuBLAS, and a [B, H, N, G, 4] @ [B, 1, N, 4, 4] product becomes a batched
    fp32 GEMM of N 4x4 tiles per call (the costliest kernel of a published-size eager pass, 200 launches). As four
    products summed it is elementwise, so it fuses with its casts, the camera RoPE and the concatenation into one
    kernel. Eager it writes a 4x larger temporary, so the eager path keeps the matmul.
    """
    half = x.shape[-1] // 2
    groups = x[..., :half].unflatten(-1, (half // 4, 4)).to(matrix.dtype)                # [B, H, N, G, 4]
    projected = (groups.unsqueeze(-2) * matrix.unsqueeze(-3)).sum(-1).flatten(-2)      # out_i = sum_j M_ij c_j
    return _join_rotated(x, projected, rope, inverse)


def post_ucpe_renorm(x_after: torch.Tensor, x_before: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Shrink each token of x_after [..., D] so its channel RMS does not exceed x_before's (never grows it).

    diffusers applies this to q', k', v' in both camera branches; the released Triton path does not (§4.1, B.4).
    """
    if x_after.shape != x_before.shape:
        raise ValueError(f"x_after {tuple(x_after.shape)} and x_before {tuple(x_before.shape)} must have one shape")
    rms_before = x_before.square().mean(dim=-1, keepdim=True).add(eps).sqrt()
    rms_after = x_after.square().mean(dim=-1, keepdim=True).add(eps).sqrt()
    return x_after * (rms_before / rms_after.clamp_min(eps)).clamp(max=1.0)
