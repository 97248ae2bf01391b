"""Hand-made worlds with known geometry, for tests and debugging: an empty walled room, optionally
with one box in it."""

from __future__ import annotations

import torch

from .scene import CHECKER, SKY_WIDTH, TILES, WOOD, Scene, material


def box_room(nx: int = 12, nz: int = 12, cell: float = 0.5, ceiling: float = 2.8,
             box: tuple[int, int, float] | None = None, eye_height: float = 1.5) -> Scene:
    """A room of nx x nz cells whose outer ring is wall; the free floor spans cells 1..nx-2 and 1..nz-2.

    box: optional (i, j, height) single-cell box of `height` metres at cell (i, j).
    """
    if nx < 3 or nz < 3:
        raise ValueError(f"a box room needs at least 3x3 cells, got {nx}x{nz}")
    h_hi = torch.zeros(nz, nx)
    h_hi[0, :] = h_hi[-1, :] = h_hi[:, 0] = h_hi[:, -1] = ceiling
    side = torch.ones(nz, nx, dtype=torch.int64)  # the wall material
    if box is not None:
        i, j, height = box
        h_hi[i, j] = height
        side[i, j] = 3  # the box material
    mats = [
        material(TILES, (0.9, 0.9, 0.88), (0.7, 0.7, 0.68), (2.0, 2.0), 3, 0.05),      # ceiling
        material(CHECKER, (0.85, 0.3, 0.25), (0.95, 0.85, 0.5), (2.0, 2.0), 4),        # walls
        material(WOOD, (0.6, 0.4, 0.2), (0.4, 0.25, 0.12), (2.0, 2.0), 10),           # floor
        material(CHECKER, (0.2, 0.4, 0.9), (0.9, 0.9, 0.9), (1.0, 1.0), 2),            # box
    ]
    return Scene(
        family="indoor", seed=-1, cell=cell, h_lo=torch.zeros(nz, nx), h_hi=h_hi, side_mat=side,
        wall_mat=torch.ones(nz, nx, dtype=torch.int64), floor_mat=torch.full((nz, nx), 2, dtype=torch.int64),
        materials=torch.tensor(mats), ceiling=ceiling, ceiling_mat=0, outside_mat=2, sky=torch.zeros(SKY_WIDTH),
        light=torch.tensor([0.3, -0.9, 0.3]) / torch.tensor([0.3, -0.9, 0.3]).norm(), eye_height=eye_height,
        far=40.0, rooms=[(1, 1, nz - 1, nx - 1)],
    ).bake()
