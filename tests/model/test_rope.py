"""3-D RoPE tables: direct cos/sin reference, absolute frame offsets, inverse, relative property, diffusers parity."""

from __future__ import annotations

import math

import pytest
import torch

from model.rope import apply_rope, cam_rope_freqs, rope_axis_sizes, rope_freqs, rotate_pairs


def _direct_table(head_dim: int, frames: int, height: int, width: int, frame_offset: int = 0) -> torch.Tensor:
    """Per-token loop in Python floats: [t(f), h(r), w(c)] with per-axis 1/1e4^(2i/d_axis)."""
    hw_real = 2 * (head_dim // 6)
    dims = (head_dim - 2 * hw_real, hw_real, hw_real)
    rows = []
    for f in range(frames):
        for r in range(height):
            for c in range(width):
                row = []
                for dim, pos in zip(dims, (f + frame_offset, r, c)):
                    for i in range(dim // 2):
                        a = pos / 1e4 ** (2 * i / dim)
                        row.append(complex(math.cos(a), math.sin(a)))
                rows.append(row)
    return torch.tensor(rows, dtype=torch.complex128)


@pytest.mark.parametrize(
    "head_dim,grid,offset",
    [(112, (2, 3, 5), 0), (10, (3, 1, 4), 7), (14, (1, 5, 2), 0), (22, (4, 3, 3), 2), (2, (2, 2, 2), 0)],
)
def test_matches_direct_cos_sin(head_dim, grid, offset):
    ref = _direct_table(head_dim, *grid, frame_offset=offset)
    ours = rope_freqs(head_dim, *grid, frame_offset=offset, dtype=torch.complex128)
    assert ours.shape == (grid[0] * grid[1] * grid[2], head_dim // 2)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    ours32 = rope_freqs(head_dim, *grid, frame_offset=offset)
    assert ours32.dtype == torch.complex64
    torch.testing.assert_close(ours32.to(torch.complex128), ref, atol=1e-6, rtol=0)


def test_axis_split_generalises_like_published():
    assert rope_axis_sizes(112) == (20, 18, 18)
    assert rope_axis_sizes(64) == (12, 10, 10)
    assert rope_axis_sizes(10) == (3, 1, 1)


def test_frame_offset_equals_slicing_a_longer_table():
    full = rope_freqs(22, 9, 3, 4)
    per_frame = 3 * 4
    for offset, frames in [(0, 2), (3, 4), (8, 1)]:
        chunk = rope_freqs(22, frames, 3, 4, frame_offset=offset)
        torch.testing.assert_close(chunk, full[offset * per_frame : (offset + frames) * per_frame], atol=0, rtol=0)
    cam_full = cam_rope_freqs(112, 9, 2, 3)
    cam_chunk = cam_rope_freqs(112, 3, 2, 3, frame_offset=5)
    torch.testing.assert_close(cam_chunk, cam_full[5 * 6 : 8 * 6], atol=0, rtol=0)


def test_apply_is_interleaved_pair_rotation_and_inverse_undoes_it():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 10, generator=g)
    freqs = rope_freqs(10, 2, 2, 3)  # N = 12
    out = apply_rope(x, freqs)
    cos, sin = freqs.real, freqs.imag  # [N, 5]
    even, odd = x[..., 0::2], x[..., 1::2]
    torch.testing.assert_close(out[..., 0::2], even * cos - odd * sin, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[..., 1::2], even * sin + odd * cos, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(apply_rope(out, freqs, inverse=True), x, atol=1e-6, rtol=1e-6)
    assert (out - x).abs().max() > 0.1  # it does rotate


@pytest.mark.parametrize("inverse", [False, True])
def test_real_rotation_for_compile_matches_the_complex_product(inverse):
    """`rotate_pairs` (what apply_rope runs under torch.compile) against apply_rope's complex product, with a
    per-world table broadcast over heads as the streaming step uses it; and apply_rope compiled end to end."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 12, 10, generator=g)
    freqs = torch.polar(torch.ones(2, 1, 12, 5), torch.randn(2, 1, 12, 5, generator=g))   # [B, 1, N, D/2]
    f = freqs.conj().resolve_conj() if inverse else freqs
    torch.testing.assert_close(rotate_pairs(x, torch.view_as_real(f)), apply_rope(x, freqs, inverse),
                               atol=1e-6, rtol=1e-6)
    compiled = torch.compile(apply_rope, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, freqs, inverse), apply_rope(x, freqs, inverse), atol=1e-6, rtol=1e-6)


def test_apply_keeps_dtype():
    x = torch.randn(1, 6, 8, dtype=torch.bfloat16)
    out = apply_rope(x, rope_freqs(8, 1, 2, 3))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


def test_relative_property_per_axis():
    """<rope(q, a), rope(k, b)> depends only on a - b along each axis."""
    head_dim, grid = 22, (6, 5, 7)
    freqs = rope_freqs(head_dim, *grid, dtype=torch.complex128)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, head_dim, generator=g, dtype=torch.float64)

    def logit(a, b):
        ia = (a[0] * grid[1] + a[1]) * grid[2] + a[2]
        ib = (b[0] * grid[1] + b[1]) * grid[2] + b[2]
        qa = apply_rope(q[None], freqs[ia : ia + 1])[0]
        kb = apply_rope(k[None], freqs[ib : ib + 1])[0]
        return float(qa @ kb)

    base = logit((1, 0, 2), (3, 1, 0))
    for shift in [(2, 0, 0), (0, 3, 0), (0, 0, 4), (1, 2, 3)]:
        a = tuple(x + s for x, s in zip((1, 0, 2), shift))
        b = tuple(x + s for x, s in zip((3, 1, 0), shift))
        assert logit(a, b) == pytest.approx(base, abs=1e-10)
    for changed in [(2, 1, 0), (3, 2, 0), (3, 1, 1)]:  # a different offset on one axis changes the logit
        assert abs(logit((1, 0, 2), changed) - base) > 1e-3


def test_cam_table_is_leading_slice_of_each_axis():
    full = rope_freqs(112, 2, 3, 4)
    cam = cam_rope_freqs(112, 2, 3, 4)
    assert cam.shape == (24, 28)
    expected = torch.cat([full[:, 0:10], full[:, 20:29], full[:, 38:47]], dim=-1)  # first 10 t, 9 h, 9 w
    torch.testing.assert_close(cam, expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: rope_freqs(7, 1, 1, 1), "head_dim"),
        (lambda: rope_freqs(8, 0, 1, 1), "frames"),
        (lambda: rope_freqs(8, 1, 1, 2.0), "width"),
        (lambda: cam_rope_freqs(12, 1, 1, 1), "multiple of 8"),
        (lambda: apply_rope(torch.zeros(3, 8), rope_freqs(8, 1, 1, 2)), r"\[N, D//2\]"),
        (lambda: apply_rope(torch.zeros(2, 7), rope_freqs(8, 1, 1, 2)), "even"),
        (lambda: apply_rope(torch.zeros(2, 8), torch.zeros(2, 4)), "complex"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture(scope="module")
def dsana():
    try:
        from diffusers.models.transformers import transformer_sana_wm
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"diffusers SANA-WM not importable ({type(e).__name__}: {e}); parity needs diffusers==0.42.1")
    return transformer_sana_wm


@pytest.mark.parametrize("grid", [(3, 5, 7), (4, 22, 40)])
def test_matches_diffusers(dsana, grid):
    head_dim = 112
    emb = dsana.SanaWMRotaryPosEmbed(head_dim, (1, 1, 1), max_seq_len=1024)
    ref = emb(grid)  # (1, 1, N, 56) complex64, fp32 angles
    ours = rope_freqs(head_dim, *grid)
    assert ref.shape[-2:] == ours.shape
    err = (ref[0, 0] - ours).abs().max().item()
    assert err < 1e-5, err  # diffusers builds its angles in fp32, we in fp64
    ref_cam = dsana._slice_rope_for_cam(ref, head_dim, head_dim // 2)[0, 0]
    cam_err = (ref_cam - cam_rope_freqs(head_dim, *grid)).abs().max().item()
    assert cam_err < 1e-5, cam_err
    # the application: diffusers' (B, H, D, N) interleaved rotation
    x = torch.randn(2, 3, ours.shape[0], head_dim)
    ref_x = dsana._apply_rotary_emb(x.transpose(-1, -2), ref).transpose(-1, -2)
    torch.testing.assert_close(apply_rope(x, ours), ref_x, atol=2e-5, rtol=1e-5)
