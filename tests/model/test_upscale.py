"""Frame upscaler: an untrained one is exactly bilinear, frames stay independent, files round-trip; and the
generator with an upscaler hands out larger frames while its world (latents, state) is the one without it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import CheckpointError, save_checkpoint
from model.generator import RecomputeGenerator, StreamingGenerator, micro_model
from model.train.latents import save_vae
from model.upscale import FrameUpscaler, UpscalerConfig, load_upscaler, save_upscaler, upscaler_path

SMALL = UpscalerConfig(channels=8, blocks=1)


def _trained(seed: int = 0, cfg: UpscalerConfig = SMALL) -> FrameUpscaler:
    """An upscaler whose residual is not zero (as after training)."""
    torch.manual_seed(seed)
    up = FrameUpscaler(cfg)
    with torch.no_grad():
        up.conv_out.weight.normal_(0, 0.05)
        up.conv_out.bias.normal_(0, 0.05)
    return up


def test_untrained_is_bilinear_and_trained_adds_a_residual():
    x = torch.rand(2, 3, 3, 16, 12) * 2 - 1
    want = F.interpolate(x.transpose(1, 2).reshape(6, 3, 16, 12), scale_factor=2, mode="bilinear",
                         align_corners=False).reshape(2, 3, 3, 32, 24).transpose(1, 2)
    assert torch.equal(FrameUpscaler(SMALL)(x), want)
    up = _trained()
    y = up(x)
    assert y.shape == (2, 3, 3, 32, 24) and (y - want).abs().max() > 1e-2


@pytest.mark.parametrize("scale", [2, 3])
def test_detail_only_keeps_the_bilinear_means_of_every_input_pixel(scale):
    """detail_only: over each input pixel's s x s output pixels the upscaler averages to its bilinear part; without
    it a trained residual moves those means (a colour shift)."""
    x = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    for detail_only in (True, False):
        up = _trained(cfg=UpscalerConfig(scale=scale, channels=8, blocks=1, detail_only=detail_only))
        y, base = up(x), up.base(x)
        moved = (F.avg_pool3d(y, (1, scale, scale)) - F.avg_pool3d(base, (1, scale, scale))).abs().max()
        assert (moved < 1e-6) == detail_only and (y - base).abs().max() > 1e-2


def test_frames_are_upscaled_independently():
    """No state between frames: changing one frame changes its output alone (the step carries nothing)."""
    up = _trained()
    x = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    x2 = x.clone()
    x2[:, :, 2] = 0.0
    a, b = up(x), up(x2)
    changed = [not torch.equal(a[:, :, t], b[:, :, t]) for t in range(4)]
    assert changed == [False, False, True, False]


@pytest.mark.parametrize("shape", [(1, 3, 2, 15, 16), (1, 4, 2, 16, 16), (3, 16, 16)])
def test_bad_frames_raise(shape):
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        FrameUpscaler(SMALL)(torch.zeros(shape))


def test_config_is_checked():
    with pytest.raises(ValueError, match="scale >= 2"):
        UpscalerConfig(scale=1)


def test_file_round_trip_and_wrong_kind(tmp_path):
    up = _trained(cfg=UpscalerConfig(scale=4, channels=4, blocks=2))
    path = save_upscaler(up, tmp_path / "x_sr.safetensors")
    back = load_upscaler(path)
    assert back.config == up.config
    x = torch.rand(1, 3, 1, 8, 8)
    assert torch.equal(back(x), up(x))
    model, _ = micro_model()
    save_checkpoint(model, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match="not a sanawm upscaler"):
        load_upscaler(tmp_path / "dit.safetensors")
    assert upscaler_path(tmp_path / "tiny_dit.safetensors").name == "tiny_sr.safetensors"
    assert upscaler_path("runs/a/cand.safetensors").name == "cand_sr.safetensors"


# ----------------------------------------------------------------------------------------------------------------------
# In the generator


def _poses(b: int, steps: int, k: int) -> list[torch.Tensor]:
    out, c = [], np.tile(np.eye(4), (b, 1, 1))
    for _ in range(steps):
        frames = []
        for _ in range(k):
            c = c.copy()
            c[:, 2, 3] += 0.05
            frames.append(c)
        out.append(torch.tensor(np.stack(frames, 1)))
    return out


@pytest.fixture(scope="module")
def small_first():
    return torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_generator_hands_out_upscaled_frames_of_the_same_world(small_first, space):
    """Same latents and state as without the upscaler, given first frames whose 2x2 means are the small ones;
    frames are the upscaler's output of the same decode (the recompute reference agrees)."""
    kw = {"warp_space": space}
    plain = StreamingGenerator(*micro_model(**kw), batch_size=2)
    up = _trained()
    big = StreamingGenerator(*micro_model(**kw), batch_size=2, upscaler=up)
    assert plain.frame_hw == (32, 32) and big.frame_hw == (64, 64) and big.model_hw == (32, 32)
    first_big = small_first.repeat_interleave(2, 1).repeat_interleave(2, 2)   # area-averages back to small_first
    k = torch.tensor([32.0, 32.0, 31.5, 31.5])
    sp = plain.reset(small_first, k / 2, seed=3)
    sb = big.reset(first_big, k, seed=3)
    ref = RecomputeGenerator(big)
    ref.reset(first_big, k, seed=3)
    frames = []
    for c2w in _poses(2, 3, big.frames_per_step):
        fp, lp = plain.step(sp, c2w, return_latents=True)
        fb, lb = big.step(sb, c2w, return_latents=True)
        assert torch.allclose(lp, lb, atol=1e-5) and torch.allclose(ref.step(c2w), lb, atol=1e-4)
        assert fp.shape == (2, 4, 32, 32, 3) and fb.shape == (2, 4, 64, 64, 3)
        frames.append(fb)
        assert torch.equal(2 * sp.intrinsics, sb.intrinsics)   # kept in the pixels of the frames handed out
        for x, y in zip(sp._all(), sb._all()):
            if x is not sp.intrinsics:
                assert torch.allclose(x.double(), y.double(), atol=1e-4)
    got, want = torch.cat(frames, 1).int(), ref.decode().int()
    assert got.shape == want.shape and (got - want).abs().max() <= 1


def test_traced_step_with_an_upscaler_matches_eager(small_first):
    eager = StreamingGenerator(*micro_model(), batch_size=2, upscaler=_trained())
    traced = StreamingGenerator(*micro_model(), batch_size=2, upscaler=_trained(), trace=True)
    first = small_first.repeat_interleave(2, 1).repeat_interleave(2, 2)
    se, st = eager.reset(first, seed=1), traced.reset(first, seed=1)
    for c2w in _poses(2, 3, eager.frames_per_step):
        a, b = eager.step(se, c2w), traced.step(st, c2w)
        assert a.shape == (2, 4, 64, 64, 3) and (a.int() - b.int()).abs().max() <= 1


@pytest.mark.gpu
def test_cuda_graph_with_an_upscaler_matches_eager_and_never_syncs(small_first):
    """The upscaler runs inside the captured step body: replayed, it matches eager, with no host synchronisation."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (run on the lent GPU machine)")
    eager = StreamingGenerator(*micro_model(), device="cuda", batch_size=2, upscaler=_trained())
    graphed = StreamingGenerator(*micro_model(), device="cuda", batch_size=2, upscaler=_trained(), graph=True)
    first = small_first.repeat_interleave(2, 1).repeat_interleave(2, 2)
    se, sg = eager.reset(first, seed=1), graphed.reset(first, seed=1)
    poses = _poses(2, 3, eager.frames_per_step)
    for c2w in poses[:2]:
        a, b = eager.step(se, c2w), graphed.step(sg, c2w)
        assert a.shape == (2, 4, 64, 64, 3) and (a.int() - b.int()).abs().float().mean() < 1.0
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = graphed.step(sg, poses[2])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert (eager.step(se, poses[2]).int() - out.int()).abs().float().mean() < 1.0


def test_first_frames_are_checked_at_the_upscaled_size(small_first):
    gen = StreamingGenerator(*micro_model(), batch_size=2, upscaler=_trained())
    with pytest.raises(ValueError, match=r"\(2, 64, 64, 3\)"):
        gen.reset(small_first)


def test_from_pretrained_loads_the_upscaler_beside_the_checkpoint(tmp_path):
    model, vae = micro_model()
    path = save_checkpoint(model, tmp_path / "cand.safetensors")
    save_vae(vae, tmp_path / "cand_vae.safetensors", "micro")
    assert StreamingGenerator.frame_hw_of(path) == (32, 32)
    assert StreamingGenerator.from_pretrained(path).upscaler is None
    save_upscaler(_trained(cfg=UpscalerConfig(scale=4, channels=4, blocks=1)), upscaler_path(path))
    assert StreamingGenerator.frame_hw_of(path) == (128, 128)
    gen = StreamingGenerator.from_pretrained(path)
    assert gen.frame_hw == (128, 128) and gen.upscaler.scale == 4
    assert StreamingGenerator.from_pretrained(path, upscaler=None).frame_hw == (32, 32)
