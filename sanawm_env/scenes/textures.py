"""Procedural textures baked into a per-scene atlas, plus the sky and fog.

Every material is a periodic tile of (size_u, size_v) metres. `tile_albedo` draws it procedurally on
the unit square with integer repeat counts, so the tile is seamless; `bake_atlas` evaluates it once
per scene at TEX x TEX texels (2x2 supersampled), and the renderer only does a bilinear lookup per
pixel. That keeps shading to a few gathers, instead of every pattern at every pixel.

Hashing is integer-only (no `sin` hashing), so patterns are identical on CPU and GPU.
"""

from __future__ import annotations

import math

import torch

from .scene import (
    BRICK,
    CHECKER,
    MAT_N,
    MAT_P1,
    MAT_P2,
    MAT_PATTERN,
    MAT_RGB1,
    MAT_RGB2,
    NOISE,
    ROAD,
    SKY_FOG_DENSITY,
    SKY_FOG_RGB,
    SKY_HORIZON,
    SKY_SUN_DIR,
    SKY_SUN_RGB,
    SKY_ZENITH,
    SOLID,
    STRIPES,
    TILES,
    WINDOWS,
    WOOD,
)

TEX = 128  # texels per tile side
_MASK = (1 << 24) - 1


def hash2(i: torch.Tensor, j: torch.Tensor, salt: torch.Tensor | int = 0) -> torch.Tensor:
    """Integer lattice hash -> float in [0, 1). Inputs are int64; products stay below 2**62."""
    h = ((i & 0xFFFFF) * 73856093) ^ ((j & 0xFFFFF) * 19349663) ^ ((salt & 0xFFFF) * 83492791)
    h = h & _MASK
    h = (h * 0x2C1B3C6D) & 0x3FFFFFFF
    h = h ^ (h >> 15)
    h = (h * 0x297A2D39) & 0x3FFFFFFF
    h = h ^ (h >> 12)
    return (h & _MASK).float() / float(_MASK + 1)


def periodic_noise(s: torch.Tensor, t: torch.Tensor, freq: torch.Tensor, salt: torch.Tensor | int = 0):
    """Smooth value noise on the unit tile with `freq` lattice cells per side, wrapping seamlessly."""
    x, y = s * freq, t * freq
    xi, yi = torch.floor(x), torch.floor(y)
    fx, fy = x - xi, y - yi
    f = freq.long()
    xi, yi = xi.long() % f, yi.long() % f
    x1, y1 = (xi + 1) % f, (yi + 1) % f
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = hash2(xi, yi, salt), hash2(x1, yi, salt)
    c, d = hash2(xi, y1, salt), hash2(x1, y1, salt)
    top = a + (b - a) * sx
    return top + (c + (d - c) * sx - top) * sy


def _mix(c1: torch.Tensor, c2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return c1 + (c2 - c1) * w.unsqueeze(-1)


def _frac(x: torch.Tensor) -> torch.Tensor:
    return x - torch.floor(x)


def _pattern_inputs(s, t, mat, salt):
    n = mat[:, MAT_N].round().clamp_min(1)
    return mat[:, MAT_RGB1], mat[:, MAT_RGB2], n, mat[:, MAT_P1], mat[:, MAT_P2], s * n, t * n


def _fine(s, t, salt):
    return periodic_noise(s, t, torch.full_like(s, 32.0), salt)


def _coarse(s, t, salt):
    return periodic_noise(s, t, torch.full_like(s, 4.0), salt + 7)


def _solid(s, t, mat, salt):
    rgb1 = mat[:, MAT_RGB1]
    return rgb1 * (0.9 + 0.1 * _fine(s, t, salt)).unsqueeze(-1)


def _checker(s, t, mat, salt):
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    checker = ((torch.floor(sn) + torch.floor(tn)).long() & 1).float()
    return _mix(rgb1, rgb2, checker) * (0.9 + 0.1 * _fine(s, t, salt)).unsqueeze(-1)


def _stripes(s, t, mat, salt):
    """p1 > 0.5: horizontal stripes (varying along t); p2: duty cycle."""
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    coord = torch.where(p1 > 0.5, tn, sn)
    return _mix(rgb1, rgb2, (_frac(coord) < p2).float()) * (0.9 + 0.1 * _fine(s, t, salt)).unsqueeze(-1)


def _brick(s, t, mat, salt):
    """n rows (even), n/2 bricks per row, odd rows offset by half a brick; mortar fraction p1."""
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    tint = (0.9 + 0.1 * _fine(s, t, salt)).unsqueeze(-1)
    row = torch.floor(tn)
    bu = sn * 0.5 + 0.5 * (row.long() & 1).float()
    per_row = (n * 0.5).long().clamp_min(1)
    brick_id = hash2(torch.floor(bu).long() % per_row, row.long(), salt)
    mortar = (_frac(tn) < p1) | (_frac(bu) < p1 * 0.5)
    return torch.where(mortar.unsqueeze(-1), rgb2 * tint, rgb1 * (0.8 + 0.35 * brick_id).unsqueeze(-1) * tint)


def _noise(s, t, mat, salt):
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    ns = periodic_noise(s, t, n * 2, salt + 3)
    return _mix(rgb1, rgb2, 0.6 * ns + 0.4 * _fine(s, t, salt)) * (0.85 + 0.3 * _coarse(s, t, salt)).unsqueeze(-1)


def _wood(s, t, mat, salt):
    """n planks across s; grain rings along t with an integer count, so the tile wraps."""
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    plank = torch.floor(sn).long()
    plank_h = hash2(plank % n.long(), torch.zeros_like(plank), salt)
    ns = periodic_noise(s, t, n * 2, salt + 3)
    grain = 0.5 + 0.5 * torch.sin(2.0 * math.pi * (3.0 * t + plank_h + 0.3 * ns))
    seam = (_frac(sn) < 0.04) | (_frac(2.0 * t + plank_h) < 0.012)
    out = _mix(rgb1, rgb2, grain * 0.6) * (0.85 + 0.3 * plank_h).unsqueeze(-1)
    return torch.where(seam.unsqueeze(-1), out * 0.55, out)


def _windows(s, t, mat, salt):
    """Facade: n windows across, p1 floors up; p2 = fraction of lit windows."""
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    wv = t * p1.round().clamp_min(1)
    win_h = hash2(torch.floor(sn).long() % n.long(), torch.floor(wv).long(), salt)
    fu, fv = _frac(sn), _frac(wv)
    in_win = (fu > 0.22) & (fu < 0.78) & (fv > 0.3) & (fv < 0.82)
    frame = (fu > 0.18) & (fu < 0.82) & (fv > 0.26) & (fv < 0.86)
    lit_rgb = torch.tensor([0.95, 0.82, 0.5], device=s.device).expand_as(rgb1)
    dark_rgb = torch.tensor([0.12, 0.17, 0.27], device=s.device) * (0.7 + 0.6 * win_h).unsqueeze(-1)
    glass = torch.where((win_h < p2).unsqueeze(-1), lit_rgb, dark_rgb)
    wall = rgb1 * (0.8 + 0.3 * _coarse(s, t, salt) + 0.1 * _fine(s, t, salt)).unsqueeze(-1)
    return torch.where(in_win.unsqueeze(-1), glass, torch.where(frame.unsqueeze(-1), rgb2, wall))


def _road(s, t, mat, salt):
    """Asphalt; p1 = 1 draws a dash along s centred in t, p1 = 2 along t centred in s."""
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    along = torch.where(p1 > 1.5, s, t)
    lengthwise = torch.where(p1 > 1.5, t, s)
    mark = (p1 > 0.5) & ((along - 0.5).abs() < 0.06) & (lengthwise < 0.5)
    asphalt = rgb1 * (0.75 + 0.25 * _fine(s, t, salt) + 0.2 * _coarse(s, t, salt)).unsqueeze(-1)
    return torch.where(mark.unsqueeze(-1), rgb2.expand_as(asphalt), asphalt)


def _tiles(s, t, mat, salt):
    """n x n tiles with grout fraction p1 and a slight per-tile variation."""
    rgb1, rgb2, n, p1, p2, sn, tn = _pattern_inputs(s, t, mat, salt)
    tile_h = hash2(torch.floor(sn).long(), torch.floor(tn).long(), salt)
    grout = (_frac(sn) < p1) | (_frac(tn) < p1)
    rgb = _mix(rgb1, rgb1 * 0.85, tile_h) * (0.9 + 0.1 * _fine(s, t, salt)).unsqueeze(-1)
    return torch.where(grout.unsqueeze(-1), rgb2.expand_as(rgb), rgb)


PATTERNS = {SOLID: _solid, CHECKER: _checker, STRIPES: _stripes, BRICK: _brick, NOISE: _noise, WOOD: _wood,
            WINDOWS: _windows, ROAD: _road, TILES: _tiles}


def tile_albedo(s: torch.Tensor, t: torch.Tensor, mat: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
    """Colour of N points of the unit tile, each pattern evaluated only where it is used.

    s, t: [N] in [0, 1); mat: [N, MAT_WIDTH] material rows; salt: [N] int64 (varies hashes per material).
    Returns [N, 3] in [0, 1]. Repeat counts are integers, so every pattern wraps at the tile edge.
    """
    out = torch.zeros(s.shape[0], 3, device=s.device)
    pattern = mat[:, MAT_PATTERN].round().long()
    for pid, fn in PATTERNS.items():
        idx = (pattern == pid).nonzero().squeeze(1)
        if idx.numel():
            out[idx] = fn(s[idx], t[idx], mat[idx], salt[idx])
    return out.clamp(0.0, 1.0)


def bake_atlas(materials: torch.Tensor, tex: int = TEX, salt_offset: int = 0) -> torch.Tensor:
    """(M, MAT_WIDTH) -> (M, tex, tex, 3) uint8: each material's tile, averaged over 2x2 samples per texel."""
    m = materials.shape[0]
    k = 2 * tex
    g = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    t, s = torch.meshgrid(g, g, indexing="ij")                         # (k, k): t along rows (v)
    s = s.reshape(1, -1).expand(m, -1).reshape(-1)
    t = t.reshape(1, -1).expand(m, -1).reshape(-1)
    ids = torch.arange(m).repeat_interleave(k * k)
    rgb = tile_albedo(s, t, materials[ids], ids + salt_offset)        # (M*k*k, 3)
    rgb = rgb.view(m, tex, 2, tex, 2, 3).mean(dim=(2, 4))             # (M, tex, tex, 3)
    return (rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)


def sample_atlas(atlas: torch.Tensor, mat_id: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                 size: torch.Tensor) -> torch.Tensor:
    """Bilinear, wrapping lookup. atlas: [M*TEX*TEX, 3] uint8 rows; u, v: [N] metres; size: [N, 2] tile metres.

    Returns [N, 3] float in [0, 1].
    """
    x = (u / size[:, 0] * TEX - 0.5).clamp(-1e7, 1e7)  # keep huge grazing-ray coordinates castable
    y = (v / size[:, 1] * TEX - 0.5).clamp(-1e7, 1e7)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    x0, y0 = x0.long() % TEX, y0.long() % TEX
    x1, y1 = (x0 + 1) % TEX, (y0 + 1) % TEX
    base = mat_id * (TEX * TEX)
    c00 = atlas[base + y0 * TEX + x0].float()
    c01 = atlas[base + y0 * TEX + x1].float()
    c10 = atlas[base + y1 * TEX + x0].float()
    c11 = atlas[base + y1 * TEX + x1].float()
    top = c00 + (c01 - c00) * fx
    bot = c10 + (c11 - c10) * fx
    return (top + (bot - top) * fy) * (1.0 / 255.0)


def sky_color(d: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """Gradient sky with a sun disc and glow. d: [N, 3] unit ray directions (world); sky: [N, SKY_WIDTH]."""
    up = (-d[:, 1]).clamp(0.0, 1.0)  # world up is -y
    base = _mix(sky[:, SKY_HORIZON], sky[:, SKY_ZENITH], up.sqrt())
    cos_sun = (d * sky[:, SKY_SUN_DIR]).sum(-1).clamp_min(0.0)
    glow = cos_sun.pow(48) * 0.5 + (cos_sun > 0.9993).float()
    return (base + sky[:, SKY_SUN_RGB] * glow.unsqueeze(-1)).clamp(0.0, 1.0)


def apply_fog(rgb: torch.Tensor, dist: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """Exponential distance fog toward the sky's fog colour; density 0 leaves colours unchanged."""
    w = 1.0 - torch.exp(-sky[:, SKY_FOG_DENSITY] * dist)
    return _mix(rgb, sky[:, SKY_FOG_RGB], w)
