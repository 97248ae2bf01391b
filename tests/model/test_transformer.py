"""The hybrid DiT: published size and layout, parity with diffusers' independent implementation, time layouts."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model.camera import camera_conditions, plucker_maps
from model.config import WorldModelConfig, get_config
from model.transformer import build_model

FIXTURE = Path(__file__).parent / "fixtures" / "sana_wm_1600m_720p_keys.json"

# Our checkpoint names (the NVlabs ones) -> diffusers' SanaWMTransformer3DModel names. Everything else is
# identical; diffusers has no `pos_embed` (vestigial) and no `y_embedder.y_embedding` (null caption) buffer.
TO_DIFFUSERS = {"t_embedder.mlp.0.": "t_embedder.linear_1.", "t_embedder.mlp.2.": "t_embedder.linear_2."}
NOT_IN_DIFFUSERS = {"pos_embed", "y_embedder.y_embedding"}


def to_ours(key: str) -> str:
    for ours, theirs in TO_DIFFUSERS.items():
        key = key.replace(theirs, ours)
    return key


def test_published_preset_has_exactly_the_published_parameter_count():
    model = build_model(get_config("sana-wm-1600m-720p"), device="meta")
    assert model.num_parameters() == 2_661_800_448


def test_published_preset_state_dict_matches_the_872_key_layout():
    expected = json.loads(FIXTURE.read_text())["keys"]
    ours = {k: list(v.shape) for k, v in build_model(get_config("sana-wm-1600m-720p"), device="meta")
            .state_dict().items()}
    assert len(expected) == 872
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    softmax = sorted({int(k.split(".")[1]) for k in ours if k.startswith("blocks.") and "conv_k" not in k}
                     - {int(k.split(".")[1]) for k in ours if k.endswith("attn.conv_k.weight")})
    assert softmax == [3, 7, 11, 15, 19]


def _camera(cfg: WorldModelConfig, b: int, t: int, g: torch.Generator, turn: float = 0.6):
    """A moving, turning camera: (camera_conditions [B, T, 20], plucker [B, 6s, T, h, w])."""
    s = cfg.vae_temporal
    n = 1 + s * (t - 1)
    lh, lw = cfg.latent_hw
    ang = torch.linspace(0, turn, n)
    c2w = torch.eye(4).repeat(b, n, 1, 1)
    c2w[:, :, 0, 0], c2w[:, :, 0, 2] = torch.cos(ang), torch.sin(ang)
    c2w[:, :, 2, 0], c2w[:, :, 2, 2] = -torch.sin(ang), torch.cos(ang)
    c2w[:, :, :3, 3] = torch.randn(b, 1, 3, generator=g) * 0.1 + torch.linspace(0, 1, n)[None, :, None]
    k = torch.tensor([lw * 0.8, lw * 0.8, (lw - 1) / 2, (lh - 1) / 2]).repeat(b, n, 1)
    return camera_conditions(c2w, k, s), plucker_maps(c2w, k, lh, lw, s)


@pytest.fixture(params=[(1, 1, 1), (1, 2, 2)], ids=["patch1", "patch2"])
def parity_pair(request):
    """Our model and diffusers' on the same tiny random configuration, every parameter randomised."""
    diffusers = pytest.importorskip("diffusers")
    patch = request.param
    cfg = WorldModelConfig(name="parity", in_channels=8, hidden_size=224, depth=4, num_heads=2, patch_size=patch,
                           caption_channels=32, caption_len=6, height=128, width=192, vae_spatial=16,
                           vae_temporal=8, cam_post_renorm=True, cam_sdpa_pad=True, softmax_bf16=True)
    ref = diffusers.SanaWMTransformer3DModel(
        in_channels=8, num_layers=4, hidden_size=224, num_attention_heads=2, linear_head_dim=112, patch_size=patch,
        caption_channels=32, chunk_plucker_channels=48, chunk_plucker_post_attn_blocks=4).eval()
    ours = build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Randomise everything, including what is zero at init (camera output, Plücker, t_conv, gates).
        for p in ref.parameters():
            fan = p.shape[1] if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / fan**0.5 if p.dim() > 1 else 0.3))
        missing, unexpected = ours.load_state_dict({to_ours(k): v for k, v in ref.state_dict().items()}, strict=False)
    assert sorted(missing) == sorted(NOT_IN_DIFFUSERS) and unexpected == []
    return cfg, ours, ref, g


def _inputs(cfg, g, b=2, t=3):
    lh, lw = cfg.latent_hw
    x = torch.randn(b, cfg.in_channels, t, lh, lw, generator=g)
    ts = torch.tensor([[0.0, 400.0, 950.0], [0.0, 0.0, 120.0]])[:b, :t]
    cc, pl = _camera(cfg, b, t, g)
    cap = torch.randn(b, 6, cfg.caption_channels, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])[:b]
    return x, ts, cc, pl, cap, mask


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_bidirectional_forward_matches_diffusers(parity_pair):
    cfg, ours, ref, g = parity_pair
    x, ts, cc, pl, cap, mask = _inputs(cfg, g)
    with torch.no_grad():
        expect = ref(x, ts[:, None], cap[:, None], encoder_attention_mask=mask, camera_conditions=cc,
                     chunk_plucker=pl, return_dict=False)[0]
        got = ours(x, ts, cc, pl, cap, mask)
        # Every input matters: a different camera, caption mask or timestep changes the output far beyond tolerance.
        cc2, pl2 = _camera(cfg, 2, 3, torch.Generator().manual_seed(9), turn=-0.4)  # another relative motion
        moved = ours(x, ts, cc2, pl2, cap, mask)
        unmasked = ours(x, ts, cc, pl, cap, torch.ones_like(mask))
        later = ours(x, ts + 30, cc, pl, cap, mask)
    assert got.shape == expect.shape == x.shape
    assert _rel(got, expect) < 1e-4
    for other in (moved, unmasked, later):
        assert _rel(other, expect) > 1e-3  # three orders above the parity error


def test_camera_renorm_flag_is_the_documented_difference(parity_pair):
    """diffusers applies the post-UCPE renorm; without it the camera branch (and so the output) differs, by far
    more than the parity error (~1e-6)."""
    cfg, ours, ref, g = parity_pair
    x, ts, cc, pl, cap, mask = _inputs(cfg, g)
    with torch.no_grad():
        expect = ref(x, ts[:, None], cap[:, None], encoder_attention_mask=mask, camera_conditions=cc,
                     chunk_plucker=pl, return_dict=False)[0]
        ours.cfg = replace(ours.cfg, cam_post_renorm=False)
        for blk in ours.blocks:
            blk.attn.cfg = ours.cfg
        plain = ours(x, ts, cc, pl, cap, mask)
    assert _rel(plain, expect) > 1e-4


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    cfg = get_config("micro")
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return cfg, model


def test_chunk_causal_with_one_chunk_equals_bidirectional(micro):
    cfg, model = micro
    x, ts, cc, pl, cap, mask = _inputs(cfg, torch.Generator().manual_seed(1), t=3)
    with torch.no_grad():
        assert _rel(model(x, ts, cc, pl, chunks=[3]), model(x, ts, cc, pl)) < 1e-5


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1], [1, 3], [2, 2]])
def test_chunk_causal_never_looks_ahead(micro, chunks):
    cfg, model = micro
    g = torch.Generator().manual_seed(2)
    lh, lw = cfg.latent_hw
    x = torch.randn(1, cfg.in_channels, 4, lh, lw, generator=g)
    ts = torch.tensor([[0.0, 300.0, 600.0, 900.0]])
    cc, pl = _camera(cfg, 1, 4, g)
    last_start = sum(chunks[:-1])
    with torch.no_grad():
        base = model(x, ts, cc, pl, chunks=chunks)
        x2 = x.clone()
        x2[:, :, last_start:] += 1.0
        cc2 = cc.clone()
        cc2[:, last_start:, 3] += 0.5   # move the camera of the last chunk
        pl2 = pl.clone()
        pl2[:, :, last_start:] += 0.5
        ts2 = ts.clone()
        ts2[:, last_start:] = 10.0
        changed = model(x2, ts2, cc2, pl2, chunks=chunks)
    assert torch.equal(changed[:, :, :last_start], base[:, :, :last_start])
    assert (changed[:, :, last_start:] - base[:, :, last_start:]).abs().max() > 1e-2


def test_bidirectional_sees_the_future(micro):
    cfg, model = micro
    g = torch.Generator().manual_seed(3)
    x, ts, cc, pl, _, _ = _inputs(cfg, g, t=3)
    with torch.no_grad():
        base = model(x, ts, cc, pl)
        x2 = x.clone()
        x2[:, :, 2] += 1.0
        assert (model(x2, ts, cc, pl)[:, :, 0] - base[:, :, 0]).abs().max() > 1e-3


def test_training_init_starts_the_camera_branch_silent():
    model = build_model(get_config("micro"))
    for blk in model.blocks:
        assert torch.count_nonzero(blk.attn.out_proj_cam.weight) == 0
        assert torch.count_nonzero(blk.plucker_proj.weight) == 0
        assert torch.count_nonzero(blk.mlp.t_conv.weight) == 0
    assert torch.count_nonzero(model.final_layer.linear.weight) == 0


def test_gradients_reach_every_parameter(micro):
    cfg, model = micro
    model.train()
    x, ts, cc, pl, cap, mask = _inputs(cfg, torch.Generator().manual_seed(4), t=3)
    model.zero_grad()
    model(x, ts, cc, pl, cap, mask, chunks=[1, 2]).square().mean().backward()
    softmax_gates = ("attn.beta_proj", "attn.gate_proj", "attn.A_log", "attn.dt_bias")

    def unused(name: str) -> bool:  # in the checkpoint but not in the computation
        if name.startswith("raymap_embedder."):
            return True
        return name.startswith("blocks.") and cfg.is_softmax(int(name.split(".")[1])) and \
            any(s in name for s in softmax_gates)

    dead = [n for n, p in model.named_parameters() if (p.grad is None or p.grad.abs().sum() == 0) and not unused(n)]
    model.eval()
    assert dead == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latents": torch.zeros(1, 8, 2, 5, 4)}, "latents"),
        ({"timestep": torch.zeros(1, 3)}, "timestep"),
        ({"chunks": [1, 2]}, "chunks"),
    ],
)
def test_bad_inputs_raise(micro, kwargs, match):
    cfg, model = micro
    lh, lw = cfg.latent_hw
    args = {"latents": torch.zeros(1, cfg.in_channels, 2, lh, lw), "timestep": torch.zeros(1, 2)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        model(**args)
