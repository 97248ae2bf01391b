"""A procedural world as tensors: a 2.5-D grid of solid columns over a floor, plus sky and materials.

World axes follow the OpenCV camera at the identity pose: x right, y down, z forward, in metres.
Gravity points along +y, the floor is the plane y = 0, and a point at height h above the floor has
y = -h. Grid cell (i, j) covers x in [j*cell, (j+1)*cell] and z in [i*cell, (i+1)*cell].

Each cell holds at most one solid span [h_lo, h_hi] (metres above the floor): a wall (0 to the
ceiling), a piece of furniture (0 to its top), a door lintel (2.1 m to the ceiling) or a building.
This is enough for rooms, doorways, furniture and streets, and it lets one 2-D DDA march serve
rendering, collision and navigation alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Pattern ids of the procedural material table (see textures.py).
SOLID, CHECKER, STRIPES, BRICK, NOISE, WOOD, WINDOWS, ROAD, TILES = range(9)
# Columns of one material row.
MAT_PATTERN, MAT_RGB1, MAT_RGB2, MAT_SIZE, MAT_N, MAT_P1, MAT_P2 = 0, slice(1, 4), slice(4, 7), slice(7, 9), 9, 10, 11
MAT_WIDTH = 12
# Layout of the sky vector.
SKY_ZENITH, SKY_HORIZON, SKY_SUN_DIR, SKY_SUN_RGB, SKY_FOG_RGB, SKY_FOG_DENSITY = (
    slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12), slice(12, 15), 15)
SKY_WIDTH = 16


def material(pattern: int, rgb1, rgb2=(0.0, 0.0, 0.0), size=(2.0, 2.0), n: int = 4, p1: float = 0.0,
             p2: float = 0.0) -> list[float]:
    """One row of the material table.

    The texture is a seamless tile of `size` (u, v) metres holding `n` pattern repeats per side;
    colours are in [0, 1]; p1, p2 are pattern-specific (see textures.py).
    """
    return [float(pattern), *map(float, rgb1), *map(float, rgb2), *map(float, size), float(n), float(p1), float(p2)]


@dataclass
class Scene:
    """One world. Tensors live on the CPU; `SceneBatch.to` moves a stack of them to a device."""

    family: str
    seed: int
    cell: float                  # metres per grid cell
    h_lo: torch.Tensor           # (NZ, NX) float32, bottom of the solid span, metres above the floor
    h_hi: torch.Tensor           # (NZ, NX) float32, top of the span; h_hi <= h_lo means the cell is empty
    side_mat: torch.Tensor       # (NZ, NX) int64, material of the span's faces; ROOM_WALL (-1): see wall_mat
    wall_mat: torch.Tensor       # (NZ, NX) int64, wallpaper of ROOM_WALL faces as seen from this cell
    floor_mat: torch.Tensor      # (NZ, NX) int64, material of the floor under the cell
    materials: torch.Tensor      # (M, MAT_WIDTH) float32
    ceiling: float               # ceiling height in metres; inf for open sky
    ceiling_mat: int
    outside_mat: int             # floor material beyond the grid
    sky: torch.Tensor            # (SKY_WIDTH,) float32
    light: torch.Tensor          # (3,) float32 unit vector toward the light
    eye_height: float = 1.5      # nominal camera height of a standing agent
    far: float = 60.0            # metres; rays that hit nothing closer see sky or darkness
    rooms: list[tuple[int, int, int, int]] = field(default_factory=list)  # (i0, j0, i1, j1) free areas
    atlas: torch.Tensor | None = None  # (M, TEX, TEX, 3) uint8 baked material tiles; made by bake()

    def __post_init__(self):
        shape = self.h_lo.shape
        for name in ("h_hi", "side_mat", "wall_mat", "floor_mat"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"Scene.{name} has shape {tuple(getattr(self, name).shape)}, expected {tuple(shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.h_lo.shape)  # (NZ, NX)

    @property
    def extent(self) -> tuple[float, float]:
        """World size (x, z) in metres."""
        nz, nx = self.shape
        return nx * self.cell, nz * self.cell

    def bake(self) -> Scene:
        """Bake the material tiles into `atlas` (once; generators call it). Returns self."""
        from .textures import bake_atlas

        if self.atlas is None:
            self.atlas = bake_atlas(self.materials, salt_offset=(self.seed * 131) % 65536)
        return self

    def solid(self) -> torch.Tensor:
        """(NZ, NX) bool: cells that hold a span."""
        return self.h_hi > self.h_lo



def chebyshev_distance(solid: torch.Tensor, cap: int = 16) -> torch.Tensor:
    """(S, NZ, NX) bool -> int distance in cells to the nearest True cell (0 on it), capped at `cap`.

    The ray march uses it to jump over empty space: every cell within distance k-1 of a cell with
    value k is empty, and nothing lies outside the grid.
    """
    x = solid.float().unsqueeze(1)  # (S, 1, NZ, NX)
    dist = torch.full(solid.shape, cap, dtype=torch.int64)
    covered = solid.clone()
    dist[covered] = 0
    for k in range(1, cap):
        x = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
        grown = x.squeeze(1) > 0
        dist[grown & ~covered] = k
        covered = grown
    return dist


@dataclass
class SceneBatch:
    """Scenes stacked for batched rendering: grids padded to one (NZ, NX), tables concatenated."""

    cell: torch.Tensor           # (S,) float32
    h_lo: torch.Tensor           # (S*NZ*NX,) float32, flat for gathers
    h_hi: torch.Tensor           # (S*NZ*NX,)
    side_mat: torch.Tensor       # (S*NZ*NX,) int64, global material index; -1 = the viewer cell's wall_mat
    wall_mat: torch.Tensor       # (S*NZ*NX,) int64, global material index
    floor_mat: torch.Tensor      # (S*NZ*NX,) int64, global material index
    materials: torch.Tensor      # (sum M, MAT_WIDTH)
    atlas: torch.Tensor          # (sum M * TEX * TEX, 3) uint8 texel rows
    ceiling: torch.Tensor        # (S,) float32
    ceiling_mat: torch.Tensor    # (S,) int64, global
    outside_mat: torch.Tensor    # (S,) int64, global
    sky: torch.Tensor            # (S, SKY_WIDTH)
    light: torch.Tensor          # (S, 3)
    far: torch.Tensor            # (S,)
    roof: torch.Tensor           # (S,) float32, highest span top: rays above it cannot hit a span
    skip: torch.Tensor           # (S*NZ*NX,) int32, Chebyshev distance (cells) to the nearest span, capped
    nz: int
    nx: int

    @property
    def num_scenes(self) -> int:
        return self.cell.shape[0]

    @property
    def device(self) -> torch.device:
        return self.h_lo.device

    @staticmethod
    def stack(scenes: list[Scene], device: torch.device | str = "cpu") -> SceneBatch:
        if not scenes:
            raise ValueError("SceneBatch.stack needs at least one scene, got an empty list")
        nz = max(s.shape[0] for s in scenes)
        nx = max(s.shape[1] for s in scenes)

        def pad(t: torch.Tensor, value) -> torch.Tensor:
            out = torch.full((nz, nx), value, dtype=t.dtype)
            out[: t.shape[0], : t.shape[1]] = t
            return out

        offsets, total = [], 0
        for s in scenes:
            offsets.append(total)
            total += s.materials.shape[0]
        h_lo = torch.stack([pad(s.h_lo, 0.0) for s in scenes])
        h_hi = torch.stack([pad(s.h_hi, 0.0) for s in scenes])
        side = torch.stack([pad(torch.where(s.side_mat < 0, s.side_mat, s.side_mat + o), 0)
                            for s, o in zip(scenes, offsets)])
        wall = torch.stack([pad(s.wall_mat, 0) + o for s, o in zip(scenes, offsets)])
        floor = torch.stack([pad(s.floor_mat, s.outside_mat) + o for s, o in zip(scenes, offsets)])
        f32 = dict(dtype=torch.float32, device=device)
        i64 = dict(dtype=torch.int64, device=device)
        return SceneBatch(
            cell=torch.tensor([s.cell for s in scenes], **f32),
            h_lo=h_lo.reshape(-1).to(**f32),
            h_hi=h_hi.reshape(-1).to(**f32),
            side_mat=side.reshape(-1).to(**i64),
            wall_mat=wall.reshape(-1).to(**i64),
            floor_mat=floor.reshape(-1).to(**i64),
            materials=torch.cat([s.materials for s in scenes]).to(**f32),
            atlas=torch.cat([s.bake().atlas.reshape(-1, 3) for s in scenes]).to(device),
            ceiling=torch.tensor([s.ceiling for s in scenes], **f32),
            ceiling_mat=torch.tensor([s.ceiling_mat + o for s, o in zip(scenes, offsets)], **i64),
            outside_mat=torch.tensor([s.outside_mat + o for s, o in zip(scenes, offsets)], **i64),
            sky=torch.stack([s.sky for s in scenes]).to(**f32),
            light=torch.stack([s.light for s in scenes]).to(**f32),
            far=torch.tensor([s.far for s in scenes], **f32),
            roof=torch.tensor([float(s.h_hi.max()) for s in scenes], **f32),
            skip=chebyshev_distance(h_hi > h_lo).reshape(-1).to(device=device, dtype=torch.int32),
            nz=nz,
            nx=nx,
        )
