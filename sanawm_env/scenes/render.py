"""Batched torch ray caster for the 2.5-D grid worlds: B cameras at once, any mix of scenes, CPU or GPU.

Each pixel's ray marches the 2-D grid with a DDA (Amanatides & Woo, 1987). In every cell it tests
the cell's solid span: a side face where the ray enters the cell, or the top or bottom face where it
crosses the span's height inside the cell. The floor, ceiling and sky are analytic and bound the
march. Rays use the unnormalised camera direction (x, y, 1), so the ray parameter is z-depth.

Two paths share one step function: the eager path is the reference; with `compile=True` the step
and the shading are fused by `torch.compile` (about 10x faster on a 2-core CPU). A test pits them
against each other. Finished rays are compacted away every few steps, so work follows the scene.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .poses import check_c2w
from .scene import MAT_SIZE, Scene, SceneBatch
from .textures import apply_fog, sample_atlas, sky_color

# Hit kinds.
MISS, SIDE_X, SIDE_Z, TOP, BOTTOM, FLOOR, CEILING, SKY = range(8)
INF = float("inf")


@dataclass
class RenderConfig:
    height: int = 128
    width: int = 128
    supersample: int = 1         # 1 or 2: render at 2x and average 2x2 blocks (anti-aliasing)
    compile: bool = False        # fuse the march step and shading with torch.compile (falls back to eager)
    steps_per_call: int = 4      # DDA steps fused per call; finished rays are compacted away between calls
    ambient: float = 0.5


@dataclass
class RenderOutput:
    rgb: torch.Tensor            # (B, H, W, 3) uint8
    depth: torch.Tensor          # (B, H, W) float32 z-depth in metres; inf where the sky is seen


def _setup(c2w, k, scene_index, cell, ceiling, far, roof, h: int, w: int, nx: int, nz: int):
    """Primary rays of B cameras as the march state (f, i, c) of `_dda_step`, plus each ray's scene.

    c2w: [B, 4, 4]; k: [B, 4] (fx, fy, cx, cy); scene_index: [B] int64; per-scene tables [S].
    The floor (y = 0), the ceiling (y = -C), the far distance and the highest span top bound the march.
    """
    b = c2w.shape[0]
    v, u = torch.meshgrid(torch.arange(h, device=c2w.device, dtype=torch.float32),
                          torch.arange(w, device=c2w.device, dtype=torch.float32), indexing="ij")
    x = (u.reshape(1, -1) - k[:, 2:3]) / k[:, 0:1]                # (B, H*W)
    y = (v.reshape(1, -1) - k[:, 3:4]) / k[:, 1:2]
    r = c2w[:, :3, :3]
    d = [r[:, j, 0:1] * x + r[:, j, 1:2] * y + r[:, j, 2:3] for j in range(3)]  # world direction, (B, H*W) each
    sid = scene_index.unsqueeze(1).expand(b, h * w)                 # (B, H*W)
    cs = cell[sid]
    ox, oy, oz = (c2w[:, j, 3:4].expand(b, h * w) for j in range(3))
    dx, dy, dz = d
    t_floor = torch.where(dy > 0, -oy / dy, INF)
    t_ceil = torch.where(dy < 0, (-ceiling[sid] - oy) / dy, INF)
    t_far = far[sid] * torch.rsqrt(dx * dx + dy * dy + dz * dz)
    t_roof = torch.where(dy < 0, (-roof[sid] - oy) / dy, INF)
    t_max = torch.minimum(torch.minimum(t_floor, t_ceil), torch.minimum(t_far, t_roof))
    gx, gz, dgx, dgz = ox / cs, oz / cs, dx / cs, dz / cs         # cell units
    ix, iz = torch.floor(gx), torch.floor(gz)
    tnx = torch.where(dgx > 0, ix + 1 - gx, gx - ix) / dgx.abs().clamp_min(1e-12)
    tnz = torch.where(dgz > 0, iz + 1 - gz, gz - iz) / dgz.abs().clamp_min(1e-12)
    zeros = torch.zeros_like(ix)
    f = torch.stack([tnx, tnz, zeros], -1).reshape(-1, 3)                                   # (N, 3)
    i = torch.stack([ix, iz, zeros, zeros + MISS, (sid * (nz * nx)).float()], -1).reshape(-1, 5).int()  # (N, 5)
    c = torch.stack([gx, gz, dgx, dgz, oy, dy, t_max], -1).reshape(-1, 7)                # (N, 7)
    return f, i, c, sid.reshape(-1)


def _dda_step(tnx, tnz, t_en, ix, iz, axis, kind, base, gx, gz, dgx, dgz, oy, dy, t_max,
              h_lo, h_hi, skip, nx: int, nz: int):
    """Advance N rays by one grid cell, or jump several empty cells at once.

    Per ray [N]: tnx, tnz, the parameter of the next x / z crossing; t_en, where the ray entered its
    cell (inf once it left the grid); ix, iz, the cell (int32); axis, entered across x (0) or z (1);
    kind, MISS until a hit freezes the ray; base, the offset of the ray's scene in the flat tables;
    gx, gz, dgx, dgz, origin and direction in cell units; oy, dy, height terms in metres; t_max,
    where the march ends. Returns the new (tnx, tnz, t_en, ix, iz, axis, kind).
    """
    live = (kind == MISS) & (t_en < t_max)
    t_ex = torch.minimum(torch.minimum(tnx, tnz), t_max)
    inb = (ix >= 0) & (ix < nx) & (iz >= 0) & (iz < nz)
    idx = base + iz.clamp(0, nz - 1) * nx + ix.clamp(0, nx - 1)
    lo, hi, k = h_lo[idx], h_hi[idx], skip[idx]
    solid = inb & (hi > lo)
    h_en = -(oy + dy * t_en)     # height above the floor where the ray enters the cell
    h_ex = -(oy + dy * t_ex)
    side = live & solid & (t_en > 0) & (h_en >= lo) & (h_en <= hi)
    top = live & solid & ~side & (h_en > hi) & (h_ex <= hi)
    bottom = live & solid & ~side & (h_en < lo) & (h_ex >= lo)
    hit = side | top | bottom
    kind = torch.where(side, SIDE_X + axis, torch.where(top, TOP, torch.where(bottom, BOTTOM, kind)))
    move = live & ~hit
    tdx = 1.0 / dgx.abs().clamp_min(1e-12)
    tdz = 1.0 / dgz.abs().clamp_min(1e-12)
    # Empty space: every cell within k-1 of this one is empty, so skip ahead by k-1 cells (Chebyshev).
    jump = move & (k >= 2)
    t_j = t_en + (k - 1).float() * torch.minimum(tdx, tdz)
    ixj = torch.floor(gx + dgx * t_j)
    izj = torch.floor(gz + dgz * t_j)
    tnxj = torch.where(dgx > 0, ixj + 1 - gx, gx - ixj) * tdx
    tnzj = torch.where(dgz > 0, izj + 1 - gz, gz - izj) * tdz
    # Otherwise step into the neighbouring cell across the nearer boundary.
    step_x = tnx < tnz
    ix_s = torch.where(step_x, ix + (dgx > 0).int() * 2 - 1, ix)
    iz_s = torch.where(step_x, iz, iz + (dgz > 0).int() * 2 - 1)
    ix = torch.where(jump, ixj.int(), torch.where(move, ix_s, ix))
    iz = torch.where(jump, izj.int(), torch.where(move, iz_s, iz))
    tnx = torch.where(jump, tnxj, torch.where(move & step_x, tnx + tdx, tnx))
    tnz = torch.where(jump, tnzj, torch.where(move & ~step_x, tnz + tdz, tnz))
    axis = torch.where(move, (~step_x).int(), axis)
    t_en = torch.where(move & inb, torch.where(jump, t_j, t_ex), torch.where(move, INF, t_en))
    return tnx, tnz, t_en, ix, iz, axis, kind


def _dda_steps(f, i, c, h_lo, h_hi, skip, nx: int, nz: int, n_steps: int):
    """`n_steps` consecutive `_dda_step`s on packed state, so compaction is three row gathers.

    f: [N, 3] float32 (tnx, tnz, t_en); i: [N, 5] int32 (ix, iz, axis, kind, base);
    c: [N, 7] float32 (gx, gz, dgx, dgz, oy, dy, t_max). Returns the new (f, i). Compiled, one call
    is one fused kernel.
    """
    tnx, tnz, t_en = f.unbind(1)
    ix, iz, axis, kind, base = i.unbind(1)
    consts = c.unbind(1)
    for _ in range(n_steps):
        tnx, tnz, t_en, ix, iz, axis, kind = _dda_step(tnx, tnz, t_en, ix, iz, axis, kind, base, *consts,
                                                       h_lo, h_hi, skip, nx, nz)
    return torch.stack([tnx, tnz, t_en], 1), torch.stack([ix, iz, axis, kind, base], 1)


def _shade(c, ix, iz, kind, scene_idx,
           cell, ceiling, h_lo, h_hi, side_mat, wall_mat, floor_mat, materials, atlas, ceiling_mat, outside_mat,
           sky, light, nx: int, nz: int, ambient: float):
    """Colour [N, 3] and depth [N] of finished rays: c [N, 7] as in `_dda_step`; ix, iz, kind, scene_idx [N]."""
    gx, gz, dgx, dgz, oy, dy, _ = c.unbind(1)
    cs = cell[scene_idx]
    o = torch.stack([gx * cs, oy, gz * cs], -1)   # (N, 3) origin, metres
    d = torch.stack([dgx * cs, dy, dgz * cs], -1)  # (N, 3) direction, camera z component 1
    t_floor = torch.where(dy > 0, -oy / dy, INF)
    t_ceil = torch.where(dy < 0, (-ceiling[scene_idx] - oy) / dy, INF)
    base = scene_idx * (nz * nx)
    cidx = base + iz.clamp(0, nz - 1) * nx + ix.clamp(0, nx - 1)
    # Where the ray met the span: the entry boundary of the cell, or the span's top / bottom height.
    t_sx = (ix + (dgx <= 0).int() - gx) / dgx
    t_sz = (iz + (dgz <= 0).int() - gz) / dgz
    t_top = (-h_hi[cidx] - o[:, 1]) / d[:, 1]
    t_bot = (-h_lo[cidx] - o[:, 1]) / d[:, 1]
    t_hit = torch.where(kind == SIDE_X, t_sx, torch.where(kind == SIDE_Z, t_sz, torch.where(kind == TOP, t_top, t_bot)))
    # Resolve misses into floor, ceiling or sky.
    miss = kind == MISS
    on_floor = miss & (t_floor <= t_ceil) & torch.isfinite(t_floor)
    on_ceil = miss & ~on_floor & torch.isfinite(t_ceil)
    kind = torch.where(on_floor, FLOOR, torch.where(on_ceil, CEILING, torch.where(miss, SKY, kind)))
    t = torch.where(on_floor, t_floor, torch.where(on_ceil, t_ceil, t_hit))
    is_sky = kind == SKY
    t = torch.where(is_sky, 0.0, t)
    p = o + d * t.unsqueeze(-1)  # (N, 3) hit point

    zero = torch.zeros_like(t)
    one = torch.ones_like(t)
    nrm_x = torch.where(kind == SIDE_X, -torch.sign(dgx), zero)
    nrm_z = torch.where(kind == SIDE_Z, -torch.sign(dgz), zero)
    nrm_y = torch.where((kind == TOP) | (kind == FLOOR), -one,
                        torch.where((kind == BOTTOM) | (kind == CEILING), one, zero))
    n = torch.stack([nrm_x, nrm_y, nrm_z], -1)  # (N, 3)

    # Material: span faces use their own, or (ROOM_WALL) the wallpaper of the cell the viewer stands in.
    q = p + n * (0.01 * cs).unsqueeze(-1)
    qi = torch.floor(q[:, 2] / cs).long()
    qj = torch.floor(q[:, 0] / cs).long()
    q_inb = (qi >= 0) & (qi < nz) & (qj >= 0) & (qj < nx)
    qidx = base + qi.clamp(0, nz - 1) * nx + qj.clamp(0, nx - 1)
    own = side_mat[cidx]
    span_mat = torch.where(own < 0, wall_mat[qidx], own)
    ground = torch.where(q_inb, floor_mat[qidx], outside_mat[scene_idx])
    mat_id = torch.where(kind == FLOOR, ground, torch.where(kind == CEILING, ceiling_mat[scene_idx], span_mat))
    mat_id = torch.where(is_sky, outside_mat[scene_idx], mat_id)

    height = -p[:, 1]
    u = torch.where(kind == SIDE_X, p[:, 2], p[:, 0])
    v = torch.where((kind == SIDE_X) | (kind == SIDE_Z), height, p[:, 2])
    base_rgb = sample_atlas(atlas, mat_id, u, v, materials[mat_id, MAT_SIZE])

    sky_rows = sky[scene_idx]
    dist = t * d.norm(dim=-1)
    lambert = (n * light[scene_idx]).sum(-1).clamp_min(0.0)
    rgb = base_rgb * (ambient + (1.0 - ambient) * lambert).unsqueeze(-1)
    indoor = torch.isfinite(t_ceil) | (kind == CEILING)
    rgb = torch.where(indoor.unsqueeze(-1), rgb / (1.0 + 0.04 * dist).unsqueeze(-1), apply_fog(rgb, dist, sky_rows))
    d_unit = d / d.norm(dim=-1, keepdim=True)
    rgb = torch.where(is_sky.unsqueeze(-1), sky_color(d_unit, sky_rows), rgb)
    depth = torch.where(is_sky, INF, t)
    return rgb, depth


class Renderer:
    """Renders B cameras, each in its own scene of a SceneBatch.

    Example:
        r = Renderer(generate_indoor(0), RenderConfig(height=128, width=128))
        out = r.render(c2w, intrinsics)   # c2w (B, 4, 4), intrinsics (4,) or (B, 4) in output pixels
    """

    def __init__(self, scenes: Scene | list[Scene] | SceneBatch, cfg: RenderConfig | None = None,
                 device: torch.device | str = "cpu"):
        self.cfg = cfg or RenderConfig()
        if self.cfg.height < 1 or self.cfg.width < 1:
            raise ValueError(f"image size must be at least 1x1, got {self.cfg.height}x{self.cfg.width}")
        if self.cfg.supersample not in (1, 2):
            raise ValueError(f"supersample must be 1 or 2, got {self.cfg.supersample}")
        if isinstance(scenes, Scene):
            scenes = [scenes]
        self.batch = scenes if isinstance(scenes, SceneBatch) else SceneBatch.stack(list(scenes), device)
        self.device = self.batch.device
        self._setup_fn, self._step, self._shade_fn = _setup, _dda_steps, _shade
        if self.cfg.compile:
            # Indices are clamped in-kernel, so inductor's per-gather bounds asserts are redundant.
            opts = {"assert_indirect_indexing": False}
            self._setup_fn = torch.compile(_setup, dynamic=True, options=opts)
            self._step = torch.compile(_dda_steps, dynamic=True, options=opts)
            self._shade_fn = torch.compile(_shade, dynamic=True, options=opts)
        self._compiled_ok: bool | None = None if self.cfg.compile else False

    # ------------------------------------------------------------------ public API
    def render(self, c2w, intrinsics, scene_index=None) -> RenderOutput:
        """Render B views.

        c2w: (B, 4, 4) or (4, 4) camera-to-world, OpenCV axes, metres.
        intrinsics: (4,) or (B, 4) (fx, fy, cx, cy) in pixels of the output image.
        scene_index: (B,) int, which scene of the batch each camera is in (default: all in scene 0).
        """
        c2w = check_c2w(c2w).to(self.device)
        b = c2w.shape[0]
        k = torch.as_tensor(intrinsics, dtype=torch.float32, device=self.device)
        if k.dim() == 1:
            k = k.expand(b, -1)
        if tuple(k.shape) != (b, 4):
            raise ValueError(f"intrinsics must have shape (4,) or ({b}, 4), got {tuple(k.shape)}")
        if not torch.isfinite(k).all() or (k[:, :2] <= 0).any():
            raise ValueError(f"intrinsics must be finite with fx, fy > 0, got {k.tolist()}")
        if scene_index is None:
            scene_index = torch.zeros(b, dtype=torch.int64, device=self.device)
        scene_index = torch.as_tensor(scene_index, dtype=torch.int64, device=self.device).reshape(-1)
        if scene_index.shape[0] != b or (scene_index < 0).any() or (scene_index >= self.batch.num_scenes).any():
            raise ValueError(
                f"scene_index must hold {b} values in [0, {self.batch.num_scenes}), got {scene_index.tolist()}")

        ss = self.cfg.supersample
        h, w = self.cfg.height * ss, self.cfg.width * ss
        if ss > 1:  # output pixel u covers hi-res pixels ss*u .. ss*u+ss-1, centred at ss*u + (ss-1)/2
            k = torch.cat([k[:, :2] * ss, k[:, 2:] * ss + (ss - 1) / 2.0], dim=1)
        with torch.no_grad():
            rgb, depth = self._render_rays(c2w, k, scene_index, h, w)
        rgb = rgb.view(b, h, w, 3)
        depth = depth.view(b, h, w)
        if ss > 1:
            rgb = rgb.view(b, h // ss, ss, w // ss, ss, 3).mean(dim=(2, 4))
            depth = depth.view(b, h // ss, ss, w // ss, ss).amin(dim=(2, 4))
        rgb8 = (rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
        return RenderOutput(rgb=rgb8, depth=depth)

    # ------------------------------------------------------------------ internals
    def _call(self, fn_fast, fn_ref, *args, **kw):
        """Run the compiled function, falling back to eager once if compilation is unavailable."""
        if self._compiled_ok is False:
            return fn_ref(*args, **kw)
        try:
            out = fn_fast(*args, **kw)
            self._compiled_ok = True
            return out
        except Exception as e:  # no C++ compiler, unsupported platform...
            if self._compiled_ok:
                raise
            warnings.warn(f"torch.compile unavailable for the renderer, using eager: {e}", stacklevel=3)
            self._compiled_ok = False
            return fn_ref(*args, **kw)

    def _render_rays(self, c2w, k, scene_index, h, w):
        sb = self.batch
        f, i, c, sid = self._call(self._setup_fn, _setup, c2w, k, scene_index, sb.cell, sb.ceiling, sb.far,
                                  sb.roof, h, w, sb.nx, sb.nz)
        c_all = c
        rows = torch.arange(c.shape[0], device=self.device)
        result = i.clone()  # final (ix, iz, axis, kind, base) of every ray
        k = self.cfg.steps_per_call
        for _ in range(0, sb.nx + sb.nz + 2, k):  # a ray crosses at most nx + nz cells
            f, i = self._call(self._step, _dda_steps, f, i, c, sb.h_lo, sb.h_hi, sb.skip, sb.nx, sb.nz, k)
            live = (i[:, 3] == MISS) & (f[:, 2] < c[:, 6])
            keep = live.nonzero().squeeze(1)
            if keep.numel() < 0.75 * rows.numel():
                done = (~live).nonzero().squeeze(1)
                result.index_copy_(0, rows.index_select(0, done), i.index_select(0, done))
                rows, f, i, c = (x.index_select(0, keep) for x in (rows, f, i, c))
            if keep.numel() == 0:
                break
        result.index_copy_(0, rows, i)
        ix, iz, _, kind, _ = result.long().unbind(1)
        rgb, depth = self._call(
            self._shade_fn, _shade, c_all, ix, iz, kind, sid, sb.cell, sb.ceiling, sb.h_lo, sb.h_hi, sb.side_mat,
            sb.wall_mat, sb.floor_mat, sb.materials, sb.atlas, sb.ceiling_mat, sb.outside_mat, sb.sky, sb.light,
            sb.nx, sb.nz, self.cfg.ambient)
        return rgb, depth
