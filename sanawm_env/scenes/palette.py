"""Colourful material choices for the scene families, drawn from a numpy Generator."""

from __future__ import annotations

import colorsys

import numpy as np

from .scene import BRICK, CHECKER, NOISE, ROAD, SOLID, STRIPES, TILES, WINDOWS, WOOD, material


def hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float], h: float | None = None):
    hue = float(rng.random()) if h is None else h
    return colorsys.hsv_to_rgb(hue, float(rng.uniform(*s)), float(rng.uniform(*v)))


def _shade(rgb, k: float):
    return tuple(min(1.0, c * k) for c in rgb)


def _int(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def wall_material(rng: np.random.Generator, corridor: bool = False) -> list[float]:
    kind = _int(rng, 0, 4) if not corridor else int(rng.choice([2, 4]))
    base = hsv(rng, (0.25, 0.65), (0.6, 0.95))
    if kind == 0:
        red = hsv(rng, (0.45, 0.75), (0.5, 0.75), h=float(rng.uniform(0.0, 0.08)))
        return material(BRICK, red, (0.82, 0.8, 0.76), (2.0, 2.0), 16, 0.08)
    if kind == 1:
        return material(STRIPES, base, _shade(base, 0.75), (2.0, 2.0), _int(rng, 4, 10), 0.0, 0.5)
    if kind == 2:
        return material(NOISE, base, _shade(base, 0.8), (4.0, 4.0), 3)
    if kind == 3:
        return material(CHECKER, base, hsv(rng, (0.3, 0.6), (0.5, 0.9)), (2.0, 2.0), _int(rng, 4, 8))
    return material(TILES, base, (0.9, 0.9, 0.88), (2.0, 2.0), _int(rng, 6, 10), 0.06)


def floor_material(rng: np.random.Generator, corridor: bool = False) -> list[float]:
    kind = _int(rng, 0, 2)
    if kind == 0 or corridor:
        wood = hsv(rng, (0.45, 0.7), (0.45, 0.75), h=float(rng.uniform(0.05, 0.11)))
        return material(WOOD, wood, _shade(wood, 0.7), (2.0, 2.0), _int(rng, 8, 14))
    if kind == 1:
        return material(CHECKER, hsv(rng, (0.0, 0.3), (0.8, 0.95)), hsv(rng, (0.3, 0.8), (0.2, 0.5)),
                        (2.0, 2.0), _int(rng, 3, 5))
    return material(TILES, hsv(rng, (0.1, 0.5), (0.55, 0.9)), (0.3, 0.3, 0.3), (2.0, 2.0), _int(rng, 3, 6), 0.05)


def furniture_material(rng: np.random.Generator) -> list[float]:
    if rng.random() < 0.5:
        wood = hsv(rng, (0.5, 0.8), (0.3, 0.6), h=float(rng.uniform(0.04, 0.1)))
        return material(WOOD, wood, _shade(wood, 0.6), (1.0, 1.0), 6)
    col = hsv(rng, (0.55, 0.9), (0.5, 0.9))
    return material(int(rng.choice([SOLID, STRIPES, NOISE])), col, _shade(col, 0.7), (1.0, 1.0), 6, 0.0, 0.5)


def ceiling_material() -> list[float]:
    return material(TILES, (0.93, 0.92, 0.88), (0.75, 0.74, 0.7), (2.0, 2.0), 3, 0.05)


def facade_material(rng: np.random.Generator) -> list[float]:
    """Windows 2.5 m apart, floors 3 m high: a 10 x 9 m tile of 4 windows by 3 floors."""
    kind = _int(rng, 0, 2)
    lit = float(rng.uniform(0.1, 0.5))
    if kind == 0:
        wall = hsv(rng, (0.2, 0.6), (0.55, 0.9))
        return material(WINDOWS, wall, _shade(wall, 0.6), (10.0, 9.0), 4, 3, lit)
    if kind == 1:
        red = hsv(rng, (0.5, 0.8), (0.45, 0.7), h=float(rng.uniform(0.0, 0.07)))
        return material(WINDOWS, red, (0.85, 0.85, 0.8), (10.0, 9.0), 4, 3, lit)
    return material(WINDOWS, hsv(rng, (0.0, 0.15), (0.55, 0.85)), (0.25, 0.25, 0.3), (10.0, 9.0), 4, 3, lit)


def outdoor_ground_materials() -> dict[str, list[float]]:
    """Fixed ground set; index order is the order of this dict. Road tiles align with 1 m cells."""
    asphalt, paint = (0.22, 0.22, 0.24), (0.95, 0.9, 0.6)
    return {
        "grass": material(NOISE, (0.25, 0.5, 0.18), (0.42, 0.62, 0.25), (8.0, 8.0), 6),
        "road": material(ROAD, asphalt, paint, (4.0, 4.0), 1, 0.0),
        "road_x": material(ROAD, asphalt, paint, (3.0, 1.0), 1, 1.0),
        "road_z": material(ROAD, asphalt, paint, (1.0, 3.0), 1, 2.0),
        "sidewalk": material(TILES, (0.72, 0.7, 0.66), (0.5, 0.5, 0.48), (2.0, 2.0), 4, 0.04),
        "plaza": material(CHECKER, (0.75, 0.66, 0.55), (0.6, 0.45, 0.38), (2.0, 2.0), 2),
        "hedge": material(NOISE, (0.12, 0.38, 0.12), (0.3, 0.55, 0.2), (2.0, 2.0), 4),
    }
