"""VAE trainer: overfits a fixed batch, resumes bit-identically after SIGTERM, writes weights + stats + metrics."""

import json
import signal

import pytest
import torch

from model.train.common import Dist, load_state, read_csv, state_hash, step_generator
from model.train.latents import load_vae
from model.train.vae_train import Args, ClipStore, make_optimizer, recon_loss, train, train_step
from model.vae import CausalVAE, vae_config
from sanawm_env.scenes.export import ExportConfig, export_clips


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    return str(export_clips(ExportConfig(out=str(out), clips=4, frames=9, size=32, seed=3, png=True,
                                         compile=False, supersample=1), progress=False))


def _args(index, out, **kw):
    base = dict(data=index, val=index, out=str(out), preset="micro", steps=6, batch=2, size=32, frames=(1, 5, 9),
                lr=2e-3, warmup=2, eval_every=3, eval_clips=2, eval_frames=9, stats_windows=4, ckpt_every=100,
                log_every=1, device="cpu", threads=1, progress=False)
    base.update(kw)
    return Args(**base)


def test_recon_loss_zero_on_identity_and_sees_edges():
    x = torch.rand(1, 3, 1, 8, 8) * 2 - 1
    assert float(recon_loss(x, x)[0]) == 0.0
    shifted = x + 0.1                                                 # same edges: only L1 moves
    _, parts = recon_loss(shifted, x)
    assert parts["grad"] == pytest.approx(0.0, abs=1e-6) and parts["l1"] == pytest.approx(0.1, abs=1e-6)


def test_overfits_a_fixed_batch(index):
    store = ClipStore.from_index(index)
    x = store.sample(2, (5,), 32, step_generator(0, 0))
    assert x.shape == (2, 3, 5, 32, 32) and -1 <= float(x.min()) and float(x.max()) <= 1
    torch.manual_seed(0)
    vae = CausalVAE(vae_config("micro"))
    args = _args(index, "unused", lr=3e-3)
    opt = make_optimizer(vae, args)
    losses = [train_step(vae, opt, x, args, Dist(), torch.device("cpu"))["loss"] for _ in range(30)]
    assert losses[-1] < 0.6 * losses[0], losses


def test_sampling_is_a_function_of_the_step(index):
    store = ClipStore.from_index(index)
    a = store.sample(3, (1, 5, 9), 16, step_generator(0, 7))
    b = store.sample(3, (1, 5, 9), 16, step_generator(0, 7))
    assert torch.equal(a, b) and a.shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="lower --frames"):
        store.sample(1, (13,), 16, step_generator(0, 0))


def test_resume_after_sigterm_is_bit_identical(index, tmp_path):
    full = train(_args(index, tmp_path / "full"))
    ref = load_state(full / "last.pt")

    def stop_at_3(step):
        if step == 3:
            signal.raise_signal(signal.SIGTERM)

    part = train(_args(index, tmp_path / "part"), on_step=stop_at_3)
    mid = load_state(part / "last.pt")
    assert mid["step"] == 3 and not (part / "vae.safetensors").exists()
    train(_args(index, tmp_path / "part", resume=True))
    got = load_state(part / "last.pt")
    assert got["step"] == ref["step"] == 6
    assert state_hash(got["model"]) == state_hash(ref["model"])
    for s_ref, s_got in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert all(torch.equal(s_ref[k], s_got[k]) for k in s_ref)
    # The logs of the resumed run read like the uninterrupted one's.
    assert [r["step"] for r in read_csv(part / "train.csv")] == [1, 2, 3, 4, 5, 6]
    assert read_csv(part / "train.csv")[-1]["loss"] == read_csv(full / "train.csv")[-1]["loss"]
    with pytest.raises(ValueError, match="different arguments"):
        train(_args(index, tmp_path / "part", resume=True, size=16))


def test_final_weights_stats_and_metrics(index, tmp_path):
    out = train(_args(index, tmp_path / "run", steps=4))
    meta = json.loads((out / "vae.json").read_text())
    assert meta["preset"] == "micro" and meta["steps"] == 4 and meta["metrics"]["psnr"] > 5
    assert [r["step"] for r in read_csv(out / "eval.csv")] == [3, 4]
    vae = load_vae(out / "vae.safetensors")                           # preset from the file's metadata
    assert torch.equal(vae.latents_mean, torch.tensor(meta["latents_mean"]))
    assert not torch.equal(vae.latents_std, torch.ones(4))            # fitted, not the defaults
    # The fitted statistics normalise training latents to about zero mean, unit variance per channel.
    x = ClipStore.from_index(index).sample(4, (9,), 32, step_generator(0, -1), hflip=False)
    z = vae.encode(x).detach()
    assert z.mean(dim=(0, 2, 3, 4)).abs().max() < 0.5 and (z.std(dim=(0, 2, 3, 4)) - 1).abs().max() < 0.5


def test_time_term_sees_a_frame_that_did_not_move():
    x = torch.rand(1, 3, 5, 8, 8) * 2 - 1
    frozen = x[:, :, :1].expand_as(x).clone()                         # the first frame held: motion erased
    offset = x + 0.1                                                  # every frame off by the same amount
    assert recon_loss(offset, x)[1]["time"] == pytest.approx(0.0, abs=1e-6)
    assert recon_loss(frozen, x)[1]["time"] > 0.1
    assert recon_loss(x[:, :, :1], x[:, :, :1])[1]["time"] == 0.0     # one frame: no difference to take
    # The weight adds exactly weight x the term to the loss.
    base, parts = recon_loss(frozen, x)
    assert float(recon_loss(frozen, x, time_weight=2.0)[0]) == pytest.approx(float(base) + 2.0 * parts["time"])


def test_decoder_fine_tune_keeps_the_encoder_and_its_latent_statistics(index, tmp_path):
    first = train(_args(index, tmp_path / "a", steps=3, eval_every=0))
    with pytest.raises(ValueError, match="needs --init"):
        train(_args(index, tmp_path / "bad", freeze_encoder=True))
    out = train(_args(index, tmp_path / "b", steps=3, eval_every=0, init=str(first / "vae.safetensors"),
                      freeze_encoder=True, time_weight=1.0))
    before, after = load_vae(first / "vae.safetensors"), load_vae(out / "vae.safetensors")
    a, b = before.state_dict(), after.state_dict()
    enc = [k for k in a if k.startswith("encoder.")]
    dec = [k for k in a if k.startswith("decoder.")]
    assert enc and all(torch.equal(a[k], b[k]) for k in enc)
    assert torch.equal(a["latents_mean"], b["latents_mean"]) and torch.equal(a["latents_std"], b["latents_std"])
    assert any(not torch.equal(a[k], b[k]) for k in dec)
    assert "time" in read_csv(out / "train.csv")[-1]
