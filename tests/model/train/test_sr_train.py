"""Upscaler trainer: pairs clips rendered at two sizes through the VAE, starts at the bilinear baseline, learns,
resumes, and writes an upscaler the generator loads."""

import json

import pytest
import torch

from model.generator import StreamingGenerator, micro_model
from model.train.common import read_csv
from model.train.data import load_index
from model.train.latents import load_vae, save_vae
from model.train.sr_train import Args, load_pairs, sample, train
from model.upscale import load_upscaler
from sanawm_env.scenes.export import ExportConfig, export_clips


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """The same 3 clips (scene seeds, poses) at 32x32 (micro's size) and at 64x64, and micro's VAE."""
    out = tmp_path_factory.mktemp("pairs")
    low, high = (str(export_clips(ExportConfig(out=str(out / f"s{size}"), clips=3, frames=9, size=size, seed=7,
                                               png=True, compile=False, supersample=1), progress=False))
                 for size in (32, 64))
    _, vae = micro_model()
    vae_path = save_vae(vae, out / "vae.safetensors", "micro")
    return low, high, str(vae_path)


def _args(pairs, out, **kw):
    low, high, vae = pairs
    base = dict(low=(low,), high=(high,), val_low=low, val_high=high, vae=vae, out=str(out), channels=8, blocks=1,
                steps=30, batch=8, crop=8, lr=3e-3, warmup=2, eval_every=15, ckpt_every=100, log_every=5,
                device="cpu", threads=1, progress=False)
    base.update(kw)
    return Args(**base)


def test_pairs_are_round_trips_beside_the_renders(pairs):
    low, high, vae_path = pairs
    x, y = load_pairs((low,), (high,), load_vae(vae_path))
    raw, _ = load_pairs((low,), (high,), None)
    assert x.shape == (27, 32, 32, 3) and y.shape == (27, 64, 64, 3) and x.dtype == torch.uint8
    assert not torch.equal(x, raw)                                   # the VAE's decode, not the render
    xb, yb = sample(x, y, 4, 8, torch.Generator().manual_seed(0))
    assert xb.shape == (4, 3, 1, 8, 8) and yb.shape == (4, 3, 1, 16, 16)
    big = x.repeat_interleave(2, 1).repeat_interleave(2, 2)           # targets that are the inputs, 2x nearest
    xb, yb = sample(x, big, 16, 8, torch.Generator().manual_seed(1))
    assert torch.equal(yb, xb.repeat_interleave(2, -1).repeat_interleave(2, -2))   # same region, same flip
    with pytest.raises(ValueError, match="same number"):
        load_pairs((low, low), (high,), None)
    with pytest.raises(ValueError, match="whole multiple"):
        load_pairs((low,), (low,), None)


def test_a_shorter_export_of_the_same_seed_pairs_its_clips(pairs, tmp_path):
    low, high, _ = pairs
    short = str(export_clips(ExportConfig(out=str(tmp_path / "short"), clips=2, frames=9, size=64, seed=7, png=True,
                                          compile=False, supersample=1), progress=False))
    x, y = load_pairs((low,), (short,), None)
    assert x.shape == (18, 32, 32, 3) and torch.equal(y, load_pairs((low,), (high,), None)[1][:18])
    other = str(export_clips(ExportConfig(out=str(tmp_path / "other"), clips=2, frames=9, size=64, seed=8,
                                          png=True, compile=False, supersample=1), progress=False))
    with pytest.raises(ValueError, match="poses"):
        load_pairs((low,), (other,), None)


def test_trains_from_bilinear_resumes_and_ships(pairs, tmp_path):
    out = tmp_path / "run"
    train(_args(pairs, out, steps=20, eval_every=10))
    ev = read_csv(out / "eval.csv")
    assert ev[0]["step"] == 0 and ev[0]["gain"] == 0.0               # untrained: exactly its bilinear part
    assert ev[-1]["step"] == 20 and ev[-1]["psnr_bilinear"] == ev[0]["psnr_bilinear"]
    assert ev[-1]["gain"] > 0.0, ev                                  # it learned something bilinear cannot
    rec = json.loads((out / "sr.json").read_text())
    assert rec["steps"] == 20 and rec["config"]["scale"] == 2
    train(_args(pairs, out, steps=30, eval_every=10, resume=True))
    assert json.loads((out / "sr.json").read_text())["steps"] == 30
    assert [r["step"] for r in read_csv(out / "train.csv")] == [5, 10, 15, 20, 25, 30]
    up = load_upscaler(out / "sr.safetensors")
    gen = StreamingGenerator(*micro_model(), upscaler=up)
    assert gen.frame_hw == (64, 64)


def test_rollout_inputs_are_the_world_models_frames_along_the_clips(pairs):
    """--rollout: frames 1 .. 1 + K * steps of micro driven from each clip's first frame along its poses, paired
    with the high renders of the same frames; the same as stepping the generator by hand."""
    low, high, _ = pairs
    gen = StreamingGenerator.from_pretrained("micro")
    x, y = load_pairs((low,), (high,), None, gen=gen, rollout_steps=1, batch=2)
    k = gen.frames_per_step
    assert x.shape == (3 * k, 32, 32, 3) and y.shape == (3 * k, 64, 64, 3)
    clips_lo, clips_hi = load_index(low), load_index(high)
    assert torch.equal(y[:k], torch.from_numpy(clips_hi[0].frames[1:1 + k]))
    c = clips_lo[2]                                        # the second batch's only clip, seed = its first index
    state = gen.reset(torch.from_numpy(c.frames[:1]), torch.from_numpy(c.intrinsics[:1]).float(), seed=2,
                      c2w0=torch.from_numpy(c.c2w[:1]))
    want = gen.step(state, torch.from_numpy(c.c2w[None, 1:1 + k]))[0]
    assert torch.equal(x[2 * k:], want)
    both, _ = load_pairs((low,), (high,), load_vae(pairs[2]), gen=gen, rollout_steps=1)
    assert len(both) == 27 + 3 * k                         # the round trips, then the rollouts


def test_round_trip_needs_a_vae(pairs, tmp_path):
    with pytest.raises(ValueError, match="--vae"):
        train(_args(pairs, tmp_path, vae=None))
