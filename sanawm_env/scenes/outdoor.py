"""Outdoor family: a street grid with sidewalks, city blocks of buildings with window facades, plazas
and parks with hedges, under a gradient sky with a sun and distance fog."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .palette import facade_material, hsv, outdoor_ground_materials
from .scene import SKY_WIDTH, Scene


@dataclass
class OutdoorConfig:
    cell: float = 1.0               # metres per grid cell
    min_cells: int = 56
    max_cells: int = 72
    road_half: int = 3              # road = centre cell + road_half cells each side
    sidewalk: int = 2
    block: tuple[int, int] = (14, 22)  # block size between sidewalks, cells
    lot: tuple[int, int] = (5, 11)
    height: tuple[float, float] = (4.0, 24.0)
    open_lot_prob: float = 0.25
    fog: tuple[float, float] = (0.012, 0.022)


def _road_centres(rng, n: int, cfg: OutdoorConfig) -> list[int]:
    span = 2 * (cfg.road_half + cfg.sidewalk) + 1
    out, c = [], int(rng.integers(4, 10)) + cfg.road_half + cfg.sidewalk
    while c < n - cfg.road_half - cfg.sidewalk - 4:
        out.append(c)
        c += span + int(rng.integers(*cfg.block))
    return out


def _lots(rng, start: int, stop: int, cfg: OutdoorConfig) -> list[tuple[int, int]]:
    out, a = [], start
    while stop - a >= cfg.lot[0]:
        b = min(stop, a + int(rng.integers(*cfg.lot)))
        if stop - b < cfg.lot[0]:
            b = stop
        out.append((a, b))
        a = b
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges of the True runs of a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def generate_outdoor(seed: int, cfg: OutdoorConfig | None = None) -> Scene:
    """A few city blocks; the same seed gives the same scene on every machine."""
    cfg = cfg or OutdoorConfig()
    rng = np.random.default_rng([seed, 2])
    nz, nx = (int(v) for v in rng.integers(cfg.min_cells, cfg.max_cells + 1, size=2))
    ground = outdoor_ground_materials()
    names = list(ground)
    gid = {k: i for i, k in enumerate(names)}
    mats = [ground[k] for k in names]

    floor = np.full((nz, nx), gid["grass"], np.int64)
    zc, xc = _road_centres(rng, nz, cfg), _road_centres(rng, nx, cfg)
    r, w = cfg.road_half, cfg.road_half + cfg.sidewalk
    for c in zc:  # roads running along x
        floor[c - w:c + w + 1, :] = gid["sidewalk"]
        floor[c - r:c + r + 1, :] = gid["road"]
        floor[c, :] = gid["road_x"]
    for c in xc:  # roads running along z
        floor[:, c - w:c + w + 1] = np.where(floor[:, c - w:c + w + 1] == gid["grass"], gid["sidewalk"],
                                              floor[:, c - w:c + w + 1])
        floor[:, c - r:c + r + 1] = gid["road"]
        floor[:, c] = gid["road_z"]
    for a in zc:  # intersections: plain asphalt
        for b in xc:
            floor[a - r:a + r + 1, b - r:b + r + 1] = gid["road"]

    h_hi = np.zeros((nz, nx), np.float32)
    side_mat = np.zeros((nz, nx), np.int64)
    # Blocks are the maximal runs of rows and columns that no road crosses.
    street_rows = np.zeros(nz, dtype=bool)
    street_cols = np.zeros(nx, dtype=bool)
    for c in zc:
        street_rows[c - w:c + w + 1] = True
    for c in xc:
        street_cols[c - w:c + w + 1] = True

    rooms = []
    for (i0, i1) in _runs(~street_rows):
        for (j0, j1) in _runs(~street_cols):
            if i1 - i0 < 3 or j1 - j0 < 3:
                continue
            rooms.append((i0, j0, i1, j1))
            # Lots along the longer side, each a building, a plaza, or a park with hedges.
            along_x = (j1 - j0) >= (i1 - i0)
            for (a, b) in _lots(rng, j0 if along_x else i0, j1 if along_x else i1, cfg):
                lot = (slice(i0, i1), slice(a, b)) if along_x else (slice(a, b), slice(j0, j1))
                if rng.random() < cfg.open_lot_prob:
                    if rng.random() < 0.5:
                        floor[lot] = gid["plaza"]
                    else:
                        li, lj = lot
                        for _ in range(int(rng.integers(1, 4))):
                            hi = int(rng.integers(li.start, max(li.start + 1, li.stop - 2)))
                            hj = int(rng.integers(lj.start, max(lj.start + 1, lj.stop - 2)))
                            h_hi[hi:hi + 2, hj:hj + 1 + int(rng.integers(0, 3))] = float(rng.uniform(0.7, 1.3))
                            side_mat[hi:hi + 2, hj:hj + 3] = gid["hedge"]
                    continue
                li, lj = lot
                inset = int(rng.integers(0, 2))
                bi = slice(li.start + inset, li.stop - inset)
                bj = slice(lj.start + inset, lj.stop - inset)
                if bi.stop - bi.start < 2 or bj.stop - bj.start < 2:
                    continue
                mats.append(facade_material(rng))
                h_hi[bi, bj] = float(rng.uniform(*cfg.height))
                side_mat[bi, bj] = len(mats) - 1
                floor[li, lj] = gid["sidewalk"]

    zenith = hsv(rng, (0.45, 0.7), (0.7, 0.9), h=float(rng.uniform(0.55, 0.62)))
    horizon = hsv(rng, (0.05, 0.2), (0.88, 0.98), h=float(rng.uniform(0.5, 0.62)))
    elev = math.radians(float(rng.uniform(20.0, 55.0)))
    az = float(rng.uniform(0.0, 2.0 * math.pi))
    sun = torch.tensor([math.cos(elev) * math.sin(az), -math.sin(elev), math.cos(elev) * math.cos(az)])
    sky = torch.zeros(SKY_WIDTH)
    sky[0:3] = torch.tensor(zenith)
    sky[3:6] = torch.tensor(horizon)
    sky[6:9] = sun
    sky[9:12] = torch.tensor([1.0, 0.92, 0.75])
    sky[12:15] = torch.tensor(horizon)
    sky[15] = float(rng.uniform(*cfg.fog))
    h_lo = np.zeros((nz, nx), np.float32)
    return Scene(
        family="outdoor",
        seed=seed,
        cell=cfg.cell,
        h_lo=torch.from_numpy(h_lo),
        h_hi=torch.from_numpy(h_hi),
        side_mat=torch.from_numpy(side_mat),
        wall_mat=torch.zeros((nz, nx), dtype=torch.int64),
        floor_mat=torch.from_numpy(floor),
        materials=torch.tensor(mats, dtype=torch.float32),
        ceiling=math.inf,
        ceiling_mat=0,
        outside_mat=gid["grass"],
        sky=sky,
        light=sun.clone(),
        eye_height=1.6,
        far=150.0,
        rooms=rooms,
    ).bake()
