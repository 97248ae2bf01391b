"""Indoor family: rooms and corridors from a BSP split, doorways with lintels, furniture boxes.

Walls are one cell thick. Every split wall gets at least one doorway, which keeps the floor plan
connected by construction; furniture is placed only where it keeps the walkable area connected.
Wall cells carry the sentinel material ROOM_WALL, so each room shows its own wallpaper on both
faces of a shared wall (the renderer looks up the viewer-side cell's `wall_mat`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .palette import ceiling_material, floor_material, furniture_material, wall_material
from .scene import NOISE, Scene, material

ROOM_WALL = -1


@dataclass
class IndoorConfig:
    cell: float = 0.5            # metres per grid cell
    min_cells: int = 26          # grid side range (cells), walls included
    max_cells: int = 38
    min_room: int = 5            # smallest room side in cells (interior)
    max_room: int = 13           # rooms larger than this are always split
    door_width: int = 2          # cells
    lintel: float = 2.1          # metres: top of a doorway
    ceiling: tuple[float, float] = (2.6, 3.1)
    corridor_prob: float = 0.3
    extra_door_prob: float = 0.35
    furniture_per_room: tuple[int, int] = (1, 4)
    agent_clear: tuple[float, float] = (0.2, 1.9)  # heights a walking agent sweeps, for connectivity


def _split(rng, region, cfg, walls, leaves, splits):
    """Recursive BSP over an interior region (i0, j0, i1, j1), half-open, in cells."""
    i0, j0, i1, j1 = region
    h, w = i1 - i0, j1 - j0
    can_h = h >= 2 * cfg.min_room + 1
    can_w = w >= 2 * cfg.min_room + 1
    must = max(h, w) > cfg.max_room
    if not (can_h or can_w) or (not must and rng.random() < 0.35):
        leaves.append(region)
        return
    horizontal = can_h and (not can_w or (h > w) or (h == w and rng.random() < 0.5))
    length = h if horizontal else w
    if rng.random() < cfg.corridor_prob and length >= 2 * cfg.min_room + 4:
        # A corridor strip of 3 cells along one side of the split.
        at = cfg.min_room + 1 if rng.random() < 0.5 else length - cfg.min_room - 4
        at = int(np.clip(at, 3, length - 4))
    else:
        at = int(rng.integers(cfg.min_room, length - cfg.min_room))
    if horizontal:
        wall = (i0 + at, j0, i0 + at + 1, j1)
        a, b = (i0, j0, i0 + at, j1), (i0 + at + 1, j0, i1, j1)
    else:
        wall = (i0, j0 + at, i1, j0 + at + 1)
        a, b = (i0, j0, i1, j0 + at), (i0, j0 + at + 1, i1, j1)
    walls[wall[0]:wall[2], wall[1]:wall[3]] = True
    splits.append((wall, horizontal))
    _split(rng, a, cfg, walls, leaves, splits)
    _split(rng, b, cfg, walls, leaves, splits)


def _door_candidates(walls, wall, horizontal, width):
    """Start offsets along a split wall where a door of `width` cells has free cells on both sides."""
    i0, j0, i1, j1 = wall
    out = []
    if horizontal:
        for j in range(j0, j1 - width + 1):
            cols = slice(j, j + width)
            if not walls[i0 - 1, cols].any() and not walls[i0 + 1, cols].any() and walls[i0, cols].all():
                out.append((i0, j))
    else:
        for i in range(i0, i1 - width + 1):
            rows = slice(i, i + width)
            if not walls[rows, j0 - 1].any() and not walls[rows, j0 + 1].any() and walls[rows, j0].all():
                out.append((i, j0))
    return out


def _connected(free: np.ndarray) -> bool:
    """4-connectivity of the True cells of a boolean grid."""
    cells = np.argwhere(free)
    if len(cells) == 0:
        return False
    seen = np.zeros_like(free)
    stack = [tuple(cells[0])]
    seen[stack[0]] = True
    count = 1
    while stack:
        i, j = stack.pop()
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            a, b = i + di, j + dj
            if 0 <= a < free.shape[0] and 0 <= b < free.shape[1] and free[a, b] and not seen[a, b]:
                seen[a, b] = True
                count += 1
                stack.append((a, b))
    return count == len(cells)


def generate_indoor(seed: int, cfg: IndoorConfig | None = None) -> Scene:
    """A furnished floor plan; the same seed gives the same scene on every machine."""
    cfg = cfg or IndoorConfig()
    rng = np.random.default_rng([seed, 1])
    nz, nx = (int(v) for v in rng.integers(cfg.min_cells, cfg.max_cells + 1, size=2))
    ceiling = float(rng.uniform(*cfg.ceiling))

    walls = np.zeros((nz, nx), dtype=bool)
    walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = True
    leaves, splits = [], []
    _split(rng, (1, 1, nz - 1, nx - 1), cfg, walls, leaves, splits)

    h_lo = np.zeros((nz, nx), np.float32)
    h_hi = np.where(walls, ceiling, 0.0).astype(np.float32)
    doors = np.zeros((nz, nx), dtype=bool)
    for wall, horizontal in splits:
        cands = _door_candidates(walls, wall, horizontal, cfg.door_width)
        if not cands:  # cannot happen with min_room >= door_width + 2, kept as a guard
            raise RuntimeError(f"indoor seed {seed}: no doorway position on split wall {wall}")
        picks = [cands[int(rng.integers(len(cands)))]]
        if len(cands) > 3 * cfg.door_width and rng.random() < cfg.extra_door_prob:
            picks.append(cands[int(rng.integers(len(cands)))])
        for i, j in picks:
            di, dj = (0, cfg.door_width) if horizontal else (cfg.door_width, 0)
            doors[i:i + max(di, 1), j:j + max(dj, 1)] = True
    h_lo[doors] = cfg.lintel

    # Materials: per-room wallpaper and floor, shared ceiling, furniture.
    mats = [ceiling_material(), material(NOISE, (0.85, 0.84, 0.8), (0.7, 0.7, 0.68), (4.0, 4.0), 3)]
    wall_mat = np.full((nz, nx), 1, np.int64)
    floor_mat = np.zeros((nz, nx), np.int64)
    side_mat = np.where(walls, ROOM_WALL, 0).astype(np.int64)
    free_clear = ~walls | doors  # walkable at agent height (door lintels are above the head)
    for (i0, j0, i1, j1) in leaves:
        is_corridor = min(i1 - i0, j1 - j0) <= 3
        mats.append(wall_material(rng, corridor=is_corridor))
        mats.append(floor_material(rng, corridor=is_corridor))
        # The room's cells plus its doorway cells (so a doorway's jambs show the room's paper).
        wall_mat[i0 - 1:i1 + 1, j0 - 1:j1 + 1] = np.where(
            walls[i0 - 1:i1 + 1, j0 - 1:j1 + 1] & ~doors[i0 - 1:i1 + 1, j0 - 1:j1 + 1],
            wall_mat[i0 - 1:i1 + 1, j0 - 1:j1 + 1], len(mats) - 2)
        floor_mat[i0:i1, j0:j1] = len(mats) - 1
        if is_corridor:
            continue
        for _ in range(int(rng.integers(cfg.furniture_per_room[0], cfg.furniture_per_room[1] + 1))):
            bh, bw = (int(v) for v in rng.integers(1, 4, size=2))
            if bh >= i1 - i0 - 2 or bw >= j1 - j0 - 2:
                continue
            against_wall = rng.random() < 0.6
            if against_wall:
                side = int(rng.integers(4))
                fi = [i0, i1 - bh, int(rng.integers(i0, i1 - bh + 1)), int(rng.integers(i0, i1 - bh + 1))][side]
                fj = [int(rng.integers(j0, j1 - bw + 1)), int(rng.integers(j0, j1 - bw + 1)), j0, j1 - bw][side]
            else:
                fi = int(rng.integers(i0 + 1, i1 - bh))
                fj = int(rng.integers(j0 + 1, j1 - bw))
            box = (slice(fi, fi + bh), slice(fj, fj + bw))
            near = (slice(max(fi - 1, 0), fi + bh + 1), slice(max(fj - 1, 0), fj + bw + 1))
            if doors[near].any() or h_hi[box].any():
                continue
            trial = free_clear.copy()
            trial[box] = False
            if not _connected(trial):
                continue
            height = float(rng.choice([0.45, 0.75, 0.95, 1.8]))
            mats.append(furniture_material(rng))
            h_hi[box] = height
            side_mat[box] = len(mats) - 1
            free_clear = trial
    # The floor under walls takes a neighbouring room's floor (visible through doorways).
    for i, j in np.argwhere(walls):
        nb = floor_mat[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
        floor_mat[i, j] = nb.max()

    light = torch.tensor([0.35, -1.0, 0.55])
    return Scene(
        family="indoor",
        seed=seed,
        cell=cfg.cell,
        h_lo=torch.from_numpy(h_lo),
        h_hi=torch.from_numpy(h_hi),
        side_mat=torch.from_numpy(side_mat),
        wall_mat=torch.from_numpy(wall_mat),
        floor_mat=torch.from_numpy(floor_mat),
        materials=torch.tensor(mats, dtype=torch.float32),
        ceiling=ceiling,
        ceiling_mat=0,
        outside_mat=0,
        sky=torch.zeros(16),
        light=light / light.norm(),
        eye_height=1.5,
        far=40.0,
        rooms=[tuple(int(v) for v in r) for r in leaves],
    ).bake()
