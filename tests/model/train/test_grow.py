"""model.train.grow: a DiT carried to larger frames at the same token grid."""

import torch

from model.camera import camera_conditions, plucker_maps
from model.config import get_config
from model.train.grow import fit_maps, grow, grown_config, lstsq, patches
from model.transformer import build_model
from model.vae import CausalVAE, vae_config


def _pool_maps(c: int, p: int, k: int) -> dict:
    """Exact maps between a latent and its k x k nearest-upsampled copy: A averages, B repeats."""
    small = torch.arange(c * p * p, dtype=torch.float64).reshape(1, c, p, p)
    big = small.repeat_interleave(k, 2).repeat_interleave(k, 3)                     # (1, c, pk, pk) of indices
    src, dst = patches(big, p * k)[0].long(), torch.arange(c * p * p)
    b = torch.zeros(c * (p * k) ** 2, c * p * p, dtype=torch.float64)
    b[torch.arange(len(src)), src] = 1.0                                          # big[i] = small[src[i]]
    a = b.T / (k * k)                                                              # small = mean of its copies
    assert torch.equal(patches(small, p)[0].long(), dst)
    zero = torch.zeros
    return {"A": a, "a": zero(c * p * p, dtype=torch.float64), "B": b, "b": zero(len(src), dtype=torch.float64)}


def _up(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.repeat_interleave(k, -2).repeat_interleave(k, -1)


def test_grown_model_on_upsampled_inputs_is_the_upsampled_small_model():
    """With exact pooling/repeat maps, the grown model is the small one at k x k blocks: this pins the patch
    orders of the embeddings and the output layer, the spread Plücker and mask channels, and the camera branch's
    geometry (latent intrinsics double, the token grid stays)."""
    g = torch.Generator().manual_seed(0)
    cfg = get_config("micro")
    small = build_model(cfg)
    with torch.no_grad():
        for p in small.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    k = 2
    big = grow(small, cfg.height * k, _pool_maps(cfg.in_channels, cfg.patch_size[1], k), name="micro-big")
    assert big.cfg.patch_size == (1, 4, 4) and big.cfg.token_hw == cfg.token_hw and big.cfg.name == "micro-big"
    b, t = 2, 3
    s = cfg.vae_temporal
    n = 1 + s * (t - 1)
    lh, lw = cfg.latent_hw
    ang = torch.linspace(0, 0.5, n)
    c2w = torch.eye(4).repeat(b, n, 1, 1)
    c2w[:, :, 0, 0], c2w[:, :, 0, 2] = torch.cos(ang), torch.sin(ang)
    c2w[:, :, 2, 0], c2w[:, :, 2, 2] = -torch.sin(ang), torch.cos(ang)
    c2w[:, :, 2, 3] = torch.linspace(0, 0.05, n)
    k_small = torch.tensor([lw * 0.8, lw * 0.8, lw / 2, lh / 2]).repeat(b, n, 1)
    x = torch.randn(b, cfg.in_channels, t, lh, lw, generator=g)
    warp = torch.randn(b, small.warp_channels, t, lh, lw, generator=g)
    warp[:, cfg.in_channels::cfg.in_channels + 1] = torch.rand(b, 2, t, lh, lw, generator=g)   # validity masks
    ts = torch.tensor([[0.0, 1000.0, 1000.0], [0.0, 0.0, 750.0]])
    with torch.no_grad():
        ref = small(x, ts, camera_conditions(c2w, k_small, s), plucker_maps(c2w, k_small, lh, lw, s),
                    chunks=[1, 1, 1], warp=warp)
        got = big(_up(x, k), ts, camera_conditions(c2w, k_small * k, s),
                  _up(plucker_maps(c2w, k_small, lh, lw, s), k), chunks=[1, 1, 1], warp=_up(warp, k))
    assert got.shape == (b, cfg.in_channels, t, lh * k, lw * k)
    assert ((got - _up(ref, k)).norm() / ref.norm() / k).item() < 1e-5     # fp32 round-off; a wrong order is O(1)
    assert (ref[:, :, 1:] - ref[:, :, :1]).abs().max() > 1e-2   # the output is not trivially constant


def test_lstsq_recovers_a_linear_map_and_fit_maps_reports_residuals():
    g = torch.Generator().manual_seed(1)
    m, m0 = torch.randn(5, 8, generator=g), torch.randn(5, generator=g)
    x = torch.randn(400, 8, generator=g)
    fm, f0 = lstsq(x, x @ m.T + m0, ridge=1e-9)
    torch.testing.assert_close(fm.float(), m, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(f0.float(), m0, atol=1e-4, rtol=1e-4)
    vae = CausalVAE(vae_config("micro")).eval()
    frames = torch.rand(6, 3, 64, 64, generator=g) * 2 - 1
    maps = fit_maps(vae, frames, k=2, p=2, ridge=1e-3)
    assert maps["A"].shape == (4 * 2 * 2, 4 * 4 * 4) and maps["B"].shape == (4 * 4 * 4, 4 * 2 * 2)
    assert maps["pairs"] == 6 * 4 and 0.0 <= maps["residual_A"] < 1.0 and 0.0 <= maps["residual_B"] < 1.0


def test_grown_config_keeps_the_token_grid_and_refuses_other_sizes():
    cfg = get_config("tiny64")
    big = grown_config(cfg, 128, "tiny128")
    assert big.token_hw == cfg.token_hw
    assert big == get_config("tiny128")      # the preset a grown tiny64 fine-tunes under
    assert big.patch_size == (1, 4, 4) and (big.height, big.width) == (128, 128)
    for bad in (96, 100):
        try:
            grown_config(cfg, bad)
        except ValueError as e:
            assert "multiple" in str(e)
        else:
            raise AssertionError(f"size {bad} accepted")
