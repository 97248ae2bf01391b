"""3-D rotary position tables with absolute frame offsets (§3.3 of the architecture notes).

- One complex frequency table per token, concatenated per axis as [t(frame), h(row), w(col)]; tokens in (t, h, w)
  raster order, t slowest. The split follows the published model and diffusers for any even head dim:
  h = w = 2 * (head_dim // 6) real dims, t gets the rest (112 -> 40/36/36 real, 20/18/18 complex).
- Each axis uses the standard 1-D table 1 / theta^(2i / d_axis) over its own sub-dimension.
- Frame positions are absolute (`frame_offset`): a streaming chunk gets exactly the rows a longer table would give
  it, so cached keys keep their own positions.
- Angles are computed in float64 and the table is cast to the requested complex dtype (complex64 by default).
  diffusers builds its table in float32; the two agree to about 1e-6 at small positions.
- Application rotates interleaved pairs (channels 2i, 2i+1 form one complex number), in at least float32.
- The camera branch uses a reduced table on half the head dim (`cam_rope_freqs`): from the full table, the first
  t/h/w frequencies of each axis as if the head dim were head_dim // 2 (112 -> first 10 t, 9 h, 9 w).
"""

from __future__ import annotations

import torch

__all__ = ["rope_axis_sizes", "rope_freqs", "cam_rope_freqs", "rope_at", "apply_rope"]


def rope_axis_sizes(head_dim: int) -> tuple[int, int, int]:
    """Complex frequencies per axis (t, h, w) for a head dim; they sum to head_dim // 2."""
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even int, got {head_dim!r}")
    hw = head_dim // 6  # complex; 2 * (head_dim // 6) real dims per spatial axis
    return head_dim // 2 - 2 * hw, hw, hw


def _axis_angles(n_complex: int, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """[P] positions -> [P, n_complex] float64 angles of one axis (real sub-dim 2 * n_complex)."""
    dim = 2 * n_complex
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)  # [n]
    return positions.to(torch.float64)[:, None] * inv[None, :]


def _check_grid(frames: int, height: int, width: int, frame_offset: int) -> None:
    for name, v in (("frames", frames), ("height", height), ("width", width)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not isinstance(frame_offset, int):
        raise ValueError(f"frame_offset must be an int, got {frame_offset!r}")


def _grid_table(
    axes: tuple[tuple[int, int], ...],
    frames: int,
    height: int,
    width: int,
    frame_offset: int,
    theta: float,
    device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Per-token [t, h, w] table -> [F*H*W, sum(keep)].

    axes: per axis (n_full, n_keep): the axis table has real sub-dim 2 * n_full and we keep its first n_keep
    frequencies (n_keep == n_full for the full table).
    """
    positions = (
        torch.arange(frame_offset, frame_offset + frames, device=device),  # absolute frames
        torch.arange(height, device=device),
        torch.arange(width, device=device),
    )
    ang_t, ang_h, ang_w = (_axis_angles(n_full, pos, theta)[:, :keep] for (n_full, keep), pos in zip(axes, positions))
    nt, nh, nw = (keep for _, keep in axes)
    ang = torch.cat(
        [
            ang_t[:, None, None, :].expand(frames, height, width, nt),  # [F, H, W, nt]
            ang_h[None, :, None, :].expand(frames, height, width, nh),
            ang_w[None, None, :, :].expand(frames, height, width, nw),
        ],
        dim=-1,
    ).reshape(frames * height * width, nt + nh + nw)  # [N, n]
    return torch.polar(torch.ones_like(ang), ang).to(dtype)


def rope_freqs(
    head_dim: int,
    frames: int,
    height: int,
    width: int,
    frame_offset: int = 0,
    theta: float = 1e4,
    device=None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Full 3-D table -> [frames*height*width, head_dim // 2] complex, frames at frame_offset + 0..frames-1."""
    _check_grid(frames, height, width, frame_offset)
    axes = tuple((n, n) for n in rope_axis_sizes(head_dim))
    return _grid_table(axes, frames, height, width, frame_offset, theta, device, dtype)


def cam_rope_freqs(
    head_dim: int,
    frames: int,
    height: int,
    width: int,
    frame_offset: int = 0,
    theta: float = 1e4,
    device=None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Reduced camera-branch table -> [N, head_dim // 4] complex, for the second half of the head dim.

    Why: diffusers (`_slice_rope_for_cam`) takes the leading frequencies of each axis of the full head_dim table,
    with per-axis counts as if the head dim were head_dim // 2. A leading slice keeps its axis' own
    1/theta^(2i/d_axis) spacing, so this is not the table of a smaller head dim.
    """
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 8:
        raise ValueError(f"camera head_dim must be a positive multiple of 8 (4x4 groups on half), got {head_dim!r}")
    _check_grid(frames, height, width, frame_offset)
    full = rope_axis_sizes(head_dim)
    keep = rope_axis_sizes(head_dim // 2)
    if any(k > f for k, f in zip(keep, full)):
        raise ValueError(f"reduced axis sizes {keep} exceed the full table's {full} for head_dim {head_dim}")
    return _grid_table(tuple(zip(full, keep)), frames, height, width, frame_offset, theta, device, dtype)


def rope_at(head_dim: int, frame_pos: torch.Tensor, height: int, width: int, cam: bool = False,
            theta: float = 1e4, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Tables for arbitrary per-world frame positions: frame_pos [B, F] -> [B, F*height*width, n] complex.

    The same rows `rope_freqs` (cam=False, n = head_dim // 2) or `cam_rope_freqs` (cam=True, n = head_dim // 4)
    give for those frames; positions are device tensors, so streaming needs no host sync to build them.
    """
    full = rope_axis_sizes(head_dim)
    keep = rope_axis_sizes(head_dim // 2) if cam else full
    b, f = frame_pos.shape
    dev = frame_pos.device
    ang_t = _axis_angles(full[0], frame_pos.reshape(-1), theta)[:, : keep[0]].view(b, f, 1, 1, keep[0])
    ang_h = _axis_angles(full[1], torch.arange(height, device=dev), theta)[:, : keep[1]].view(1, 1, height, 1, -1)
    ang_w = _axis_angles(full[2], torch.arange(width, device=dev), theta)[:, : keep[2]].view(1, 1, 1, width, -1)
    ang = torch.cat([ang_t.expand(b, f, height, width, -1), ang_h.expand(b, f, height, width, -1),
                     ang_w.expand(b, f, height, width, -1)], dim=-1)                  # [B, F, H, W, n]
    ang = ang.reshape(b, f * height * width, -1)
    return torch.polar(torch.ones_like(ang), ang).to(dtype)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate interleaved channel pairs of x [..., N, D] by freqs [N, D // 2] (conjugate if inverse).

    Computed in float32 (float64 if x or freqs is double) and cast back to x's dtype, as diffusers does.
    """
    if x.ndim < 2:
        raise ValueError(f"x must be [..., N, D], got shape {tuple(x.shape)}")
    n, d = x.shape[-2:]
    if d % 2:
        raise ValueError(f"x head dim must be even for pair rotation, got D={d}")
    if not freqs.is_complex():
        raise ValueError(f"freqs must be a complex table, got dtype {freqs.dtype}")
    if tuple(freqs.shape[-2:]) != (n, d // 2):
        raise ValueError(f"freqs must end in [N, D//2] = [{n}, {d // 2}], got shape {tuple(freqs.shape)}")
    double = x.dtype == torch.float64 or freqs.dtype == torch.complex128
    work, cdtype = (torch.float64, torch.complex128) if double else (torch.float32, torch.complex64)
    f = freqs.to(device=x.device, dtype=cdtype)
    if inverse:
        f = f.conj()
    if torch.compiler.is_compiling():   # inductor makes no code for complex ops: the same product in reals
        return rotate_pairs(x.to(work), torch.view_as_real(f.resolve_conj())).to(x.dtype)
    xc = torch.view_as_complex(x.to(work).reshape(*x.shape[:-1], d // 2, 2).contiguous())  # [..., N, D/2]
    return torch.view_as_real(xc * f).reshape(x.shape).to(x.dtype)


def rotate_pairs(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """`apply_rope`'s complex product in real arithmetic, for torch.compile (which fuses it): x [..., N, D],
    f [..., N, D // 2, 2] the table as (cos, sin) pairs. The complex path stays the reference (test_rope.py)."""
    xp = x.unflatten(-1, (-1, 2))                                          # [..., N, D/2, 2]
    x0, x1, c, s = xp[..., 0], xp[..., 1], f[..., 0], f[..., 1]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), -1).flatten(-2)  # [..., N, D]
