"""benchmarks/fidelity.py: phase correlation, the image-shift sign convention, and a tiny end-to-end run on micro."""

import json
import math

import numpy as np
import pytest
import torch
from bench_loader import load_benchmark

from model.train.evaluate import psnr
from sanawm_env.scenes import RenderConfig, Renderer, intrinsics_from_fov, make_scene, pose
from sanawm_env.scenes.geometry import SceneGeometry
from sanawm_env.scenes.poses import apply_local_delta

fidelity = load_benchmark("fidelity")
SIZE = 48


@pytest.mark.parametrize("shift", [(3, -5), (-4, 2), (0, 7), (-6, 0), (5, 5)])
def test_phase_shift_recovers_integer_circular_shift(shift):
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(40, 56, 3, generator=g) * 255).to(torch.uint8)       # non-square: catches swapped axes
    moved = torch.roll(img, shifts=shift, dims=(0, 1))
    assert fidelity.phase_shift(img, moved) == shift
    assert fidelity.phase_shift(moved, img) == (-shift[0], -shift[1])
    grey = img.double().mean(-1).numpy()                                      # (H, W) numpy works too
    assert fidelity.phase_shift(grey, np.roll(grey, shift, axis=(0, 1))) == shift


@pytest.fixture(scope="module")
def room():
    """A held-out indoor scene, a free start facing open space, and a supersampled 90-degree renderer."""
    scene = make_scene("indoor", 100000)
    geom = SceneGeometry(scene)
    rng = np.random.default_rng(0)
    position = geom.sample_free_position(rng)
    start = pose(position, yaw=fidelity.open_heading(geom, position, rng))
    renderer = Renderer(scene, RenderConfig(SIZE, SIZE, supersample=2))
    return start, renderer, intrinsics_from_fov(SIZE, SIZE, 90.0)


@pytest.mark.parametrize("axis, index", [("yaw", 4), ("pitch", 3)])
@pytest.mark.parametrize("sign", [1, -1])
def test_oracle_shift_sign_convention(room, axis, index, sign):
    """DESIGN.md §2: +dyaw turns right, so the image moves left (dx < 0); +dpitch looks up, so it moves down (dy > 0).

    The deltas go through the env's own pose integration (`apply_local_delta`, action layout dx dy dz dpitch dyaw
    droll), so the benchmark's expected signs are tied to what an agent's action does.
    """
    assert fidelity.EXPECTED_SIGN == {"yaw": -1, "pitch": 1, "forward": 1}
    start, renderer, k = room
    delta = np.zeros(6)
    delta[index] = sign * math.radians(8.0)
    c2w = np.stack([start, apply_local_delta(start, delta)])
    a, b = renderer.render(torch.from_numpy(c2w), k).rgb
    dy, dx = fidelity.phase_shift(a, b)
    along, across = (dx, dy) if axis == "yaw" else (dy, dx)
    assert fidelity._sign(along) == fidelity.EXPECTED_SIGN[axis] * sign, (dy, dx)
    assert abs(along) >= 2 and abs(across) <= 1, (dy, dx)


@pytest.mark.parametrize("log_zoom", [0.08, -0.05, 0.0, 0.17])
def test_zoom_scale_recovers_a_zoom_about_the_centre(log_zoom):
    """A smooth random texture (non-square) zoomed by exp(log_zoom) with grid_sample is measured to the search step,
    and the reverse zoom reads the opposite sign; a brightness change does not move the estimate."""
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(96, 128), mode="bicubic",
                                           align_corners=False)               # (1, 3, 96, 128)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 64), indexing="ij")
    grid = torch.stack([xs, ys], -1)[None] * 0.5                               # the centre half of base
    a = torch.nn.functional.grid_sample(base, grid, align_corners=True)[0].permute(1, 2, 0)     # (48, 64, 3)
    b = torch.nn.functional.grid_sample(base, grid * math.exp(-log_zoom), align_corners=True)[0].permute(1, 2, 0)
    assert fidelity.zoom_scale(a, b) == pytest.approx(log_zoom, abs=0.011)
    assert fidelity.zoom_scale(b, a) == pytest.approx(-log_zoom, abs=0.011)
    assert fidelity.zoom_scale(a, b * 0.6 + 0.2) == pytest.approx(log_zoom, abs=0.011)
    assert fidelity.motion("forward", a, b) == fidelity.zoom_scale(a, b)


@pytest.mark.parametrize("sign", [1, -1])
def test_oracle_zooms_in_when_the_camera_walks_forward(room, sign):
    """The forward check's convention, through the env's own pose integration (action dz = forward): walking
    forward grows the image about its centre, walking back shrinks it, and standing still reads exactly 0."""
    start, renderer, k = room
    delta = np.zeros(6)
    delta[2] = sign * 0.4
    c2w = np.stack([start, apply_local_delta(start, delta)])
    a, b = renderer.render(torch.from_numpy(c2w), k).rgb
    z = fidelity.zoom_scale(a, b)
    assert fidelity._sign(z) == fidelity.EXPECTED_SIGN["forward"] * sign and abs(z) >= 0.04, z
    assert fidelity.zoom_scale(a, a) == 0.0


def test_forward_episodes_walk_straight_through_free_space_and_back():
    frames, step = 13, 0.0625
    eps = fidelity.forward_episodes(2, 100000, frames, step)
    assert [(e["family"], e["sign"]) for e in eps.labels] == [("indoor", 1), ("indoor", -1), ("outdoor", 1),
                                                              ("outdoor", -1)]
    assert eps.c2w.shape == (4, frames, 4, 4)
    for i in (0, 2):
        fwd, back = eps.c2w[i], eps.c2w[i + 1]
        np.testing.assert_array_equal(back, fwd[::-1])
        moves = np.diff(fwd[:, :3, 3], axis=0)                                # (F-1, 3) metres per frame
        np.testing.assert_allclose(np.linalg.norm(moves, axis=1), step, rtol=1e-9)
        np.testing.assert_allclose(moves / step, np.broadcast_to(fwd[0, :3, 2], moves.shape), atol=1e-9)  # along +z
        np.testing.assert_array_equal(fwd[:, :3, :3], np.broadcast_to(fwd[0, :3, :3], (frames, 3, 3)))
        geom = fidelity.scene_and_geometry(eps.labels[i]["family"], eps.labels[i]["scene_seed"])[1]
        assert geom.is_free(fwd[:, :3, 3]).all()


def test_motion_ratio_is_the_signed_share_of_the_oracles_motion():
    rows = [{"model_shift": [-3, -2, 1], "oracle_shift": [-6, -4, 0]},        # the still oracle step is not counted
            {"model_shift": [0.02, -0.01], "oracle_shift": [0.05, 0.05]}]
    assert fidelity.motion_ratio(rows) == pytest.approx((3 + 2 + 0.02 - 0.01) / (6 + 4 + 0.1))
    assert fidelity.motion_ratio([{"model_shift": [1], "oracle_shift": [0]}]) is None


def test_main_end_to_end_on_micro(tmp_path):
    argv = ["--checkpoint", "micro", "--episodes", "2", "--steps", "4", "--direction-scenes", "1",
            "--direction-steps", "2", "--long-steps", "20", "--out", str(tmp_path)]
    res = fidelity.main(argv)
    saved = json.loads((tmp_path / "fidelity.json").read_text())
    for key in ("args", "device", "torch", "horizon", "direction", "long", "bars", "vae"):
        assert key in saved, key
    assert saved["args"]["checkpoint"] == "micro" and saved["device"] == "cpu"
    rows = saved["horizon"]["rows"]
    assert [r["horizon"] for r in rows] == [1, 4]                             # horizons capped at --steps
    assert saved["horizon"]["mean_gain_db"] == pytest.approx(rows[1]["psnr_gain_db"])
    for axis in ("yaw", "pitch", "forward"):
        d = saved["direction"][axis]
        assert d["counted"] > 0 and 0.0 <= d["agreement"] <= 1.0 and 0.0 <= d["vae_ceiling"] <= 1.0
        assert d["oracle_expected"] == 1.0                                     # the oracle moves as the convention says
        assert d["motion_ratio"] == fidelity.motion_ratio(d["rows"])
    assert saved["direction"]["forward"]["unit"] == "m"
    assert saved["direction"]["forward"]["per_frame"] == pytest.approx(1.0 / 16)
    long = saved["long"]
    assert long["frames"] == 20 * 4 and long["nan"] is False and long["std_ratio_min"] <= long["std_ratio_max"]
    assert [isinstance(b["pass"], bool) for b in saved["bars"]] == [True] * 5
    assert saved["bars"] == res["bars"]

    # The repeat-start baseline at horizon 1, recomputed with a fresh renderer per scene and evaluate.psnr.
    k = saved["frames_per_step"]
    hw = tuple(saved["frame_hw"])
    eps = fidelity.walk_episodes(2, 100000, 1 + 4 * k)
    assert [e["scene_seed"] for e in saved["horizon"]["episodes"]] == [100000, 100001]
    start, truth = _render_first_step(saved["horizon"]["episodes"], eps, k, hw)
    expected = psnr(start[:, None].expand_as(truth).contiguous(), truth)
    assert rows[0]["repeat_psnr"] == pytest.approx(expected, rel=1e-9)


def test_an_upscaler_beside_the_checkpoint_sets_the_scored_size_and_no_upscaler_drops_it(tmp_path):
    """A checkpoint with `<stem>_sr.safetensors` beside it is scored on the upscaled frames; --no-upscaler scores the
    model's own. The VAE's round trip (the direction ceiling) goes through the same upscaler."""
    from model.checkpoint import save_checkpoint
    from model.generator import micro_model
    from model.train.latents import save_vae
    from model.upscale import FrameUpscaler, UpscalerConfig, save_upscaler, upscaler_path

    model, vae = micro_model()
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    save_vae(vae, tmp_path / "m_vae.safetensors", "micro")
    save_upscaler(FrameUpscaler(UpscalerConfig(channels=4, blocks=1)), upscaler_path(ckpt))
    argv = ["--checkpoint", str(ckpt), "--episodes", "2", "--steps", "1", "--direction-scenes", "1",
            "--direction-steps", "1", "--long-steps", "1"]
    big = fidelity.main(argv + ["--out", str(tmp_path / "a")])
    small = fidelity.main(argv + ["--out", str(tmp_path / "b"), "--no-upscaler"])
    assert big["frame_hw"] == [64, 64] and big["model_hw"] == [32, 32] and big["horizon"]["score_hw"] == [64, 64]
    assert small["frame_hw"] == small["model_hw"] == [32, 32]
    gen = fidelity.load_generator(fidelity.parse_args(argv), 1)
    clip = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 5, 64, 64, 3), dtype=np.uint8))
    frames = fidelity.vae_round_trip(gen, clip)
    assert len(frames) == 5 and frames[0].shape == (1, 64, 64, 3)


def _render_first_step(labels, eps, k, hw):
    """Each episode's start frame (B, H, W, 3) and first step's K frames (B, K, H, W, 3), a fresh renderer each."""
    start, truth = [], []
    for e, label in enumerate(labels):
        r = Renderer(make_scene(label["family"], label["scene_seed"]), RenderConfig(*hw, supersample=2))
        rgb = r.render(torch.from_numpy(eps.c2w[e, :1 + k]), intrinsics_from_fov(hw[1], hw[0], 90.0)).rgb
        start.append(rgb[0])
        truth.append(rgb[1:])
    return torch.stack(start), torch.stack(truth)


def test_score_size_scores_resized_model_frames_against_a_larger_oracle(tmp_path):
    """--score-size 64 on the 32x32 micro model: the model starts from its own 32x32 view, its frames are upsampled,
    and both it and the repeat baseline are scored against the oracle rendered at 64x64."""
    argv = ["--checkpoint", "micro", "--episodes", "2", "--steps", "1", "--direction-scenes", "1",
            "--direction-steps", "1", "--long-steps", "1", "--score-size", "64", "--out", str(tmp_path)]
    saved = fidelity.main(argv)
    assert saved["frame_hw"] == [32, 32] and saved["horizon"]["score_hw"] == [64, 64]
    (row,) = saved["horizon"]["rows"]
    k = saved["frames_per_step"]
    eps = fidelity.walk_episodes(2, 100000, 1 + k)
    start64, truth64 = _render_first_step(saved["horizon"]["episodes"], eps, k, (64, 64))
    start32, _ = _render_first_step(saved["horizon"]["episodes"], eps, k, (32, 32))
    gen = fidelity.load_generator(fidelity.parse_args(argv), 2)
    frames, _ = next(fidelity.model_rollout(gen, start32.numpy(), eps.c2w, 100000, "test"))   # (2, K, 32, 32, 3)
    up = torch.from_numpy(fidelity.resize_rgb(frames.numpy(), (64, 64)))                     # (2, K, 64, 64, 3)
    assert row["model_psnr"] == pytest.approx(psnr(up, truth64), rel=1e-9)
    assert row["repeat_psnr"] == pytest.approx(psnr(start64[:, None].expand_as(truth64).contiguous(), truth64),
                                               rel=1e-9)
    with pytest.raises(SystemExit):
        fidelity.parse_args(["--score-size", "-1"])


def test_vae_psnr_is_read_from_json_or_metadata(tmp_path):
    """Recorded, never computed: vae.json's metrics first (at the frame size where measured), else the metadata."""
    from safetensors.torch import save_file

    dit = tmp_path / "dit.safetensors"
    assert fidelity.vae_heldout_psnr("micro") is None
    assert fidelity.vae_heldout_psnr(str(dit)) is None                        # no VAE beside it
    save_file({"w": torch.zeros(1)}, str(tmp_path / "vae.safetensors"), metadata={"psnr": "21.5"})
    assert fidelity.vae_heldout_psnr(str(dit))["psnr"] == 21.5
    (tmp_path / "vae.json").write_text(json.dumps({"metrics": {"psnr": 23.25}}))
    got = fidelity.vae_heldout_psnr(str(dit))
    assert got["psnr"] == 23.25 and got["source"].endswith("vae.json")
    # A measurement at the model's frame size comes first; other sizes fall back to the training one.
    (tmp_path / "vae.json").write_text(json.dumps({"metrics": {"psnr": 23.25},
                                                   "metrics_by_size": {"128x128": {"psnr": 25.5}}}))
    got = fidelity.vae_heldout_psnr(str(dit), (128, 128))
    assert got["psnr"] == 25.5 and got["source"].endswith("vae.json at 128x128")
    assert fidelity.vae_heldout_psnr(str(dit), (64, 64))["psnr"] == 23.25


def test_vae_ceiling_round_trips_the_whole_clip_and_keeps_the_shipped_vaes_yaw():
    """The ceiling is the VAE's encode + decode of the oracle's moving clip: one frame out per frame in, and the
    shipped VAE keeps a yaw turn's direction (measured 1.00 on 16 turns)."""
    gen = fidelity.load_generator(fidelity.parse_args([]), 2)
    hw, k = gen.frame_hw, gen.frames_per_step
    eps = fidelity.rotation_episodes("yaw", 1, 100000, 1 + 3 * k, 2.5)
    clip = torch.from_numpy(fidelity.Oracle(eps, hw).render(eps.c2w))          # (2, 1 + 3K, H, W, 3)
    frames = fidelity.vae_round_trip(gen, clip)
    assert len(frames) == clip.shape[1] and frames[0].shape == clip[:, 0].shape and frames[0].dtype == torch.uint8
    assert psnr(frames[5], clip[:, 5]) > 18.0                                  # a reconstruction, not noise
    rows = fidelity.direction_rows(eps, frames[::k], clip[:, ::k], "yaw")
    assert sum(r["counted"] for r in rows) == 6 and all(r["agree"] == r["counted"] for r in rows)
