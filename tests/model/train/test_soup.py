"""Decoder soup: endpoints reproduce the inputs, the midpoint is the mean, only decoders may differ."""

import pytest
import torch

from model.train.latents import load_vae, save_vae
from model.train.soup import main, soup_decoder
from model.vae import CausalVAE, vae_config


def _pair():
    torch.manual_seed(0)
    base = CausalVAE(vae_config("micro"))
    tuned = CausalVAE(vae_config("micro"))
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in tuned.decoder.parameters():
            p.add_(torch.randn_like(p))
    return base, tuned


def test_endpoints_and_midpoint():
    base, tuned = _pair()
    a, b = base.state_dict(), tuned.state_dict()
    for alpha, want in ((0.0, a), (1.0, b)):
        got = soup_decoder(base, tuned, alpha).state_dict()
        assert all(torch.allclose(got[k], want[k]) for k in a)
    mid = soup_decoder(base, tuned, 0.5).state_dict()
    dec = [k for k in a if k.startswith("decoder.") and not torch.equal(a[k], b[k])]
    assert dec and all(torch.allclose(mid[k], (a[k] + b[k]) / 2) for k in dec)
    assert all(torch.equal(mid[k], a[k]) for k in a if not k.startswith("decoder."))
    # a blend decodes: finite frames of the right shape
    z = torch.randn(1, 4, 2, 4, 4)
    assert torch.isfinite(soup_decoder(base, tuned, 0.3).decode(z)).all()


def test_refuses_encoders_that_differ_and_bad_alpha():
    base, tuned = _pair()
    with pytest.raises(ValueError, match="alpha must be in"):
        soup_decoder(base, tuned, 1.5)
    with torch.no_grad():
        next(tuned.encoder.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="only decoders may differ"):
        soup_decoder(base, tuned, 0.5)


def test_cli_writes_a_loadable_vae(tmp_path):
    base, tuned = _pair()
    save_vae(base, tmp_path / "base.safetensors", "micro")
    save_vae(tuned, tmp_path / "tuned.safetensors", "micro")
    main(["--base", str(tmp_path / "base.safetensors"), "--tuned", str(tmp_path / "tuned.safetensors"),
          "--alpha", "0.25", "--out", str(tmp_path / "soup.safetensors")])
    got = load_vae(tmp_path / "soup.safetensors").state_dict()
    want = soup_decoder(base, tuned, 0.25).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
