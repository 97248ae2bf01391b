"""Reprojection conditioning: the warp's geometry and sign conventions, the chunk-causal source rule, and that the
model and the streaming generator really use it."""

import math
import warnings

import numpy as np
import pytest
import torch

from model.config import get_config
from model.generator import RecomputeGenerator, StreamingGenerator, micro_model
from model.parallel import beside
from model.transformer import build_model
from model.vae import CausalVAE, vae_config
from model.warp import (
    ROTATION,
    WarpDepth,
    interpolate_rotations,
    sequence_warp,
    warp_chunks,
    warp_frames,
    warp_grid,
    warp_latents,
)

H = W = 16
F = 8.0                       # latent focal length: 90 degrees across 16 pixels
K = (F, F, (W - 1) / 2, (H - 1) / 2)


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    m = np.eye(4)
    if axis == "yaw":    # about y (down): positive turns right (OpenCV, DESIGN.md section 2)
        m[0, 0], m[0, 2], m[2, 0], m[2, 2] = c, s, -s, c
    else:                # pitch about x (right-hand rule): positive looks up (forward tips towards -y)
        m[1, 1], m[1, 2], m[2, 1], m[2, 2] = c, -s, s, c
    return m


def _cond(poses: list[np.ndarray]) -> torch.Tensor:
    """(1, T, 20) camera conditions: relative c2w then latent intrinsics."""
    rows = [np.concatenate([p.reshape(16), K]) for p in poses]
    return torch.tensor(np.stack(rows)[None], dtype=torch.float32)


def _ramps() -> torch.Tensor:
    """(1, 2, 1, H, W): channel 0 = x coordinate, channel 1 = y coordinate of every pixel."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xs, ys])[None, :, None]


def test_identity_warp_is_the_source():
    src = torch.randn(2, 3, 1, H, W)
    cond = _cond([np.eye(4)]).expand(2, 1, 20)
    out = warp_latents(src, cond, cond)
    assert out.shape == (2, 4, 1, H, W)
    torch.testing.assert_close(out[:, :3], src, atol=1e-5, rtol=0)
    assert torch.all(out[:, 3] == 1)


@pytest.mark.parametrize("deg", [5.0, -8.0])
def test_yaw_moves_content_against_the_turn_by_f_tan(deg):
    """Turning right (positive yaw) brings what was right of centre to the centre: the new view's centre pixel
    samples the source at cx + f tan(angle); a vertical coordinate stays put on the horizon row."""
    a = math.radians(deg)
    out = warp_latents(_ramps(), _cond([np.eye(4)]), _cond([_rot("yaw", a)]))
    cy, cx = 7, 7
    # pixel 7 is 0.5 left of the optical centre 7.5; its ray at angle atan(-0.5/f) + a lands at f tan(...) + 7.5
    want_x = F * math.tan(math.atan(-0.5 / F) + a) + 7.5
    assert out[0, 0, 0, cy, cx].item() == pytest.approx(want_x, abs=0.05)
    assert (out[0, 0, 0, cy, cx].item() - cx) * deg > 0
    # pitch-free: rows keep their height at the centre column (up to the projective stretch, < 0.1 px here)
    assert out[0, 1, 0, cy, cx].item() == pytest.approx(cy, abs=0.1)


def test_pitch_up_moves_content_down():
    """Looking up (positive pitch) shows what was above: the centre samples a smaller y (rows above)."""
    out = warp_latents(_ramps(), _cond([np.eye(4)]), _cond([_rot("pitch", math.radians(6.0))]))
    assert out[0, 1, 0, 7, 7].item() < 7 - 0.5


def test_what_enters_the_view_is_invalid_and_zero():
    out = warp_latents(_ramps() + 1.0, _cond([np.eye(4)]), _cond([_rot("yaw", math.radians(20.0))]))
    valid = out[0, 2, 0]
    assert valid[:, -1].sum() == 0 and valid[:, 0].sum() == H            # the right edge is new, the left was seen
    assert torch.all(out[0, :2, 0][:, valid == 0] == 0)


def test_behind_the_source_camera_is_invalid():
    grid, valid = warp_grid(_cond([np.eye(4)]), _cond([_rot("yaw", math.pi)]), (H, W))
    assert valid.sum() == 0 and torch.isfinite(grid).all()


def test_sequence_warp_uses_the_last_frame_of_the_previous_chunk_and_the_sink():
    """Layout [1, 2, 2]: frames 1-2 warp frame 0, frames 3-4 warp frame 2; with the sink, every frame also warps
    frame 0 by the whole rotation since it; chunk 0 gets zeros and mask 0."""
    lat = torch.randn(1, 3, 5, H, W)
    cond = _cond([np.eye(4)] * 5)
    out = sequence_warp(lat, cond, [1, 2, 2])
    assert out.shape == (1, 4, 5, H, W) and torch.all(out[:, :, 0] == 0)
    for frame, src in ((1, 0), (2, 0), (3, 2), (4, 2)):
        torch.testing.assert_close(out[:, :3, frame], lat[:, :, src], atol=1e-5, rtol=0)
        assert torch.all(out[:, 3, frame] == 1)
    turns = [_rot("yaw", math.radians(4.0 * i)) for i in range(5)]
    both = sequence_warp(_ramps().expand(1, 2, 5, H, W), _cond(turns), [1, 2, 2], sink=True)
    assert both.shape == (1, 6, 5, H, W) and torch.all(both[:, :, 0] == 0)
    centre = [both[0, 3, f, 7, 7].item() for f in range(1, 5)]     # sink x seen at the centre: 4, 8, 12, 16 degrees
    want = [F * math.tan(math.atan(-0.5 / F) + math.radians(4.0 * f)) + 7.5 for f in range(1, 5)]
    assert centre == pytest.approx(want, abs=0.05)
    torch.testing.assert_close(both[:, :3, 3], warp_latents(_ramps(), _cond(turns[2:3]), _cond(turns[3:4]))[:, :, 0])


def test_model_output_depends_on_the_warp_and_old_weights_start_silent():
    cfg = get_config("micro")
    assert cfg.warp_condition and cfg.warp_sink and not get_config("sana-wm-1600m-720p").warp_condition
    with pytest.raises(ValueError, match="warp_sink needs warp_condition"):
        get_config("micro", warp_condition=False)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert torch.all(model.warp_embedder.proj.weight == 0) and torch.all(model.sink_embedder.proj.weight == 0)
    assert torch.all(model.warp_gate == 0)
    with torch.no_grad():  # everything else random (the output layer is zero-initialised too)
        for name, p in model.named_parameters():
            if not name.startswith(("warp_embedder", "sink_embedder", "warp_gate")):
                p.normal_(0.0, 0.2)
    lh, lw = cfg.latent_hw
    x = torch.randn(1, cfg.in_channels, 2, lh, lw)
    ts = torch.tensor([[0.0, 1000.0]])
    warp = torch.randn(1, model.warp_channels, 2, lh, lw)
    assert model.warp_channels == 2 * (cfg.in_channels + 1)
    with torch.no_grad():
        a = model(x, ts, warp=warp)
        b = model(x, ts, warp=torch.zeros_like(warp))
        assert torch.equal(a, b)
        model.sink_embedder.proj.weight.normal_()                          # the sink half alone changes it
        sink_only = warp.clone()
        sink_only[:, :cfg.in_channels + 1] = 0
        assert not torch.allclose(model(x, ts, warp=sink_only), model(x, ts, warp=torch.zeros_like(warp)))
        model.warp_embedder.proj.weight.normal_()
        assert not torch.allclose(model(x, ts, warp=warp), model(x, ts, warp=sink_only))
    with pytest.raises(ValueError, match="warp must be"):
        model.prepare(2, None, None, None, [1, 1], 0, None, 1, "cpu", warp=torch.zeros(1, 2, 2, lh, lw))


def test_warp_skip_pulls_the_x0_estimate_toward_each_valid_warp_by_sigma_times_gate():
    with pytest.raises(ValueError, match="warp_skip needs warp_condition"):
        get_config("micro", warp_condition=False, warp_sink=False)
    assert get_config("tiny64").warp_skip and not get_config("sana-wm-1600m-720p").warp_skip
    model = micro_model()[0].eval()                                            # random everywhere, gates too
    cfg, c = model.cfg, model.cfg.in_channels
    x = torch.randn(2, c, 3, *cfg.latent_hw)
    ts = torch.tensor([[1000.0, 750.0, 0.0], [500.0, 1000.0, 250.0]])
    warp = torch.randn(2, model.warp_channels, 3, *cfg.latent_hw)
    warp[:, c::c + 1] = torch.rand(2, 2, 3, *cfg.latent_hw).round()           # validity masks in {0, 1}
    gate = torch.randn(2, c)
    with torch.no_grad():
        model.warp_gate.zero_()
        v0 = model(x, ts, warp=warp)
        model.warp_gate.copy_(gate)
        v1 = model(x, ts, warp=warp)
    sigma = (ts / 1000.0)[:, None, :, None, None]
    x0 = x - sigma * v0
    want = x0.clone()
    for s in range(2):
        w, m = warp[:, s * (c + 1):s * (c + 1) + c], warp[:, s * (c + 1) + c:(s + 1) * (c + 1)]
        want = want + sigma * gate[s].view(1, c, 1, 1, 1) * m * (w - x0)
    torch.testing.assert_close(x - sigma * v1, want)
    assert not torch.allclose(v0, v1)
    # a gate of 1/sigma on one source with full validity is a copy of that warp
    one = warp.clone()
    one[:, c::c + 1] = 0
    one[:, c] = 1.0
    with torch.no_grad():
        model.warp_gate.zero_()
        model.warp_gate[0] = 1.0 / 0.75
        v = model(x, ts, warp=one)
    torch.testing.assert_close((x - sigma * v)[0, :, 1], one[0, :c, 1])


_FADE = torch.exp(-torch.tensor([0.0, 0.3, 1.2]) / 0.5).view(1, 1, 3, 1, 1)   # micro's range 0.5 m


def _walked_skip(model, masks):
    """Three latent frames 0, 0.3 and 1.2 m from frame 0 at sigma 1, warps with validity `masks` [1, 2, 3, h, w]:
    (x, warp, gate, the x0 estimate with the gates at zero, v with random gates)."""
    cfg, c = model.cfg, model.cfg.in_channels
    x = torch.randn(1, c, 3, *cfg.latent_hw)
    ts = torch.full((1, 3), 1000.0)
    pose = torch.eye(4).repeat(3, 1, 1)
    pose[:, 0, 3] = torch.tensor([0.0, 0.3, 1.2])                               # metres from frame 0
    cond = torch.cat([pose.reshape(1, 3, 16), torch.tensor([[4.0, 4.0, 1.5, 1.5]]).expand(1, 3, 4)], -1)
    warp = torch.randn(1, model.warp_channels, 3, *cfg.latent_hw)
    warp[:, c::c + 1] = masks
    gate = torch.randn(2, c)
    with torch.no_grad():
        model.warp_gate.zero_()
        v0 = model(x, ts, cond, warp=warp)
        model.warp_gate.copy_(gate)
        v1 = model(x, ts, cond, warp=warp)
    return x, warp, gate, x - v0, v1


def test_the_sinks_pull_fades_with_the_distance_walked_since_frame_0():
    with pytest.raises(ValueError, match="warp_skip_range"):
        get_config("micro", warp_skip_range=-1.0)
    assert get_config("tiny64").warp_skip_range > 0 and get_config("micro").warp_skip_range == 0.5
    model = micro_model()[0].eval()                                            # random everywhere, gates too
    c = model.cfg.in_channels
    x, warp, gate, x0, v1 = _walked_skip(model, torch.ones(1, 2, 3, *model.cfg.latent_hw))
    want = x0 + gate[0].view(1, c, 1, 1, 1) * (warp[:, :c] - x0) \
        + gate[1].view(1, c, 1, 1, 1) * _FADE * (warp[:, c + 1:2 * c + 1] - x0)
    torch.testing.assert_close(x - v1, want, atol=1e-5, rtol=1e-5)


def test_streaming_state_carries_the_warp_source():
    """The state's last latent is the chunk just generated, the sink source stays the image latent, and a
    different source changes the next chunk."""
    gen = StreamingGenerator.from_pretrained("micro", batch_size=1)
    first = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    state = gen.reset(first, seed=3)
    c2w = torch.tensor(np.eye(4)).expand(1, gen.frames_per_step, 4, 4).clone()
    _, lat = gen.step(state, c2w, return_latents=True)
    torch.testing.assert_close(state.latent, lat[:, :, -1:])
    z0 = gen.vae.encode(first.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)[:, :, None])
    torch.testing.assert_close(state.latent0, z0)
    _, a = gen.step(state.clone(), c2w, return_latents=True)
    for name in ("latent", "latent0"):
        other = state.clone()
        getattr(other, name).add_(1.0)
        _, b = gen.step(other, c2w, return_latents=True)
        assert (a - b).abs().max() > 1e-3, name


# ----------------------------------------------------------------------------------------------------------------------
# Pixel space: decoded frames warped at frame resolution and re-encoded


def _micro_vae() -> CausalVAE:
    torch.manual_seed(0)
    return CausalVAE(vae_config("micro")).eval()


def test_pixel_warp_identity_is_the_image_latent_and_entering_pixels_are_masked():
    """No turn: the VAE's own image latent of the frame, every latent pixel fully valid. A yaw turn: the share of
    valid pixels falls towards the edge content enters from, and where it is 0 the latent is 0."""
    vae = _micro_vae()
    frames = torch.rand(2, 3, 1, 2 * H, 2 * W) * 2 - 1                      # 32 x 32 frames, 4 x 4 micro latents
    k = (F / 4, F / 4, (W / 4 - 1) / 2, (H / 4 - 1) / 2)                    # latent intrinsics of a 4 x 4 grid
    cond = torch.tensor([*np.eye(4).reshape(16), *k], dtype=torch.float32).expand(2, 1, 20)
    with torch.no_grad():
        out = warp_frames(vae, frames, cond, cond)
        torch.testing.assert_close(out[:, :-1], vae.encode(frames), atol=1e-5, rtol=0)
        assert torch.all(out[:, -1] == 1)
        turned = cond.clone()
        turned[..., :16] = torch.tensor(_rot("yaw", math.radians(40)).reshape(16), dtype=torch.float32)
        out = warp_frames(vae, frames, cond, turned)
    share = out[0, -1, 0]                                                   # (4, 4) valid share per latent pixel
    assert torch.all(share[1:3, 0] == 1) and torch.all(share[:, -1] < 0.5)  # a right turn: content enters right
    cols = share.mean(0)                                                    # (4,) left to right
    assert torch.all(cols[:-1] >= cols[1:]) and cols[0] > 0.9 and cols[-1] == 0
    assert torch.all(out[:, :-1][out[:, -1:].expand_as(out[:, :-1]) == 0] == 0)


def _three_latents(axis: str):
    """micro's VAE, 3 random latents and their cameras: frame 0, then turns of 0.1 and 0.25 rad about `axis`."""
    vae = _micro_vae()
    cfg = get_config("micro")
    lat = torch.randn(1, cfg.in_channels, 3, 4, 4)
    k = [2.0, 2.0, 1.5, 1.5]
    poses = [np.eye(4), _rot(axis, 0.1), _rot(axis, 0.25)]
    cond = torch.tensor(np.stack([np.concatenate([p.reshape(16), k]) for p in poses])[None], dtype=torch.float32)
    return vae, cfg, lat, cond


def test_pixel_sequence_warp_warps_the_decoded_frame_that_ends_the_previous_chunk():
    """Latent j of a chunk-causal sequence warps raw frame s*(j-1) of the decoded latents (the last frame of the
    chunk before) and raw frame 0 for the sink; the image latent gets zeros."""
    vae, cfg, lat, cond = _three_latents("yaw")
    with torch.no_grad():
        out = sequence_warp(lat, cond, [1, 1, 1], sink=True, vae=vae)
        frames = vae.decode(lat)                                            # (1, 3, 9, 32, 32)
        s, c = vae.temporal_factor, cfg.in_channels + 1
        assert out.shape == (1, 2 * c, 3, 4, 4) and torch.all(out[:, :, 0] == 0)
        for j in (1, 2):
            prev = warp_frames(vae, frames[:, :, s * (j - 1):s * (j - 1) + 1], cond[:, j - 1:j], cond[:, j:j + 1])
            sink = warp_frames(vae, frames[:, :, :1], cond[:, :1], cond[:, j:j + 1])
            torch.testing.assert_close(out[:, :c, j:j + 1], prev, atol=1e-5, rtol=0)
            torch.testing.assert_close(out[:, c:, j:j + 1], sink, atol=1e-5, rtol=0)


def test_pixel_space_model_needs_the_vae_or_a_given_warp():
    model, vae = micro_model(warp_space="pixel")
    cfg = model.cfg
    x = torch.randn(1, cfg.in_channels, 2, *cfg.latent_hw)
    ts = torch.tensor([[0.0, 1000.0]])
    cond = torch.zeros(1, 2, 20)
    cond[..., :16] = torch.eye(4).reshape(16)
    cond[..., 16:] = torch.tensor([2.0, 2.0, 1.5, 1.5])
    with pytest.raises(ValueError, match="pixel space"):
        model.warp_of(x, cond, [1, 1])
    with pytest.raises(ValueError, match="warp must be"):
        model(x, ts, cond)
    with torch.no_grad():
        warp = model.warp_of(x, cond, [1, 1], vae)
        assert warp.shape == (1, model.warp_channels, 2, *cfg.latent_hw)
        assert torch.isfinite(model(x, ts, cond, warp=warp)).all()
    with pytest.raises(ValueError, match="warp_space"):
        get_config("micro", warp_space="voxel")
    assert get_config("tiny64").warp_space == "pixel" and get_config("micro").warp_space == "latent"


def test_pixel_streaming_state_carries_the_decoded_frames():
    """In pixel space the state keeps the last decoded frame and frame 0 (float, not the uint8 output), the step
    reads them, and a latent-space model keeps none (0 channels, no memory)."""
    gen = StreamingGenerator(*micro_model(warp_space="pixel"), batch_size=1)
    first = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    state = gen.reset(first, seed=3)
    torch.testing.assert_close(state.frame, state.frame0)
    c2w = torch.tensor(_rot("yaw", 0.1)).expand(1, gen.frames_per_step, 4, 4).clone()
    rgb = gen.step(state, c2w)
    assert (state.frame[:, :, 0].add(1).mul(127.5).round().permute(0, 2, 3, 1) - rgb[:, -1].float()).abs().max() < 1
    assert not torch.equal(state.frame, state.frame0)
    _, a = gen.step(state.clone(), c2w, return_latents=True)
    for name in ("frame", "frame0"):
        other = state.clone()
        getattr(other, name).mul_(-1.0)
        _, b = gen.step(other, c2w, return_latents=True)
        assert (a - b).abs().max() > 1e-3, name
    latent_state = StreamingGenerator.from_pretrained("micro").reset(first, seed=3)
    assert latent_state.frame.shape[1] == 0 and latent_state.nbytes() < state.nbytes()


def test_pixel_streaming_equals_recompute_through_the_vae():
    gen = StreamingGenerator(*micro_model(warp_space="pixel"), batch_size=2)
    first = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    state, ref = gen.reset(first, seed=4), RecomputeGenerator(gen)
    ref.reset(first, seed=4)
    for i in range(4):
        c2w = torch.tensor(np.stack([_rot("yaw", 0.05 * (i * 4 + j + 1)) for j in range(4)])).expand(2, 4, 4, 4)
        _, lat = gen.step(state, c2w.clone(), return_latents=True)
        want = ref.step(c2w.clone())
        assert ((lat - want).norm() / want.norm()).item() < 1e-4


def test_the_fill_skip_pulls_toward_the_previous_frame_only_where_the_sink_does_not_reach():
    with pytest.raises(ValueError, match="warp_skip_fill needs"):
        get_config("micro", warp_skip_fill=True, warp_sink=False)
    assert get_config("tiny64").warp_skip_fill and not get_config("micro").warp_skip_fill
    model = micro_model(warp_skip_fill=True)[0].eval()                          # random everywhere, gates too
    c = model.cfg.in_channels
    x, warp, gate, x0, v1 = _walked_skip(model, torch.rand(1, 2, 3, *model.cfg.latent_hw).round())  # masks in {0, 1}
    m_prev, m_sink = warp[:, c:c + 1], warp[:, 2 * c + 1:]
    want = x0 + gate[0].view(1, c, 1, 1, 1) * m_prev * (1 - m_sink) * _FADE * (warp[:, :c] - x0) \
        + gate[1].view(1, c, 1, 1, 1) * _FADE * m_sink * (warp[:, c + 1:2 * c + 1] - x0)
    torch.testing.assert_close(x - v1, want, atol=1e-5, rtol=1e-5)
    # where the sink's warp is valid, the previous frame adds nothing: only the sink's gate moves the output
    x, warp, gate, x0, v1 = _walked_skip(model, torch.ones(1, 2, 3, *model.cfg.latent_hw))
    torch.testing.assert_close(x - v1, x0 + gate[1].view(1, c, 1, 1, 1) * _FADE * (warp[:, c + 1:2 * c + 1] - x0),
                               atol=1e-5, rtol=1e-5)


def _r(axis: str, a: float) -> torch.Tensor:
    return torch.tensor(_rot(axis, a)[:3, :3], dtype=torch.float32)


def test_interpolated_rotations_turn_at_a_constant_rate_from_one_view_to_the_next():
    """r0 exp(f log(r0^T r1)): a turn about one axis is split evenly; the ends are the two views; no turn is finite."""
    r0 = _r("yaw", 0.3) @ _r("pitch", -0.2)
    fr = torch.tensor([0.0, 0.25, 0.5, 1.0])
    for axis in ("yaw", "pitch"):
        out = interpolate_rotations(r0, r0 @ _r(axis, 0.12), fr)                  # (4, 3, 3)
        for i, f in enumerate(fr.tolist()):
            torch.testing.assert_close(out[i], r0 @ _r(axis, 0.12 * f), atol=1e-6, rtol=0)
    same = interpolate_rotations(r0[None], r0[None], fr)                          # (1, 4, 3, 3)
    torch.testing.assert_close(same, r0.expand(1, 4, 3, 3), atol=1e-6, rtol=0)
    both = _r("yaw", 0.1) @ _r("pitch", 0.05)                                    # two axes: still the geodesic
    half = interpolate_rotations(torch.eye(3), both, torch.tensor([0.5]))[0]
    torch.testing.assert_close(half @ half, both, atol=1e-6, rtol=0)


def _warped_views(vae, frame, src_pose, poses, k, depth=ROTATION):
    """The slow way: frame (1, 3, 1, H, W) warped into each pose by its own grid -> (1, 3, len(poses), H, W) and
    the validity of each view (len(poses), 1, 1, H, W)."""
    fh, fw = frame.shape[-2:]
    kp = [v * vae.spatial_factor for v in k]                     # pixel intrinsics: pure scaling (camera.py)
    src = torch.tensor([*src_pose.reshape(16), *kp], dtype=torch.float32).view(1, 1, 20)
    views, valids = [], []
    for p in poses:
        grid, valid = warp_grid(src, torch.tensor([*p.reshape(16), *kp], dtype=torch.float32).view(1, 1, 20),
                                (fh, fw), depth)
        views.append(torch.nn.functional.grid_sample(frame[:, :, 0], grid, align_corners=True) * valid)
        valids.append(valid)
    return torch.stack(views, 2), torch.stack(valids)


def test_chunk_targets_encode_the_source_warped_into_the_turn_of_the_latent():
    """warp_chunks: the frame warped into the view before the latent, then into tf views turning evenly to the
    latent's own, encoded as one clip; latent 1 of it, masked where nothing lands, and the last view's share."""
    vae = _micro_vae()
    k = [2.0, 2.0, 1.5, 1.5]
    frame = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    src, prev, dst = _rot("yaw", 0.05), _rot("yaw", 0.1), _rot("yaw", 0.3)
    tf = vae.temporal_factor
    turn = [_rot("yaw", 0.1 + 0.2 * i / tf) for i in range(tf + 1)]
    cond = [torch.tensor([*p.reshape(16), *k], dtype=torch.float32).view(1, 1, 20) for p in (src, prev, dst)]
    with torch.no_grad():
        out = warp_chunks(vae, frame, *cond)
        views, valid = _warped_views(vae, frame, src, turn, k)
        want = vae.encode(views)[:, :, 1]
    share = torch.nn.functional.avg_pool2d(valid[-1], vae.spatial_factor)
    assert out.shape == (1, vae.latent_channels + 1, 1, 4, 4) and 0 < share.mean() < 1
    torch.testing.assert_close(out[:, -1:, 0], share, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :-1, 0], want * (share > 0), atol=1e-5, rtol=0)
    with torch.no_grad():   # no turn: the chunk latent of a still clip, not the image latent
        still = warp_chunks(vae, frame, cond[0], cond[0], cond[0])
        image = warp_frames(vae, frame, cond[0], cond[0])
    torch.testing.assert_close(still[:, :-1, 0], vae.encode(frame.expand(-1, -1, 1 + tf, -1, -1))[:, :, 1],
                               atol=1e-5, rtol=0)
    assert (still[:, :-1] - image[:, :-1]).abs().max() > 1e-2
    with torch.no_grad():   # streamed from the image prefix (as the generator runs it): the same targets
        torch.testing.assert_close(warp_chunks(vae, frame, *cond, vae.image_prefix(32, 32)), out, atol=1e-5, rtol=0)


def test_sequence_warp_appends_the_chunk_targets_of_the_same_sources():
    vae, cfg, lat, cond = _three_latents("pitch")
    with torch.no_grad():
        plain = sequence_warp(lat, cond, [1, 1, 1], sink=True, vae=vae)
        out = sequence_warp(lat, cond, [1, 1, 1], sink=True, vae=vae, targets=True)
        frames = vae.decode(lat)
        s, c = vae.temporal_factor, cfg.in_channels + 1
        assert out.shape == (1, 4 * c, 3, 4, 4) and torch.all(out[:, :, 0] == 0)
        torch.testing.assert_close(out[:, :2 * c], plain, atol=0, rtol=0)
        for j in (1, 2):
            before, here = cond[:, j - 1:j], cond[:, j:j + 1]
            prev = warp_chunks(vae, frames[:, :, s * (j - 1):s * (j - 1) + 1], cond[:, j - 1:j], before, here)
            sink = warp_chunks(vae, frames[:, :, :1], cond[:, :1], before, here)
            torch.testing.assert_close(out[:, 2 * c:3 * c, j:j + 1], prev, atol=1e-5, rtol=0)
            torch.testing.assert_close(out[:, 3 * c:, j:j + 1], sink, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="pass the VAE"):
        sequence_warp(lat, cond, [1, 1, 1], sink=True, targets=True)


def _two_frame_inputs(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents of two frames (a clean one, then noise), their timesteps, identity cameras and a random warp input
    with fully valid masks, for a warp-conditioned micro model."""
    cfg, c = model.cfg, model.cfg.in_channels
    x = torch.randn(1, c, 2, *cfg.latent_hw)
    ts = torch.tensor([[0.0, 1000.0]])
    cond = torch.cat([torch.eye(4).reshape(1, 1, 16).expand(1, 2, 16), torch.tensor([[2.0, 2.0, 1.5, 1.5]] * 2)[None]],
                     -1)
    warp = torch.randn(1, model.warp_channels, 2, *cfg.latent_hw)
    warp[:, c::c + 1] = 1.0                                                       # fully valid masks
    return x, ts, cond, warp


def test_chunk_target_models_pull_toward_the_targets_not_the_conditioning():
    """warp_skip_target='chunk': the warp input carries [conditioning | targets]; the embeddings read the first half
    and the skip the second, so targets equal to the conditioning give the 'image' model's output exactly."""
    for bad, match in (({"warp_skip_target": "frame"}, "must be 'image' or 'chunk'"),
                       ({"warp_skip_target": "chunk"}, "warp_space='pixel'"),
                       ({"warp_skip_target": "chunk", "warp_space": "pixel", "warp_skip": False}, "needs warp_skip")):
        with pytest.raises(ValueError, match=match):
            get_config("micro", **bad)
    image = micro_model(warp_space="pixel")[0].eval()
    chunk = micro_model(warp_space="pixel", warp_skip_target="chunk")[0].eval()
    chunk.load_state_dict(image.state_dict())
    c = image.cfg.in_channels
    assert chunk.warp_channels == 2 * image.warp_channels == 4 * (c + 1)
    with torch.no_grad():
        image.warp_gate.normal_()
        chunk.warp_gate.copy_(image.warp_gate)
    x, ts, cond, warp = _two_frame_inputs(image)
    with torch.no_grad():
        want = image(x, ts, cond, warp=warp)
        torch.testing.assert_close(chunk(x, ts, cond, warp=torch.cat([warp, warp], 1)), want, atol=1e-6, rtol=0)
        other = warp.clone()
        other[:, :c] += 1.0
        moved = chunk(x, ts, cond, warp=torch.cat([warp, other], 1))
    # the previous frame's target moved (not its conditioning): the output follows it
    assert (moved - want).abs().max() > 1e-3
    with pytest.raises(ValueError, match="warp must be .*without the chunk skip targets"):
        chunk(x, ts, cond, warp=warp)


def test_chunk_skip_targets_given_apart_equal_the_joined_warp_input():
    """The generator hands prepare the chunk targets apart, as a `beside` handle, so that a CPU trace encodes them
    beside the pass's blocks and the skip joins them: the same output as the joined warp input, eager and as a
    traced fork. A model without chunk targets refuses them; apart, warp holds the conditioning only."""
    chunk = micro_model(warp_space="pixel", warp_skip_target="chunk")[0].eval().requires_grad_(False)
    c, h = chunk.cfg.in_channels, chunk.warp_channels // 2
    with torch.no_grad():
        chunk.warp_gate.normal_()
    x, ts, cond, warp = _two_frame_inputs(chunk)

    def apart(x, warp):
        targets = beside(lambda: warp[:, h:] * 1.0)
        return chunk(x, ts, cond, chunks=[2], prepared=chunk.prepare(2, cond, None, None, [2], 0, None, 1, x.device,
                                                                      warp[:, :h], targets))

    with torch.no_grad():
        want = chunk(x, ts, cond, chunks=[2], warp=warp)
        torch.testing.assert_close(apart(x, warp), want, atol=1e-6, rtol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(apart, (x, warp), check_trace=False)
        assert len(traced.graph.findAllNodes("prim::fork")) >= 1
        other = warp.clone()
        other[:, h:h + c] += 1.0                                                  # another previous-frame target
        torch.testing.assert_close(traced(x, other), chunk(x, ts, cond, chunks=[2], warp=other), atol=1e-6, rtol=0)
        assert (traced(x, other) - want).abs().max() > 1e-3
        with pytest.raises(ValueError, match=rf"warp must be \[1, {h}, 2"):
            chunk.prepare(2, cond, None, None, None, 0, None, 1, x.device, warp, warp[:, h:])
        image = micro_model(warp_space="pixel")[0].eval()
        with pytest.raises(ValueError, match="skip_targets are the chunk skip targets"):
            image.prepare(2, cond, None, None, None, 0, None, 1, x.device, warp[:, :h], warp[:, h:])


# ----------------------------------------------------------------------------------------------------------------------
# Translation at an assumed depth (warp_inverse_depth, warp_floor)


def _pose(rot: np.ndarray, t) -> np.ndarray:
    m = rot.copy()
    m[:3, 3] = t
    return m


def _naive_grid(src: np.ndarray, dst: np.ndarray, depth: float, floor: float = 0.0) -> np.ndarray:
    """The slow way, in float64: every destination pixel's point at z = depth in the destination camera (or where
    its ray meets the plane y = floor of the poses' frame, if nearer and ahead), taken to world space and projected
    into the source camera -> (H, W, 2) source pixels (u, v)."""
    fx, fy, cx, cy = K
    out = np.empty((H, W, 2))
    for v in range(H):
        for u in range(W):
            ray = np.array([(u - cx) / fx, (v - cy) / fy, 1.0])
            z = depth
            if floor > 0:
                down = (dst[:3, :3] @ ray)[1]                          # the ray's drop per unit of z, in the frame
                if down > 0:
                    z = min(z, (floor - dst[1, 3]) / down)
            p_dst = np.array([*(ray * z), 1.0])
            p_src = np.linalg.inv(src) @ dst @ p_dst
            out[v, u] = fx * p_src[0] / p_src[2] + cx, fy * p_src[1] / p_src[2] + cy
    return out


@pytest.mark.parametrize("depth", [0.7, 2.5])
def test_depth_warp_equals_projecting_each_pixel_at_that_depth(depth):
    rng = np.random.default_rng(3)
    src = _pose(_rot("yaw", 0.1) @ _rot("pitch", -0.05), rng.normal(0, 0.1, 3))
    dst = _pose(_rot("yaw", -0.05) @ _rot("pitch", 0.08), rng.normal(0, 0.1, 3))
    grid, _ = warp_grid(_cond([src]), _cond([dst]), (H, W), WarpDepth(1.0 / depth))
    got = (grid[0].double() + 1.0) / 2.0 * torch.tensor([W - 1, H - 1], dtype=torch.float64)   # (H, W, 2) pixels
    np.testing.assert_allclose(got.numpy(), _naive_grid(src, dst, depth), atol=2e-4)


@pytest.mark.parametrize("far", [0.0, 0.25])
def test_floor_warp_puts_the_pixels_that_look_down_on_the_floor(far):
    """With a floor 1.5 m below the first camera, a pixel whose ray meets it nearer than the far depth lies on it,
    as the naive projection has it; rays that look up stay at the far depth (or, at 0, infinitely far)."""
    rng = np.random.default_rng(4)
    src = _pose(_rot("yaw", 0.1), [0.1, 0.05, -0.2])
    dst = _pose(_rot("yaw", -0.05) @ _rot("pitch", -0.1), [0.2, -0.05, 0.4]) if far else \
        _pose(_rot("yaw", -0.05), rng.normal(0, 0.1, 3) * [1, 0, 1])
    grid, _ = warp_grid(_cond([src]), _cond([dst]), (H, W), WarpDepth(far, 1.5))
    got = (grid[0].double() + 1.0) / 2.0 * torch.tensor([W - 1, H - 1], dtype=torch.float64)
    want = _naive_grid(src, dst, 1.0 / far if far else 1e9, floor=1.5)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-3)
    rot_only, _ = warp_grid(_cond([src]), _cond([dst]), (H, W))
    upper = slice(0, H // 2 - 1) if not far else slice(0, 0)
    torch.testing.assert_close(grid[0, upper], rot_only[0, upper], atol=1e-5, rtol=0)   # above the horizon
    assert (grid[0, -1] - rot_only[0, -1]).abs().max() > 0.05                           # the floor moves


def test_walking_forward_zooms_the_warp_in_and_stepping_right_moves_it_left():
    """A step of t toward a plane at depth D: the new view's pixel u samples the source at c + (u - c) D / (D + t),
    nearer the centre, so the content grows. A step right by s shifts the content left by f s / D. Inverse depth 0
    is the rotation-only warp exactly, translation or not."""
    d, t = 2.0, 0.25
    out = warp_latents(_ramps(), _cond([np.eye(4)]), _cond([_pose(np.eye(4), [0, 0, t])]), WarpDepth(1 / d))
    c = (W - 1) / 2
    x = torch.arange(W, dtype=torch.float32)
    torch.testing.assert_close(out[0, 0, 0, 7], c + (x - c) * d / (d + t), atol=1e-4, rtol=0)
    assert torch.all(out[0, -1] == 1)                                                  # all inside when zooming in
    back = warp_latents(_ramps(), _cond([np.eye(4)]), _cond([_pose(np.eye(4), [0, 0, -t])]), WarpDepth(1 / d))
    assert 0 < back[0, -1].mean() < 1                                                   # the border enters the view
    right = warp_latents(_ramps(), _cond([np.eye(4)]), _cond([_pose(np.eye(4), [0.1, 0, 0])]), WarpDepth(1 / d))
    torch.testing.assert_close(right[0, 0, 0, :, 3:12], _ramps()[0, 0, 0, :, 3:12] + F * 0.1 / d, atol=1e-4, rtol=0)
    moved = _cond([_rot("yaw", 0.2) @ _pose(np.eye(4), [0.3, 0.1, 0.5])])
    turned = _cond([_rot("yaw", 0.2)])
    torch.testing.assert_close(warp_latents(_ramps(), _cond([np.eye(4)]), moved),
                               warp_latents(_ramps(), _cond([np.eye(4)]), turned), atol=0, rtol=0)


def test_depth_chunk_targets_move_the_views_on_a_straight_line():
    """warp_chunks with inverse depth: the views between the latent before and the latent walk evenly from one
    position to the other while they turn, each warped at the same depth."""
    vae = _micro_vae()
    k = [2.0, 2.0, 1.5, 1.5]
    frame = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    tf = vae.temporal_factor
    src, prev, dst = np.eye(4), _pose(_rot("yaw", 0.05), [0, 0, 0.2]), _pose(_rot("yaw", 0.25), [0.1, 0, 0.6])
    views = [_pose(_rot("yaw", 0.05 + 0.2 * i / tf), [0.1 * i / tf, 0, 0.2 + 0.4 * i / tf]) for i in range(tf + 1)]
    cond = [torch.tensor([*p.reshape(16), *k], dtype=torch.float32).view(1, 1, 20) for p in (src, prev, dst)]
    with torch.no_grad():
        out = warp_chunks(vae, frame, *cond, depth=WarpDepth(0.5))
        want_views, valid = _warped_views(vae, frame, src, views, k, WarpDepth(0.5))
        want = vae.encode(want_views)[:, :, 1]
        flat = warp_chunks(vae, frame, *cond)                                          # rotation only: other views
    share = torch.nn.functional.avg_pool2d(valid[-1], vae.spatial_factor)
    torch.testing.assert_close(out[:, -1:, 0], share, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :-1, 0], want * (share > 0), atol=1e-5, rtol=0)
    assert (flat - out).abs().max() > 1e-2


def test_depth_streaming_equals_recompute_through_the_vae_on_a_forward_walk():
    """The generator's per-step warps and the full sequence's (`sequence_warp`) agree with translation in them."""
    gen = StreamingGenerator(*micro_model(warp_space="pixel", warp_skip_fill=True, warp_skip_target="chunk",
                                          warp_inverse_depth=0.2, warp_floor=1.5), batch_size=2)
    first = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    state, ref = gen.reset(first, seed=4), RecomputeGenerator(gen)
    ref.reset(first, seed=4)
    for i in range(3):
        c2w = torch.tensor(np.stack([_pose(_rot("yaw", 0.03 * (i * 4 + j + 1)), [0.02 * (i * 4 + j), 0,
                                                                                0.1 * (i * 4 + j + 1)])
                                     for j in range(4)])).expand(2, 4, 4, 4)
        _, lat = gen.step(state, c2w.clone(), return_latents=True)
        want = ref.step(c2w.clone())
        assert ((lat - want).norm() / want.norm()).item() < 1e-4


@pytest.mark.parametrize("field", ["warp_inverse_depth", "warp_floor"])
def test_depth_fields_must_be_finite_non_negative_numbers(field):
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=field):
            get_config("micro", **{field: bad})
