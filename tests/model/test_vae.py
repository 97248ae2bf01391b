"""Causal video autoencoder: shapes, causality, streaming == full decode, cache contract, weights, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file

from model.vae import (
    LTX2VAE,
    CausalConv,
    CausalVAE,
    CausalVAEConfig,
    VAEDecoderCache,
    depth_to_space,
    space_to_depth,
    vae_config,
)

TOL = 1e-5


def _vae(name: str = "micro", seed: int = 0, config: CausalVAEConfig | None = None) -> CausalVAE:
    torch.manual_seed(seed)
    return CausalVAE(config or vae_config(name)).eval()


def _frames(b: int, f: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, f, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(b: int, c: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, t, h, w, generator=torch.Generator().manual_seed(seed))


def _stream(vae: CausalVAE, z: torch.Tensor, cache: VAEDecoderCache) -> torch.Tensor:
    """Decode z (B, C, T, h, w) one latent at a time from stream start; (B, 3, 1 + 4(T-1), H, W)."""
    return torch.cat([vae.decode_step(z[:, :, i:i + 1], cache, first=i == 0) for i in range(z.shape[2])], dim=2)


# -- shapes -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kernel_t", "kernel_s"), [(1, 1), (3, 1), (1, 3), (3, 3)])
def test_causal_conv_equals_a_left_padded_conv3d(kernel_t, kernel_s):
    """CausalConv's channels-last kernels (1x1 as a matmul, else one Conv2d over stacked taps) against the plain
    NCDHW Conv3d with the time axis zero-padded on the left, its weight unpacked from the taps-oldest-first layout."""
    torch.manual_seed(0)
    conv = CausalConv(5, 7, kernel_t, kernel_s)
    x = torch.randn(2, 4, 6, 8, 5)                                              # (B, T, H, W, C)
    w3 = conv.weight.unflatten(-1, (kernel_t, 5)).permute(0, 4, 3, 1, 2)        # (C_out, C_in, k_t, k_s, k_s)
    xp = F.pad(x.permute(0, 4, 1, 2, 3), (0, 0, 0, 0, kernel_t - 1, 0))         # (B, C, k_t - 1 + T, H, W)
    want = F.conv3d(xp, w3, conv.bias, padding=(0, kernel_s // 2, kernel_s // 2)).permute(0, 2, 3, 4, 1)
    with torch.no_grad():
        assert (conv(x) - want).abs().max() < TOL


@pytest.mark.parametrize(("ft", "fs", "c"), [(1, 2, 3), (2, 2, 32), (4, 2, 5), (1, 4, 2)])
def test_space_to_depth_equals_the_one_permute_reference(ft, fs, c):
    """The two-copy space-to-depth against einops' one-permute form: bit-equal, same (c ft fh fw) channel order
    (the trained weights read it), and depth_to_space inverts it."""
    x = torch.randn(2, 3 * ft, 4 * fs, 5 * fs, c)
    want = rearrange(x, "b (t ft) (h fh) (w fw) c -> b t h w (c ft fh fw)", ft=ft, fh=fs, fw=fs)
    got = space_to_depth(x, ft, fs)
    assert got.shape == (2, 3, 4, 5, c * ft * fs * fs)
    assert torch.equal(got, want)
    assert torch.equal(depth_to_space(got, ft, fs), x)


@pytest.mark.parametrize("f", [1, 5, 9])
def test_encode_decode_shapes(f):
    vae = _vae()
    x = _frames(2, f, 24, 40)
    with torch.no_grad():
        z = vae.encode(x)
        y = vae.decode(z)
    t_lat = 1 + (f - 1) // 4
    assert z.shape == (2, vae.latent_channels, t_lat, 3, 5)
    assert vae.latent_shape(f, 24, 40) == (vae.latent_channels, t_lat, 3, 5)
    assert y.shape == x.shape and vae.num_frames(t_lat) == f
    assert y.min() >= -1 and y.max() <= 1
    assert torch.isfinite(y).all()


def test_tiny_preset_shapes_and_factors():
    cfg = vae_config("tiny")
    assert (cfg.spatial_factor, cfg.temporal_factor, cfg.latent_channels) == (8, 4, 16)
    assert cfg.patch_size == 2                               # the stem enters at H/2: no full-resolution conv
    vae = _vae("tiny")
    with torch.no_grad():
        z = vae.encode(_frames(1, 5, 32, 48))
    assert z.shape == (1, 16, 2, 4, 6)


def test_forward_is_trainable():
    vae = CausalVAE(vae_config("micro"))
    x = _frames(1, 5, 16, 16)
    loss = (vae(x) - x).pow(2).mean()
    loss.backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


# -- causality --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [0, 1, 4, 5, 8])
def test_encoder_is_causal(frame):
    vae = _vae()
    x = _frames(1, 9, 16, 24)
    x2 = x.clone()
    x2[:, :, frame] = -x2[:, :, frame]
    with torch.no_grad():
        z, z2 = vae.encode(x), vae.encode(x2)
    owner = (frame + 3) // 4                                 # latent 0 <- frame 0; latent i <- frames 4i-3 .. 4i
    assert torch.equal(z[:, :, :owner], z2[:, :, :owner])    # latents of earlier frames only: bit-identical
    assert (z[:, :, owner] - z2[:, :, owner]).abs().max() > 1e-4


@pytest.mark.parametrize("latent", [0, 1, 2])
def test_decoder_is_causal(latent):
    vae = _vae()
    z = _latents(1, vae.latent_channels, 4, 2, 3)
    z2 = z.clone()
    z2[:, :, latent] += 1.0
    with torch.no_grad():
        y, y2 = vae.decode(z, clamp=False), vae.decode(z2, clamp=False)
    first = 0 if latent == 0 else 4 * latent - 3             # first output frame of this latent
    assert torch.equal(y[:, :, :first], y2[:, :, :first])
    assert (y[:, :, first:4 * latent + 1] - y2[:, :, first:4 * latent + 1]).abs().max() > 1e-4
    # ...and it reaches later latents' frames: the temporal context is real, so the cache below matters.
    assert (y[:, :, 4 * latent + 1:] - y2[:, :, 4 * latent + 1:]).abs().max() > 1e-6


# -- streaming decode -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_lat", [1, 2, 4])
def test_streaming_decode_matches_full_decode(t_lat):
    vae = _vae()
    z = _latents(2, vae.latent_channels, t_lat, 3, 5, seed=t_lat)
    with torch.no_grad():
        full = vae.decode(z)
    cache = vae.init_decoder_cache(2, 3, 5)
    streamed = _stream(vae, z, cache)
    assert streamed.shape == full.shape == (2, 3, 1 + 4 * (t_lat - 1), 24, 40)
    assert (streamed - full).abs().max() < TOL
    assert torch.equal(cache.step, torch.full((2,), t_lat))


def test_streaming_matches_full_for_other_layouts():
    """Spatial-only transitions, a temporal stem and wider temporal kernels take other code paths than the presets."""
    for cfg in [CausalVAEConfig(latent_channels=4, block_out_channels=(8, 16, 16, 16), blocks_per_level=(1, 0, 1, 1),
                                temporal_kernels=(2, 1, 3, 4), temporal_factor=4),
                CausalVAEConfig(latent_channels=4, block_out_channels=(8, 16), blocks_per_level=(1, 1),
                                temporal_kernels=(3, 3), temporal_factor=4)]:
        vae = _vae(config=cfg)
        assert cfg.patch_size_t > 1 or 1 in cfg.level_temporal_strides
        z = _latents(2, 4, 3, 2, 3)
        with torch.no_grad():
            full = vae.decode(z)
        assert (_stream(vae, z, vae.init_decoder_cache(2, 2, 3)) - full).abs().max() < TOL


@pytest.mark.parametrize("config", [
    vae_config("micro"), vae_config("tiny"),
    CausalVAEConfig(latent_channels=4, block_out_channels=(8, 16, 16, 16), blocks_per_level=(1, 0, 1, 1),
                    temporal_kernels=(2, 1, 3, 4), temporal_factor=4),               # temporal stem: a stem carry
    CausalVAEConfig(latent_channels=4, block_out_channels=(8, 16, 16), blocks_per_level=(1, 1, 2),
                    temporal_kernels=(3, 3, 2), temporal_factor=8)])                  # temporal convs everywhere
def test_encode_image_from_the_pad_prefix_equals_encode(config):
    """The fast image encode (stream one frame from the state after the pad frames, each temporal conv's constant
    past folded into its output) against the naive one (the whole padded clip), with the prefix given and computed;
    the prefix is not written."""
    vae = _vae(config=config)
    with torch.no_grad():
        for p in vae.parameters():   # away from init, so the pad frames' activations are far from zero
            p.add_(torch.randn_like(p) * 0.05)
        x = _frames(3, 1, 32, 48, seed=1)
        want = vae.encode(x)
        prefix = vae.image_prefix(32, 48)
        consts = lambda: [t.out for t in prefix.tails] + [t.weight for t in prefix.tails] + prefix.carries  # noqa: E731
        before = [t.clone() for t in consts()]
        assert (vae.encode_image(x, prefix) - want).abs().max() < TOL
        assert (vae.encode_image(x[1:2], prefix) - want[1:2]).abs().max() < TOL
        assert (vae.encode_image(x) - want).abs().max() < TOL
        assert all(torch.equal(a, b) for a, b in zip(before, consts()))
        assert (vae.encode_image(x, normalize=False) - vae.encode(x, normalize=False)).abs().max() < TOL
    with pytest.raises(ValueError, match="single frames"):
        vae.encode_image(_frames(1, 1 + config.temporal_factor, 32, 48))
    with pytest.raises(ValueError, match="prefix was made for 32x48 frames, got 48x32"):
        vae.encode_image(_frames(1, 1, 48, 32), prefix)


@pytest.mark.parametrize("config", [
    vae_config("micro"),
    CausalVAEConfig(latent_channels=4, block_out_channels=(8, 16, 16, 16), blocks_per_level=(1, 0, 1, 1),
                    temporal_kernels=(2, 1, 3, 4), temporal_factor=4),               # temporal stem: a stem carry
    CausalVAEConfig(latent_channels=4, block_out_channels=(8, 16, 16), blocks_per_level=(1, 1, 2),
                    temporal_kernels=(3, 3, 2), temporal_factor=8)])                  # temporal convs everywhere
def test_encode_clip_from_the_pad_prefix_equals_encode(config):
    """Clips streamed from the prefix's state after the pad frames (the skip's chunk targets) against `encode` of
    the padded clip; the prefix is not written, so a second call gives the same latents."""
    vae = _vae(config=config)
    tf = config.temporal_factor
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        x = _frames(3, 1 + 2 * tf, 32, 48, seed=2)
        want = vae.encode(x)
        prefix = vae.image_prefix(32, 48)
        before = [t.clone() for t in prefix.stream_tails + prefix.carries]
        assert (vae.encode_clip(x, prefix) - want).abs().max() < TOL
        assert (vae.encode_clip(x[:, :, :1 + tf], prefix) - want[:, :, :2]).abs().max() < TOL
        assert all(torch.equal(a, b) for a, b in zip(before, prefix.stream_tails + prefix.carries))
        assert (vae.encode_clip(x) - want).abs().max() < TOL
    with pytest.raises(ValueError, match="prefix was made for 32x48 frames, got 48x32"):
        vae.encode_clip(_frames(1, 1 + tf, 48, 32), prefix)


def test_first_step_without_flag_returns_pad_slots_then_frame_zero():
    vae = _vae()
    z = _latents(2, vae.latent_channels, 1, 3, 5)
    with torch.no_grad():
        full = vae.decode(z)
    out = vae.decode_step(z, vae.init_decoder_cache(2, 3, 5), first=False)
    assert out.shape == (2, 3, 4, 24, 40)
    assert (out[:, :, -1:] - full).abs().max() < TOL



@pytest.mark.slow
def test_decode_step_traces_as_one_graph():
    """No graph breaks means no host sync and no Python branching on tensor values: CUDA-graph material."""
    vae = _vae()
    z = _latents(2, vae.latent_channels, 3, 3, 5)
    with torch.no_grad():
        full = vae.decode(z)
    step = torch.compile(vae.decode_step, fullgraph=True, backend="eager")
    cache = vae.init_decoder_cache(2, 3, 5)
    outs = [step(z[:, :, :1], cache, first=True)] + [step(z[:, :, i:i + 1], cache) for i in (1, 2)]
    assert (torch.cat(outs, 2) - full).abs().max() < TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decode_step_cuda_graph_replay_matches_full_decode():
    vae = _vae().cuda()
    z = _latents(2, vae.latent_channels, 4, 3, 5).cuda()
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            full = vae.decode(z)
        cache = vae.init_decoder_cache(2, 3, 5)
        outs = [vae.decode_step(z[:, :, :1], cache, first=True)]
        static_z = z[:, :, 1:2].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):                       # warm-up on a copy of the cache
            warm = cache.clone()
            for _ in range(2):
                vae.decode_step(static_z, warm)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):                       # records only: the cache is not advanced here
            static_out = vae.decode_step(static_z, cache)
        for i in range(1, 4):
            static_z.copy_(z[:, :, i:i + 1])
            graph.replay()
            outs.append(static_out.clone())
        assert (torch.cat(outs, 2) - full).abs().max() < TOL
        assert cache.step.tolist() == [4, 4]                # 1 eager step + 3 replays; capture itself ran nothing
    finally:
        torch.backends.cudnn.allow_tf32 = tf32

def test_reset_one_row_leaves_other_rows_bit_identical():
    vae = _vae()
    za = _latents(2, vae.latent_channels, 5, 3, 5, seed=1)
    zb = _latents(2, vae.latent_channels, 3, 3, 5, seed=2)
    plain, reset = vae.init_decoder_cache(2, 3, 5), vae.init_decoder_cache(2, 3, 5)
    for i in range(2):
        assert torch.equal(vae.decode_step(za[:, :, i:i + 1], plain), vae.decode_step(za[:, :, i:i + 1], reset))
    reset.reset_(torch.tensor([False, True]))
    assert torch.equal(reset.step, torch.tensor([2, 0]))
    # Row 0 goes on with za; row 1 starts a new stream zb (in the reset run) or goes on with za (plain run).
    outs_plain, outs_reset = [], []
    for j in range(3):
        outs_plain.append(vae.decode_step(za[:, :, 2 + j:3 + j], plain))
        z_mixed = torch.cat([za[:1, :, 2 + j:3 + j], zb[1:, :, j:j + 1]])
        outs_reset.append(vae.decode_step(z_mixed, reset))
    outs_plain, outs_reset = torch.cat(outs_plain, 2), torch.cat(outs_reset, 2)
    assert torch.equal(outs_plain[0], outs_reset[0])
    # The reset row decodes exactly like a fresh stream: 3 pad slots, then frames 0 .. 8 of zb.
    with torch.no_grad():
        fresh = vae.decode(zb[1:])
    assert (outs_reset[1:, :, 3:] - fresh).abs().max() < TOL
    assert (outs_plain[1:, :, 3:] - fresh).abs().max() > 1e-3


def test_reset_rejects_bad_mask():
    cache = _vae().init_decoder_cache(2, 3, 5)
    with pytest.raises(ValueError, match=r"bool tensor of shape \(2,\)"):
        cache.reset_(torch.tensor([True]))
    with pytest.raises(ValueError, match="bool"):
        cache.reset_(torch.tensor([1, 0]))


def test_clone_is_independent_and_forks_the_stream():
    vae = _vae()
    z = _latents(2, vae.latent_channels, 4, 3, 5)
    cache = vae.init_decoder_cache(2, 3, 5)
    _stream(vae, z[:, :, :2], cache)
    fork = cache.clone()
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(cache.tails, fork.tails))
    snapshot = [t.clone() for t in fork.tails]
    out = vae.decode_step(z[:, :, 2:3], cache)
    assert all(torch.equal(a, b) for a, b in zip(fork.tails, snapshot))      # stepping the original left the fork
    assert any(not torch.equal(a, b) for a, b in zip(cache.tails, snapshot))  # ...though the original moved
    assert torch.equal(vae.decode_step(z[:, :, 2:3], fork), out)             # the fork continues identically


def test_cache_is_static_nbytes_and_storage():
    vae = _vae()
    z = _latents(2, vae.latent_channels, 4, 3, 5)
    cache = vae.init_decoder_cache(2, 3, 5)
    nbytes, ptrs = cache.nbytes(), [t.data_ptr() for t in [*cache.tails, cache.step]]
    assert nbytes > 0 and len(cache.tails) == len(vae.decoder.cache_spec) > 0
    _stream(vae, z, cache)
    assert cache.nbytes() == nbytes
    assert [t.data_ptr() for t in [*cache.tails, cache.step]] == ptrs     # written in place, never reallocated
    assert any(t.abs().sum() > 0 for t in cache.tails)


def test_select_and_copy():
    vae = _vae()
    z = _latents(3, vae.latent_channels, 3, 3, 5)
    cache = vae.init_decoder_cache(3, 3, 5)
    _stream(vae, z[:, :, :2], cache)
    sub = cache.select([2, 0])
    assert sub.batch_size == 2
    want = vae.decode_step(z[:, :, 2:3], cache.clone())
    assert torch.equal(vae.decode_step(z[[2, 0], :, 2:3], sub.clone()), want[[2, 0]])
    other = vae.init_decoder_cache(2, 3, 5).copy_(sub)
    assert all(torch.equal(a, b) for a, b in zip(other.tails, sub.tails))
    with pytest.raises(ValueError, match="batch 3"):
        cache.copy_(sub)


def test_decode_step_rejects_bad_shapes():
    vae = _vae()
    cache = vae.init_decoder_cache(2, 3, 5)
    for bad in [(2, vae.latent_channels, 2, 3, 5), (1, vae.latent_channels, 1, 3, 5), (2, 3, 1, 3, 5),
                (2, vae.latent_channels, 1, 4, 5)]:
        with pytest.raises(ValueError, match=r"expected z_t of shape \(2, 4, 1, 3, 5\)"):
            vae.decode_step(torch.zeros(bad), cache)


# -- latent normalisation, weights, presets ----------------------------------------------------------------------


def test_latent_normalisation_buffers():
    vae = _vae()
    x = _frames(4, 9, 16, 16)
    with torch.no_grad():
        raw = vae.encode(x, normalize=False) * 3 + 1.5
        vae.set_latent_stats_(raw)
        z = vae.normalize_latents(raw)
        torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.zeros(vae.latent_channels), atol=1e-5, rtol=0)
        torch.testing.assert_close(z.std(dim=(0, 2, 3, 4)), torch.ones(vae.latent_channels), atol=1e-4, rtol=0)
        vae.scaling_factor.fill_(0.5)
        torch.testing.assert_close(vae.normalize_latents(raw), 0.5 * z)
        torch.testing.assert_close(vae.denormalize_latents(vae.normalize_latents(raw)), raw, atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.decode(vae.normalize_latents(raw)), vae.decode(raw, normalized=False),
                                   atol=TOL, rtol=0)
    assert {"latents_mean", "latents_std", "scaling_factor"} <= set(vae.state_dict())


def test_safetensors_round_trip(tmp_path):
    vae = _vae(seed=3)
    vae.latents_mean.normal_()
    vae.latents_std.uniform_(0.5, 2.0)
    vae.scaling_factor.fill_(0.7)
    sd = vae.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    save_file(sd, str(tmp_path / "vae.safetensors"))
    loaded = _vae(seed=99)
    loaded.load_state_dict(load_file(str(tmp_path / "vae.safetensors")), strict=True)
    x = _frames(1, 5, 16, 24)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), vae.encode(x))
        assert torch.equal(loaded.decode(vae.encode(x)), vae.decode(vae.encode(x)))


def test_preset_parameter_counts():
    counts = {n: sum(p.numel() for p in CausalVAE(vae_config(n)).parameters()) for n in ("micro", "tiny")}
    print(f"\nCausalVAE parameters: {counts}")
    assert counts["micro"] < 100_000
    assert 1_000_000 < counts["tiny"] < 6_000_000            # a few M; <= 24 MB in fp32 of the 40 MB budget
    with pytest.raises(ValueError, match="unknown VAE preset 'huge'"):
        vae_config("huge")


def test_bad_config_raises():
    with pytest.raises(ValueError, match="power of two"):
        CausalVAEConfig(temporal_factor=3)
    with pytest.raises(ValueError, match="one entry per level"):
        CausalVAEConfig(blocks_per_level=(1, 1))
    with pytest.raises(ValueError, match="multiple of latent_channels"):
        CausalVAEConfig(latent_channels=48)


@pytest.mark.parametrize("shape, match", [
    ((1, 4, 5, 16, 16), "expected 3 channels"),
    ((1, 1, 5, 16, 16), "expected 3 channels"),
    ((1, 3, 4, 16, 16), r"expected F = 1 \+ 4k frames"),
    ((1, 3, 6, 16, 16), r"expected F = 1 \+ 4k frames"),
    ((1, 3, 5, 20, 16), "divisible by 8"),
    ((1, 3, 5, 16, 12), "divisible by 8"),
    ((3, 5, 16, 16), "expected frames of shape"),
])
def test_encode_rejects_bad_input(shape, match):
    with pytest.raises(ValueError, match=match):
        _vae().encode(torch.zeros(shape))


def test_decode_rejects_bad_latents():
    vae = _vae()
    with pytest.raises(ValueError, match=r"expected latents of shape \(B, 4, T, h, w\)"):
        vae.decode(torch.zeros(1, 5, 2, 3, 3))
    with pytest.raises(ValueError, match="expected latents"):
        vae.decode(torch.zeros(1, 4, 3, 3))


# -- LTX-2 wrapper ----------------------------------------------------------------------------------------------------


def test_ltx2_wrapper_local_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is needed for the LTX-2 wrapper")
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLLTX2Video(
        latent_channels=8, block_out_channels=(8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), spatial_compression_ratio=32,
        temporal_compression_ratio=8, scaling_factor=0.5).eval()
    ref.latents_mean.copy_(torch.linspace(-1, 1, 8))
    ref.latents_std.copy_(torch.linspace(0.5, 2, 8))
    ref.save_pretrained(tmp_path / "vae")
    vae = LTX2VAE.from_pretrained(tmp_path, subfolder="vae")
    assert (vae.spatial_factor, vae.temporal_factor, vae.latent_channels, vae.scaling_factor) == (32, 8, 8, 0.5)
    x = _frames(1, 9, 64, 96)
    with torch.no_grad():
        z = vae.encode(x)
        mode = ref.encode(x).latent_dist.mode()
        want = (mode - ref.latents_mean.view(1, -1, 1, 1, 1)) * 0.5 / ref.latents_std.view(1, -1, 1, 1, 1)
        assert z.shape == (1, 8, 2, 2, 3)
        torch.testing.assert_close(z, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vae.encode(x, normalize=False), mode, rtol=1e-5, atol=1e-5)
        y = vae.decode(z)
        assert y.shape == (1, 3, 9, 64, 96) and vae.num_frames(2) == 9
        torch.testing.assert_close(y, ref.decode(mode).sample.clamp(-1, 1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"1 \+ 8k"):
        vae.encode(_frames(1, 5, 64, 96))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        LTX2VAE.from_pretrained(tmp_path / "missing")
