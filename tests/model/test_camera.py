"""Camera geometry: SE(3), intrinsics, conditions, Plücker maps, UCPE ray frames; analytic and diffusers parity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.camera import (
    UCPETransforms,
    apply_ucpe,
    apply_ucpe_fast,
    apply_ucpe_pointwise,
    camera_conditions,
    latent_frame_count,
    plucker_maps,
    plucker_windows,
    post_ucpe_renorm,
    ray_transforms,
    relative_to_first,
    resize_crop_intrinsics,
    scale_intrinsics,
    se3_inverse,
)
from model.rope import cam_rope_freqs

# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def rand_rot(*shape, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(*shape, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    q = q * torch.sign(torch.det(q))[..., None, None]  # proper rotation
    return q.to(dtype)


def rigid(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(*rot.shape[:-2], 4, 4, dtype=rot.dtype)
    out[..., :3, :3] = rot
    out[..., :3, 3] = trans
    out[..., 3, 3] = 1.0
    return out


def rand_c2w(*shape, g: torch.Generator, scale: float = 2.0, dtype=torch.float32) -> torch.Tensor:
    return rigid(rand_rot(*shape, g=g, dtype=dtype), scale * torch.randn(*shape, 3, generator=g, dtype=dtype))


def rot_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rand_k(b: int, f: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Plausible latent-pixel intrinsics (fx, fy, cx, cy), randomised around a 60-90 degree FOV."""
    u = torch.rand(b, f, 4, generator=g)
    return torch.stack([w * (0.6 + 0.4 * u[..., 0]), h * (0.6 + 0.4 * u[..., 1]), w * u[..., 2], h * u[..., 3]], -1)


def cam_cond_abs(c2w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, T, 20) conditions from absolute poses (no relative_to_first), to test UCPE's own invariance."""
    return torch.cat([c2w.reshape(*c2w.shape[:2], 16), k], dim=-1)


def pixel_dirs(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """k (4,) -> camera-frame normalized (x, y, 1) rays [h, w, 3], integer pixel centres."""
    fx, fy, cx, cy = k.tolist()
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    d = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], -1)
    return d / d.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------------
# SE(3), intrinsics
# ----------------------------------------------------------------------------------------------------------------


def test_se3_inverse_closed_form():
    g = torch.Generator().manual_seed(0)
    T = rand_c2w(3, 5, g=g, dtype=torch.float64)
    inv = se3_inverse(T)
    eye = torch.eye(4, dtype=torch.float64).expand(3, 5, 4, 4)
    torch.testing.assert_close(T @ inv, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(inv, torch.linalg.inv(T), atol=1e-12, rtol=0)


def test_relative_to_first_composes_back():
    g = torch.Generator().manual_seed(1)
    c2w = rand_c2w(2, 6, g=g)
    rel = relative_to_first(c2w)
    assert torch.equal(rel[:, 0], torch.eye(4).expand(2, 4, 4))  # exactly
    torch.testing.assert_close(c2w[:, :1] @ rel, c2w, atol=1e-5, rtol=1e-5)
    G = rand_c2w(1, 1, g=g)  # a global rigid motion does not change relative poses
    torch.testing.assert_close(relative_to_first(G @ c2w), rel, atol=1e-5, rtol=1e-5)


def test_scale_intrinsics():
    k = torch.tensor([[640.0, 600.0, 639.5, 351.5]])
    out = scale_intrinsics(k, (704, 1280), (22, 40))
    torch.testing.assert_close(out, torch.tensor([[20.0, 18.75, 19.984375, 10.984375]]))
    torch.testing.assert_close(scale_intrinsics(out, (22, 40), (704, 1280)), k)


def test_resize_crop_intrinsics_by_hand():
    # 480x640 -> 704x1280: scale 2 (width binds), resized 960x1280, crop 128 rows from the top
    k = torch.tensor([500.0, 510.0, 320.0, 240.0])
    out = resize_crop_intrinsics(k, (480, 640), (704, 1280))
    torch.testing.assert_close(out, torch.tensor([1000.0, 1020.0, 640.0, 480.0 - 128.0]))


# ----------------------------------------------------------------------------------------------------------------
# camera_conditions
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s,t_lat,extra", [(4, 3, 0), (8, 2, 3), (1, 4, 0), (4, 1, 0)])
def test_camera_conditions_layout(s, t_lat, extra):
    g = torch.Generator().manual_seed(2)
    f = 1 + s * (t_lat - 1) + extra
    c2w, k = rand_c2w(2, f, g=g), rand_k(2, f, 6, 10, g)
    cc = camera_conditions(c2w, k, s)
    assert cc.shape == (2, t_lat, 20) and latent_frame_count(f, s) == t_lat
    assert torch.equal(cc[:, 0, :16], torch.eye(4).reshape(1, 16).expand(2, 16))  # frame 0 row: identity
    rel = cc[..., :16].reshape(2, t_lat, 4, 4)  # row-major flattening
    torch.testing.assert_close(c2w[:, :1] @ rel, c2w[:, ::s][:, :t_lat], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cc[..., 16:], k[:, ::s][:, :t_lat])


# ----------------------------------------------------------------------------------------------------------------
# Plücker maps
# ----------------------------------------------------------------------------------------------------------------


def test_plucker_identity_pose():
    k = torch.tensor([4.0, 3.5, 2.3, 1.7])
    maps = plucker_maps(torch.eye(4)[None, None], k[None, None], 4, 6, 1)  # [1, 6, 1, 4, 6]
    assert maps.shape == (1, 6, 1, 4, 6)
    d, m = maps[0, :3, 0].permute(1, 2, 0), maps[0, 3:, 0]
    torch.testing.assert_close(d, pixel_dirs(k, 4, 6))
    assert torch.equal(m, torch.zeros_like(m))


def test_plucker_translation_and_yaw():
    """Frame 0 is the identity; frame 1 is translated by t, frame 2 yawed +90 degrees (forward turns to +x)."""
    k = torch.tensor([5.0, 4.0, 3.0, 2.0])
    t = torch.tensor([0.3, -1.2, 2.5])
    c2w = torch.eye(4).repeat(1, 3, 1, 1)
    c2w[0, 1, :3, 3] = t
    c2w[0, 2, :3, :3] = rot_y(math.pi / 2)
    maps = plucker_maps(c2w, k.expand(1, 3, 4), 5, 7, 1)[0]  # [6, 3, 5, 7]
    d_cam = pixel_dirs(k, 5, 7)  # [5, 7, 3]
    d1, m1 = maps[:3, 1].permute(1, 2, 0), maps[3:, 1].permute(1, 2, 0)
    torch.testing.assert_close(d1, d_cam)
    torch.testing.assert_close(m1, torch.linalg.cross(t.expand_as(d_cam), d_cam, dim=-1))
    d2 = maps[:3, 2].permute(1, 2, 0)
    x, y, z = d_cam.unbind(-1)
    torch.testing.assert_close(d2, torch.stack([z, y, -x], -1), atol=1e-6, rtol=1e-6)  # R_y(90) (x,y,z) = (z,y,-x)
    # the principal-point pixel (row 2, col 3) looked forward (+z); after +90 degrees of yaw it looks right (+x)
    assert d2[2, 3].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)


def test_plucker_uses_poses_relative_to_frame_0():
    g = torch.Generator().manual_seed(3)
    c2w, k = rand_c2w(1, 5, g=g), rand_k(1, 5, 3, 4, g)
    G = rand_c2w(1, 1, g=g)
    torch.testing.assert_close(plucker_maps(G @ c2w, k, 3, 4, 4), plucker_maps(c2w, k, 3, 4, 4), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("s,f", [(4, 9), (8, 17), (4, 1), (4, 3), (3, 8)])
def test_plucker_window_layout_and_padding(s, f):
    g = torch.Generator().manual_seed(4)
    c2w, k = rand_c2w(2, f, g=g), rand_k(2, f, 3, 5, g)
    per_frame = plucker_maps(c2w, k, 3, 5, 1)  # [2, 6, F, 3, 5]: one raw frame per slot
    maps = plucker_maps(c2w, k, 3, 5, s)
    t_lat = (f - 1) // s + 1
    assert maps.shape == (2, 6 * s, t_lat, 3, 5)
    for i in range(t_lat):
        start = max(0, s * i - (s - 1))
        for j in range(s):
            frame = min(start + j, f - 1)  # short windows repeat the last frame
            assert torch.equal(maps[:, 6 * j : 6 * j + 6, i], per_frame[:, :, frame]), (i, j, frame)
    if f == 9 and s == 4:  # the published rule spelled out: latent 1 = raw 1..4, latent 2 = raw 5..8
        assert plucker_windows(9, 4).tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 8]]


# ----------------------------------------------------------------------------------------------------------------
# UCPE ray frames
# ----------------------------------------------------------------------------------------------------------------


def test_ray_frames_geometry():
    """P^-1 maps ray-local axes to world: its z column is the token's world ray, its origin the camera centre."""
    g = torch.Generator().manual_seed(5)
    c2w, k = rand_c2w(1, 2, g=g), rand_k(1, 2, 3, 4, g)
    tf = ray_transforms(cam_cond_abs(c2w, k), 3, 4)
    assert isinstance(tf, UCPETransforms) and tf.P.shape == (1, 24, 4, 4) and tf.grid == (2, 3, 4)
    l2w = tf.P_inv.reshape(2, 3, 4, 4, 4)
    rot = l2w[..., :3, :3]
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3).expand_as(rot), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.det(rot), torch.ones(2, 3, 4), atol=1e-5, rtol=0)
    for f in range(2):
        d_world = pixel_dirs(k[0, f], 3, 4) @ c2w[0, f, :3, :3].T
        torch.testing.assert_close(l2w[f, :, :, :3, 2], d_world, atol=1e-5, rtol=0)
        torch.testing.assert_close(l2w[f, :, :, :3, 3], c2w[0, f, :3, 3].expand(3, 4, 3), atol=1e-5, rtol=0)
        # x axis is perpendicular to the camera's down axis
        dots = l2w[f, :, :, :3, 0] @ c2w[0, f, :3, 1]
        torch.testing.assert_close(dots, torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(tf.P @ tf.P_inv, torch.eye(4).expand(1, 24, 4, 4), atol=1e-5, rtol=0)


def test_patch_size_scales_intrinsics():
    """Token (r, c) at patch p carries the ray of latent pixel (p r, p c) with the latent intrinsics."""
    g = torch.Generator().manual_seed(6)
    c2w, k = rand_c2w(1, 1, g=g), rand_k(1, 1, 8, 12, g)
    fine = ray_transforms(cam_cond_abs(c2w, k), 8, 12).P.reshape(8, 12, 4, 4)
    coarse = ray_transforms(cam_cond_abs(c2w, k), 4, 6, patch_size=2).P.reshape(4, 6, 4, 4)
    torch.testing.assert_close(coarse, fine[::2, ::2], atol=1e-5, rtol=1e-5)


def test_nan_rays_give_identity():
    g = torch.Generator().manual_seed(7)
    c2w, k = rand_c2w(1, 2, g=g), rand_k(1, 2, 2, 3, g)
    k[0, 1, 0] = float("nan")
    tf = ray_transforms(cam_cond_abs(c2w, k), 2, 3)
    assert torch.equal(tf.P[0, 6:], torch.eye(4).expand(6, 4, 4))
    assert torch.equal(tf.P_inv[0, 6:], torch.eye(4).expand(6, 4, 4))
    assert not torch.isnan(tf.P).any() and (tf.P[0, :6] - torch.eye(4)).abs().max() > 0.1


def test_apply_ucpe_convention_and_round_trip():
    g = torch.Generator().manual_seed(8)
    c2w, k = rand_c2w(2, 2, g=g), rand_k(2, 2, 2, 3, g)
    tf = ray_transforms(cam_cond_abs(c2w, k), 2, 3)
    rope = cam_rope_freqs(16, 2, 2, 3)
    x = torch.randn(2, 3, 12, 16, generator=g)
    q = apply_ucpe(x, tf, "q", rope)
    # column-vector convention on groups of 4: q_g <- P^T q_g
    torch.testing.assert_close(q[1, 2, 5, 4:8], tf.P[1, 5].T @ x[1, 2, 5, 4:8])
    kv = apply_ucpe(x, tf, "kv", rope)
    torch.testing.assert_close(kv[0, 1, 7, 0:4], tf.P_inv[0, 7] @ x[0, 1, 7, 0:4])
    # "out" undoes "kv" on the same token: P P^-1 = I on the first half, conjugate RoPE on the second
    torch.testing.assert_close(apply_ucpe(kv, tf, "out", rope), x, atol=1e-5, rtol=1e-5)
    assert (apply_ucpe(q, tf, "out", rope) - x).abs().max() > 1e-2  # P P^T != I: the roles are not interchangeable
    no_rope = apply_ucpe(x, tf, "kv", None)
    assert torch.equal(no_rope[..., 8:], x[..., 8:])
    assert apply_ucpe(x.to(torch.bfloat16), tf, "q", rope).dtype == torch.bfloat16


def test_post_ucpe_renorm():
    g = torch.Generator().manual_seed(9)
    before = torch.randn(2, 3, 5, 8, generator=g)
    after = before * torch.tensor([0.5, 3.0, 1.0, 10.0, 0.1])[:, None]
    out = post_ucpe_renorm(after, before)
    rms = lambda t: t.square().mean(-1).sqrt()  # noqa: E731
    assert (rms(out) <= rms(before) * (1 + 1e-5)).all()
    torch.testing.assert_close(out[..., [0, 4], :], after[..., [0, 4], :])  # smaller tokens untouched
    torch.testing.assert_close(rms(out[..., [1, 3], :]), rms(before[..., [1, 3], :]), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# UCPE invariance (property test)
# ----------------------------------------------------------------------------------------------------------------


def _camera_attention(c2w: torch.Tensor, k: torch.Tensor, qkv: torch.Tensor, grid: tuple[int, int, int]):
    """-> (logits [B, h, N, N], world-space output [B, h, N, D]) of a UCPE softmax attention."""
    t, gh, gw = grid
    tf = ray_transforms(cam_cond_abs(c2w, k), gh, gw)
    rope = cam_rope_freqs(qkv.shape[-1], t, gh, gw)
    q, key, v = qkv.unbind(0)
    q, key, v = apply_ucpe(q, tf, "q", rope), apply_ucpe(key, tf, "kv", rope), apply_ucpe(v, tf, "kv", rope)
    logits = q @ key.transpose(-1, -2)
    out = torch.softmax(logits / math.sqrt(q.shape[-1]), dim=-1) @ v
    return logits, apply_ucpe(out, tf, "out", rope)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@settings(max_examples=6, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**31 - 1), g_scale=st.floats(0.0, 3.0))
def test_ucpe_invariant_to_global_rigid_motion(seed, g_scale):
    g = torch.Generator().manual_seed(seed)
    grid = (3, 2, 3)
    c2w, k = rand_c2w(1, 3, g=g), rand_k(1, 3, 2, 3, g)
    qkv = torch.randn(3, 1, 2, 18, 16, generator=g)  # (q, k, v), B=1, 2 heads, N=18, D=16
    logits, out = _camera_attention(c2w, k, qkv, grid)
    G = rigid(rand_rot(g=g), g_scale * torch.randn(3, generator=g))
    logits_g, out_g = _camera_attention(G @ c2w, k, qkv, grid)
    assert _rel_err(logits_g, logits) < 1e-4
    assert _rel_err(out_g, out) < 1e-4
    # moving one camera relative to the others changes the logits between their tokens and the output
    H = rigid(rand_rot(g=g), torch.randn(3, generator=g))
    moved = c2w.clone()
    moved[:, 1] = H @ moved[:, 1]
    logits_m, out_m = _camera_attention(moved, k, qkv, grid)
    assert _rel_err(logits_m[..., :6, 6:12], logits[..., :6, 6:12]) > 1e-2
    assert _rel_err(out_m, out) > 1e-2
    # ... and so does the absolute pose matter nowhere else: frame 0 <-> frame 2 logits stay put
    assert _rel_err(logits_m[..., :6, 12:], logits[..., :6, 12:]) < 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------------------


def _tf(b=1, t=1, gh=2, gw=2) -> UCPETransforms:
    k = torch.tensor([2.0, 2.0, 1.0, 1.0]).repeat(b, t, 1)
    return ray_transforms(cam_cond_abs(torch.eye(4).repeat(b, t, 1, 1), k), gh, gw)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: se3_inverse(torch.zeros(3, 3)), r"\[\.\.\., 4, 4\]"),
        (lambda: relative_to_first(torch.zeros(5, 4, 4)), r"\[B, F, 4, 4\]"),
        (lambda: scale_intrinsics(torch.zeros(3), (2, 2), (1, 1)), r"\[\.\.\., 4\]"),
        (lambda: camera_conditions(torch.zeros(1, 5, 4, 4), torch.zeros(1, 4, 4), 4), r"\[1, 5, 4\]"),
        (lambda: camera_conditions(torch.zeros(1, 5, 4, 4), torch.zeros(1, 5, 4), 0), "t_stride"),
        (lambda: plucker_maps(torch.zeros(1, 5, 4, 4), torch.zeros(1, 5, 4), 0, 3, 4), "lat_h"),
        (lambda: plucker_maps(torch.zeros(1, 5, 3, 4), torch.zeros(1, 5, 4), 2, 3, 4), r"\[B, F, 4, 4\]"),
        (lambda: ray_transforms(torch.zeros(1, 3, 19), 2, 2), r"\[B, T, 20\]"),
        (lambda: ray_transforms(torch.zeros(1, 3, 20), 2, 2, patch_size=0), "patch_size"),
        (lambda: apply_ucpe(torch.zeros(1, 2, 4, 16), _tf(), "k"), "role"),
        (lambda: apply_ucpe(torch.zeros(1, 2, 5, 16), _tf(), "q"), "N=5"),
        (lambda: apply_ucpe(torch.zeros(1, 2, 4, 12), _tf(), "q"), "multiple of 8"),
        (lambda: apply_ucpe(torch.zeros(2, 2, 4, 16), _tf(b=3), "q"), "B=3"),
        (lambda: apply_ucpe(torch.zeros(1, 2, 4, 16), _tf(), "q", cam_rope_freqs(32, 1, 2, 2)), r"\[N, D//4\]"),
        (lambda: post_ucpe_renorm(torch.zeros(2, 3), torch.zeros(3, 2)), "one shape"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------------------------------------------
# Parity with diffusers 0.42.1
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dsana():
    try:
        from diffusers.models.transformers import transformer_sana_wm
        from diffusers.pipelines.sana_wm import cam_utils
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"diffusers SANA-WM not importable ({type(e).__name__}: {e}); parity needs diffusers==0.42.1")
    return transformer_sana_wm, cam_utils


@pytest.mark.parametrize("s,t_lat", [(8, 3), (4, 4), (4, 1)])
def test_conditions_and_plucker_match_diffusers(dsana, s, t_lat):
    _, cam_utils = dsana
    g = torch.Generator().manual_seed(10 + s)
    f, h, w = 1 + s * (t_lat - 1), 64, 96
    c2w = rand_c2w(f, g=g)
    k = torch.tensor([80.0, 70.0, 47.5, 31.5]) + torch.rand(f, 4, generator=g)  # image pixels
    ref = cam_utils.prepare_camera(c2w.numpy(), k.numpy(), target_size=(h, w), vae_stride=(s, 8, 8))
    k_lat = scale_intrinsics(k, (h, w), (h // 8, w // 8))
    torch.testing.assert_close(camera_conditions(c2w[None], k_lat[None], s)[0], ref["raymap"], atol=1e-6, rtol=1e-6)
    ours = plucker_maps(c2w[None], k_lat[None], h // 8, w // 8, s)[0]
    assert ours.shape == ref["chunk_plucker"].shape == (6 * s, t_lat, h // 8, w // 8)
    torch.testing.assert_close(ours, ref["chunk_plucker"], atol=1e-6, rtol=1e-6)


def test_resize_crop_intrinsics_match_diffusers(dsana):
    _, cam_utils = dsana
    from PIL import Image

    k = torch.tensor([[500.0, 510.0, 321.0, 239.0], [450.0, 455.0, 300.0, 250.0]])
    for src_hw in [(480, 640), (1080, 1920), (500, 333)]:
        _, _, resized, crop = cam_utils.resize_and_center_crop(Image.new("RGB", src_hw[::-1]), 64, 96)
        ref = cam_utils.transform_intrinsics_for_crop(k.numpy(), src_hw[::-1], resized, crop)
        torch.testing.assert_close(resize_crop_intrinsics(k, src_hw, (64, 96)), torch.from_numpy(ref))


@pytest.mark.parametrize("patch,lat_hw", [(1, (6, 10)), (2, (6, 10)), (2, (22, 40)), (1, (5, 7))])
def test_ray_transforms_and_apply_match_diffusers(dsana, patch, lat_hw):
    dm, _ = dsana
    g = torch.Generator().manual_seed(20 + patch)
    b, t, head_dim = 2, 3, 112
    lh, lw = lat_hw
    gh, gw = lh // patch, lw // patch
    cc = cam_cond_abs(rand_c2w(b, t, g=g), rand_k(b, t, lh, lw, g))
    rope_full = dm.SanaWMRotaryPosEmbed(head_dim, (1, patch, patch), max_seq_len=1024)((t, gh, gw))
    P, P_T, P_inv, rope_cam = dm._prepare_ucpe_ray_transforms(
        head_dim, cc, (t, gh, gw), (1, patch, patch), rotary_emb=rope_full
    )
    tf = ray_transforms(cc, gh, gw, patch_size=patch)
    torch.testing.assert_close(tf.P, P, atol=2e-6, rtol=0)
    torch.testing.assert_close(tf.P_inv, P_inv, atol=2e-6, rtol=0)
    ours_rope = cam_rope_freqs(head_dim, t, gh, gw)
    x = torch.randn(b, 4, t * gh * gw, head_dim, generator=g)
    for role, matrix, inverse in (("q", P_T, False), ("kv", P_inv, False), ("out", P, True)):
        ref = dm._apply_ucpe_transform(x, matrix, rope_cam, inverse_rope=inverse)
        torch.testing.assert_close(apply_ucpe(x, tf, role, ours_rope), ref, atol=1e-5, rtol=1e-5)
    # the renorm, in diffusers' (B, H, D, N) layout
    after = apply_ucpe(x, tf, "kv", ours_rope)
    ref = dm._downscale_to_reference_rms(x.transpose(-1, -2), after.transpose(-1, -2)).transpose(-1, -2)
    torch.testing.assert_close(post_ucpe_renorm(after, x), ref)


@pytest.mark.parametrize("role", ["q", "kv", "out"])
def test_apply_ucpe_fast_matches_reference(role):
    g = torch.Generator().manual_seed(11)
    t, gh, gw, b, heads, d = 2, 3, 4, 2, 3, 16
    c2w = torch.eye(4).repeat(b, 1 + 4 * (t - 1), 1, 1)
    c2w[:, :, :3, 3] = torch.randn(b, 1 + 4 * (t - 1), 3, generator=g)
    k = torch.tensor([3.0, 3.0, 1.5, 1.0]).repeat(b, 1 + 4 * (t - 1), 1)
    tf = ray_transforms(camera_conditions(c2w, k, 4), gh, gw)
    rope = cam_rope_freqs(d, t, gh, gw)
    x = torch.randn(b, heads, t * gh * gw, d, generator=g)
    ref = apply_ucpe(x, tf, role, rope)
    fast = apply_ucpe_fast(x, tf.role_matrices()[role], rope, inverse=role == "out")
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    pointwise = apply_ucpe_pointwise(x, tf.role_matrices()[role], rope, inverse=role == "out")
    torch.testing.assert_close(pointwise, ref, rtol=1e-5, atol=1e-6)
    half = d // 2   # the rotated half is the same op in both forms
    assert torch.equal(pointwise[..., half:], fast[..., half:])


def test_ucpe_pointwise_form_leaves_no_matmul_for_inductor():
    """Why `apply_ucpe_pointwise` exists: after inductor's decompositions the matmul form still holds a batched
    matmul (a cuBLAS call per use on the GPU), the multiply-add form holds none, so it fuses into one kernel."""
    from torch._inductor.decomposition import select_decomp_table
    from torch.fx.experimental.proxy_tensor import make_fx

    g = torch.Generator().manual_seed(2)
    x, m = torch.randn(1, 2, 12, 16, generator=g), torch.randn(1, 1, 12, 4, 4, generator=g)
    rope = cam_rope_freqs(16, 1, 3, 4)

    def matmuls(fn):
        gm = make_fx(lambda a, b: fn(a, b, rope), decomposition_table=select_decomp_table())(x, m)
        return [n.target for n in gm.graph.nodes
                if n.op == "call_function" and n.target in (torch.ops.aten.bmm.default, torch.ops.aten.mm.default)]

    assert matmuls(apply_ucpe_fast)
    assert not matmuls(apply_ucpe_pointwise)
