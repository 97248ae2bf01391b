"""GLUMBConvTemp's token-layout fast paths against its own nn.Conv2d modules run the plain way."""

import torch
import torch.nn.functional as F

from model.layers import GLUMBConvTemp, PatchEmbed, depthwise3x3_taps


def _block(seed=0):
    torch.manual_seed(seed)
    m = GLUMBConvTemp(hidden=16, mlp_hidden=24)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)          # t_conv is zero at init; randomise it so every tap counts
    return m


def _conv_t(m, y, left=None):
    """Reference: t_conv as the Conv2d it is, over (B, C, T, S), with an optional left neighbour frame."""
    x = y.permute(0, 3, 1, 2)                                                  # (B, C, T, S)
    if left is None:
        return y + m.t_conv(x).permute(0, 2, 3, 1)
    x = torch.cat([left.permute(0, 3, 1, 2), x], 2)
    return y + F.conv2d(x, m.t_conv.weight, padding=(1, 0))[:, :, 1:].permute(0, 2, 3, 1)


def test_temporal_matches_the_conv_bidirectionally():
    m, y = _block(), torch.randn(2, 5, 6, 16)
    torch.testing.assert_close(m.temporal(y, None, None), _conv_t(m, y), rtol=1e-5, atol=1e-5)


def test_temporal_is_chunk_causal():
    """Each chunk sees the previous chunk's last frame on the left and zero past its own end."""
    m, y, tail = _block(1), torch.randn(2, 6, 6, 16), torch.randn(2, 1, 6, 16)
    out = m.temporal(y, [2, 1, 3], tail)
    ref, start, left = [], 0, tail
    for n in (2, 1, 3):
        piece = y[:, start:start + n]
        ref.append(_conv_t(m, piece, left))
        left, start = piece[:, -1:], start + n
    torch.testing.assert_close(out, torch.cat(ref, 1), rtol=1e-5, atol=1e-5)
    # a lone single-frame chunk (the streaming step at one latent per chunk): no right neighbour, tail on the left
    torch.testing.assert_close(m.temporal(y[:, :1], [1], tail), _conv_t(m, y[:, :1], tail), rtol=1e-5, atol=1e-5)


def test_spatial_matches_the_convs():
    m, frames, h, w = _block(2), 3, 4, 5
    x = torch.randn(2, frames * h * w, 16)
    img = x.view(2 * frames, h, w, 16).permute(0, 3, 1, 2)                     # (B*T, C, h, w)
    y = m.depth_conv(F.silu(m.inverted_conv(img)))
    a, g = y.chunk(2, dim=1)
    ref = m.point_conv(a * F.silu(g)).permute(0, 2, 3, 1).reshape(2, frames, h * w, 16)
    torch.testing.assert_close(m.spatial(x, frames, h, w), ref, rtol=1e-5, atol=1e-5)


def test_depthwise_taps_match_the_grouped_conv():
    """What `spatial` runs under torch.compile, against the conv it replaces: every tap, the zero border, and
    a grid that is not square; with and without a bias."""
    torch.manual_seed(3)
    x = torch.randn(3, 4, 5, 10)                                                  # (N, h, w, C)
    weight, bias = torch.randn(10, 1, 3, 3), torch.randn(10)
    for b in (bias, None):
        ref = F.conv2d(x.permute(0, 3, 1, 2), weight, b, padding=1, groups=10).permute(0, 2, 3, 1)
        torch.testing.assert_close(depthwise3x3_taps(x, weight, b), ref, rtol=1e-5, atol=1e-5)


def test_visible_projector_keeps_what_the_patch_embedding_sees():
    """64 values per patch (4 channels, 1x4x4) into 32 channels: half of each patch is invisible. The projector is
    symmetric and idempotent, of rank 32, and adding anything it removes leaves the embedding unchanged."""
    torch.manual_seed(0)
    emb = PatchEmbed((1, 4, 4), 4, 32).double()
    p = emb.visible_projector()
    assert p.shape == (64, 64) and torch.allclose(p, p.T) and torch.allclose(p @ p, p, atol=1e-12)
    assert round(float(p.trace())) == 32
    x, z = torch.randn(2, 4, 3, 8, 12, dtype=torch.float64), torch.randn(2, 4, 3, 8, 12, dtype=torch.float64)
    unseen = z - emb.project(z, p)                                        # (B, C, T, H, W)
    assert unseen.norm() > 0.5 * z.norm()
    assert torch.allclose(emb(x + unseen), emb(x), atol=1e-12)
    assert torch.allclose(emb.project(emb.project(x, p), p), emb.project(x, p), atol=1e-12)
    # The patch order: a change inside one patch stays inside that patch.
    one = torch.zeros_like(x)
    one[0, 2, 1, 4:8, 8:12] = torch.randn(4, 4, dtype=torch.float64)
    moved = emb.project(one, p)
    assert moved[0, :, 1, 4:8, 8:12].norm() > 0 and (moved.norm() - moved[0, :, 1, 4:8, 8:12].norm()).abs() < 1e-12
    # An embedding that sees whole patches (16 values, 32 channels) has nothing to project.
    assert PatchEmbed((1, 2, 2), 4, 32).visible_projector() is None
