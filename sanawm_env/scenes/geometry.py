"""Collision, occupancy and exact geodesics on a Scene, for the oracle backend and the navigation tasks.

- The agent's body is a vertical cylinder of `radius` around the camera, from `body_height + radius` below it to
  `radius` above it. A span blocks it when their height ranges overlap and the span's cell comes closer than
  `radius` in the floor plane (Euclidean circle against rectangle). Touching is allowed.
- `move` sweeps that body exactly. The first contact with every nearby span is solved in closed form (the centre's
  segment against the cell grown into a rounded rectangle, intersected with the span's height window), so no step,
  however long, tunnels through a wall, and the stop lies 1e-5 m before contact.
- Geodesics are exact shortest paths in a polygonal domain, not grid approximations. The walkable floor at eye
  height is the grid minus obstacle rectangles grown by radius/sqrt(2) as squares. That square fits inside the
  disc clearance, so every position `is_free` accepts is walkable. Shortest paths bend only at convex rectangle
  corners, so a visibility graph over those corners with all-pairs distances answers a query as a straight line or
  a hop to a visible corner.
- Nothing changes after construction: queries are pure functions of the scene and the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .poses import pose
from .scene import Scene


@dataclass
class GeometryConfig:
    radius: float = 0.18         # agent radius in metres (camera sphere radius)
    body_height: float = 1.2     # body spans [cam - body_height - radius, cam + radius]; 0 = a short camera cylinder
    nav_resolution: float = 0.1  # metres per cell of the occupancy grid
    max_height: float = 30.0     # vertical clamp outdoors (no ceiling): the body's top stays below it


_BACK_OFF = 1e-5      # metres the swept body stops short of first contact, along the path
_CORNER_EPS = 1e-4    # metres a visibility-graph node sits diagonally outside its obstacle corner
_SNAP_EPS = 1e-6      # metres a point pushed out of an inflated obstacle ends beyond its side
_VIS_TOL = 1e-9       # metres the obstacles shrink by in visibility tests, so grazing a side is not blocked
_WINDOW_SLACK = 1e-2  # metres of slack on the anchor bounds (covers the corner nudges, ~1e-4 per bend)


@dataclass
class OccupancyGrid:
    """The floor at nav_resolution: a cell is free when a standing agent centred there is collision-free."""

    free: np.ndarray              # (H, W) bool; row i is z, column j is x, like Scene grids
    reachable: np.ndarray         # (H, W) bool; the largest 4-connected free region (where sampling draws)
    origin: tuple[float, float]   # (x0, z0) world position of the corner of cell (0, 0)
    resolution: float             # metres per cell

    def centres(self) -> np.ndarray:
        """(H, W, 2) world (x, z) of every cell centre."""
        h, w = self.free.shape
        x = self.origin[0] + (np.arange(w) + 0.5) * self.resolution
        z = self.origin[1] + (np.arange(h) + 0.5) * self.resolution
        return np.stack(np.meshgrid(x, z, indexing="xy"), axis=-1)

    def cell_of(self, points) -> np.ndarray:
        """(N, 2) int (i, j) cell of each (x, z) or (x, y, z) point; may fall outside the grid."""
        p, _ = _plane_points(points, "points")
        j = np.floor((p[:, 0] - self.origin[0]) / self.resolution).astype(np.int64)
        i = np.floor((p[:, 1] - self.origin[1]) / self.resolution).astype(np.int64)
        return np.stack([i, j], axis=1)


class GoalDistance:
    """Geodesic distance to one goal, precomputed so that a query costs a few visibility tests per point.

    Calling it with (2,) / (3,) gives a float; with (N, 2) / (N, 3) it gives (N,) float64; inf when unreachable.
    The answer is exact (the same as `SceneGeometry.geodesic_distance`): the exact distance at the anchor point of
    the query's grid cell, which the query point sees, bounds the answer to a window of +-|p - anchor|, and only
    the corners whose distance falls in that window need a visibility test.
    """

    def __init__(self, geometry: SceneGeometry, goal):
        p, _ = _plane_points(goal, "goal")
        if len(p) != 1:
            raise ValueError(f"goal must be one point of shape (2,) or (3,), got {len(p)} points")
        self.geometry = geometry
        self.goal = geometry._snap(p)[0]  # (2,) x, z
        nodes = geometry._nodes
        seen = geometry._sees(self.goal, nodes)
        to_goal = np.where(seen, np.linalg.norm(nodes - self.goal, axis=1), np.inf)  # (N,)
        # node_dist[i]: from corner i to the goal, through the graph and a last straight leg.
        self.node_dist = (geometry._dist + to_goal[None, :]).min(axis=1) if len(nodes) else np.zeros(0)  # (N,)
        anchors = geometry._anchors
        direct = geometry._sees(self.goal, anchors)
        via = (geometry._anchor_len + self.node_dist[None, :]).min(axis=1) if len(nodes) else np.full(len(anchors),
                                                                                                         np.inf)
        self.anchor_dist = np.where(direct, np.linalg.norm(anchors - self.goal, axis=1), via)  # (P,)

    def __call__(self, points):
        p, single = _plane_points(points, "points")
        out = self._query(self.geometry._snap(p))
        return float(out[0]) if single else out

    def _query(self, p: np.ndarray) -> np.ndarray:
        """(M, 2) walkable points -> (M,) geodesic distances."""
        geo = self.geometry
        out = np.linalg.norm(p - self.goal, axis=1)
        rest = np.flatnonzero(_segments_blocked(p, np.broadcast_to(self.goal, p.shape), geo._rects))
        out[rest] = np.inf
        if len(rest) == 0 or not np.isfinite(self.node_dist).any():
            return out
        q = p[rest]
        nz, nx = geo._anchor_index.shape
        i = np.clip(np.floor(q[:, 1] / geo._cell).astype(np.int64), 0, nz - 1)
        j = np.clip(np.floor(q[:, 0] / geo._cell).astype(np.int64), 0, nx - 1)
        k = geo._anchor_index[i, j]  # (m,), -1 where the cell has no anchor
        anchor = geo._anchors[np.maximum(k, 0)] if len(geo._anchors) else q
        bound = self.anchor_dist[np.maximum(k, 0)] if len(geo._anchors) else np.full(len(q), np.inf)
        ok = (k >= 0) & np.isfinite(bound)
        ok[ok] = ~_segments_blocked(q[ok], anchor[ok], geo._rects)
        full = np.flatnonzero(~ok)
        rows = np.flatnonzero(ok)
        if len(rows):
            via = np.linalg.norm(q[rows, None, :] - geo._nodes[None], axis=-1) + self.node_dist[None, :]  # (m, N)
            gap = np.linalg.norm(q[rows] - anchor[rows], axis=1) + _WINDOW_SLACK
            lo, hi = (bound[rows] - gap)[:, None], (bound[rows] + gap)[:, None]
            cand = np.where((via >= lo) & (via <= hi), via, np.inf)
            width = max(int(np.isfinite(cand).sum(axis=1).max()), 1)
            order = np.argsort(cand, axis=1)[:, :width]  # (m, K) candidates, nearest value first
            valid = np.isfinite(np.take_along_axis(cand, order, axis=1))
            seen = np.zeros(valid.shape, dtype=bool)
            r_idx, c_idx = np.nonzero(valid)
            seen[r_idx, c_idx] = ~_segments_blocked(q[rows[r_idx]], geo._nodes[order[r_idx, c_idx]], geo._rects)
            found = seen.any(axis=1)
            first = seen.argmax(axis=1)
            out[rest[rows[found]]] = cand[found, order[found, first[found]]]
            full = np.concatenate([full, rows[~found]])  # cannot happen beyond rounding; answered exactly below
        if len(full):
            n = len(geo._nodes)
            seen = ~_segments_blocked(np.repeat(q[full], n, axis=0), np.tile(geo._nodes, (len(full), 1)),
                                      geo._rects).reshape(len(full), n)
            via = np.linalg.norm(q[full, None, :] - geo._nodes[None], axis=-1) + self.node_dist[None, :]
            out[rest[full]] = np.where(seen, via, np.inf).min(axis=1)
        return out


class SceneGeometry:
    """Collision, occupancy, geodesics and start/goal sampling for one Scene (see the module docstring)."""

    def __init__(self, scene: Scene, cfg: GeometryConfig | None = None):
        cfg = cfg or GeometryConfig()
        if cfg.radius <= 0 or cfg.body_height < 0 or cfg.nav_resolution <= 0 or cfg.max_height <= 0:
            raise ValueError(f"GeometryConfig needs radius > 0, body_height >= 0, nav_resolution > 0 and "
                             f"max_height > 0, got {cfg}")
        self.scene, self.cfg = scene, cfg
        self._lo = scene.h_lo.detach().cpu().double().numpy()  # (NZ, NX)
        self._hi = scene.h_hi.detach().cpu().double().numpy()
        self._lo_list, self._hi_list = self._lo.tolist(), self._hi.tolist()  # for the scalar per-step path
        self._cell = float(scene.cell)
        nz, nx = self._lo.shape
        self._size = (nx * self._cell, nz * self._cell)  # (W, L) metres along x, z
        r, bh = cfg.radius, cfg.body_height
        # Camera heights (metres above the floor) that keep the body between floor and ceiling.
        self._h_min = bh + r
        self._h_max = min(float(scene.ceiling), cfg.max_height) - r
        eye = float(scene.eye_height)
        if not (self._h_min <= eye <= self._h_max):
            raise ValueError(f"scene eye_height {eye} m must lie in [{self._h_min:.3f}, {self._h_max:.3f}] so a "
                             f"standing body (radius {r}, body_height {bh}) fits between floor and ceiling")
        if 2 * r > min(self._size):
            raise ValueError(f"the grid ({self._size[0]} x {self._size[1]} m) is narrower than the body "
                             f"(diameter {2 * r} m)")
        # Every span as a box: cell bounds in x and z, heights in [lo, hi].
        ii, jj = np.nonzero(self._hi > self._lo)
        self._spans = np.stack([jj * self._cell, ii * self._cell, (jj + 1) * self._cell, (ii + 1) * self._cell,
                                self._lo[ii, jj], self._hi[ii, jj]], axis=1)  # (S, 6) x0 z0 x1 z1 lo hi

        # Walkable floor for a standing agent: grid box minus inflated obstacle rectangles.
        r_nav = r / math.sqrt(2.0)
        blocks = (self._hi > self._lo) & (self._lo < eye + r) & (self._hi > eye - bh - r)  # (NZ, NX)
        rects = _merge_cells(blocks) * self._cell + np.array([-r_nav, -r_nav, r_nav, r_nav])
        self._rects = rects  # (R, 4) x0 z0 x1 z1
        self._box = np.array([r_nav, r_nav, self._size[0] - r_nav, self._size[1] - r_nav])
        self._nodes, self._signs = self._corner_nodes()  # (N, 2), (N, 2)
        self._adj = self._visibility_graph()  # (N, N) edge lengths, inf where no edge
        self._dist = _all_pairs(self._adj)  # (N, N)
        self._anchor_index, self._anchors, self._anchor_len = self._make_anchors(blocks)

        self._occupancy = self._make_occupancy()
        self._home = None  # distance field to a point of the reachable region, for sampling
        rows, cols = np.nonzero(self._occupancy.reachable)
        if len(rows):
            centre = self._occupancy.centres()[rows[len(rows) // 2], cols[len(rows) // 2]]
            self._home = GoalDistance(self, centre)
        self._reach_cells = np.stack([rows, cols], axis=1)  # (F, 2) cells that sampling draws from

    # ------------------------------------------------------------------ collision

    def is_free(self, points) -> np.ndarray:
        """(N, 3) or (3,) camera positions -> (N,) or () bool: body inside the grid and the height range, no span."""
        p = _to_numpy(points)
        if p.shape[-1:] != (3,) or p.ndim not in (1, 2):
            raise ValueError(f"points must have shape (N, 3) or (3,) (camera positions x, y, z), got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("points contain NaN or Inf")
        single = p.ndim == 1
        if single:
            return self._is_free_point(float(p[0]), float(-p[1]), float(p[2]))
        p = p.reshape(-1, 3)
        r, bh, c = self.cfg.radius, self.cfg.body_height, self._cell
        x, hc, z = p[:, 0], -p[:, 1], p[:, 2]
        tol = 1e-9
        ok = ((hc >= self._h_min - tol) & (hc <= self._h_max + tol) & (x >= r - tol) & (x <= self._size[0] - r + tol)
              & (z >= r - tol) & (z <= self._size[1] - r + tol))
        nz, nx = self._lo.shape
        i0 = np.floor((z - r) / c).astype(np.int64)
        j0 = np.floor((x - r) / c).astype(np.int64)
        k = int(math.ceil(2 * r / c)) + 1  # cells a disc of diameter 2r can touch per axis
        for di in range(k):
            for dj in range(k):
                i, j = i0 + di, j0 + dj
                inside = (i >= 0) & (i < nz) & (j >= 0) & (j < nx)
                ic, jc = np.clip(i, 0, nz - 1), np.clip(j, 0, nx - 1)
                lo, hi = self._lo[ic, jc], self._hi[ic, jc]
                span = inside & (hi > lo) & (lo < hc + r) & (hi > hc - bh - r)
                ex = np.maximum(np.maximum(j * c - x, x - (j + 1) * c), 0.0)
                ez = np.maximum(np.maximum(i * c - z, z - (i + 1) * c), 0.0)
                ok &= ~(span & (ex * ex + ez * ez < r * r))
        return ok[0] if single else ok

    def _is_free_point(self, x: float, hc: float, z: float) -> bool:
        """`is_free` for one camera (x, height, z) in plain floats: the per-step path, without array overhead."""
        r, bh, c, tol = self.cfg.radius, self.cfg.body_height, self._cell, 1e-9
        if not (self._h_min - tol <= hc <= self._h_max + tol and r - tol <= x <= self._size[0] - r + tol
                and r - tol <= z <= self._size[1] - r + tol):
            return False
        nz, nx = self._lo.shape
        i0, j0 = math.floor((z - r) / c), math.floor((x - r) / c)
        k = int(math.ceil(2 * r / c)) + 1
        for i in range(max(i0, 0), min(i0 + k, nz)):
            for j in range(max(j0, 0), min(j0 + k, nx)):
                lo, hi = self._lo_list[i][j], self._hi_list[i][j]
                if hi > lo and lo < hc + r and hi > hc - bh - r:
                    ex = max(j * c - x, x - (j + 1) * c, 0.0)
                    ez = max(i * c - z, z - (i + 1) * c, 0.0)
                    if ex * ex + ez * ez < r * r:
                        return False
        return True

    def move(self, c2w_from, c2w_to) -> tuple[np.ndarray, bool]:
        """Move the camera from one pose toward another; returns (c2w (4, 4) float64, collided).

        The rotation of c2w_to is always taken. The translation is swept: if the body would touch a span or leave
        the grid, it stops just before first contact and collided is True. The camera height is clamped so the
        body stays between floor and ceiling (clamping also counts as collided). A start pose already in
        collision cannot translate.
        """
        a = _pose(c2w_from, "c2w_from")
        b = _pose(c2w_to, "c2w_to")
        p0, p1 = a[:3, 3].copy(), b[:3, 3].copy()
        collided = False
        for p in (p0, p1):
            h = min(max(-p[1], self._h_min), self._h_max)
            collided |= h != -p[1]
            p[1] = -h
        out = b.copy()
        if not self.is_free(p0):
            out[:3, 3] = p0
            return out, True
        length = float(np.linalg.norm(p1 - p0))
        t = self._first_contact(p0, p1)
        if t < 1.0 and length > 0.0:
            collided = True
            back = _BACK_OFF / length
            t_stop = max(t - back, 0.0)
            while t_stop > 0.0 and not self.is_free(p0 + t_stop * (p1 - p0)):  # rounding near contact
                back *= 4.0
                t_stop = max(t - back, 0.0)
            p1 = p0 + t_stop * (p1 - p0)
        out[:3, 3] = p1
        return out, collided

    def move_batch(self, c2w_from, c2w_to) -> tuple[np.ndarray, np.ndarray]:
        """`move` for (B, 4, 4) pose stacks; returns ((B, 4, 4) float64, (B,) bool collided)."""
        a, b = _to_numpy(c2w_from), _to_numpy(c2w_to)
        if a.ndim != 3 or a.shape[1:] != (4, 4) or b.shape != a.shape:
            raise ValueError(f"c2w_from and c2w_to must both have shape (B, 4, 4), got {a.shape} and {b.shape}")
        out = np.empty_like(a)
        hit = np.zeros(len(a), dtype=bool)
        for n in range(len(a)):
            out[n], hit[n] = self.move(_pose(a[n], f"c2w_from[{n}]"), _pose(b[n], f"c2w_to[{n}]"))
        return out, hit

    def _first_contact(self, p0: np.ndarray, p1: np.ndarray) -> float:
        """Fraction of the way from p0 to p1 (free, height-clamped camera positions) where the body first touches
        a span or the grid edge; inf when the whole segment is free."""
        r, bh = self.cfg.radius, self.cfg.body_height
        x0, z0, h0 = p0[0], p0[2], -p0[1]
        dx, dz, dh = p1[0] - x0, p1[2] - z0, -(p1[1] - p0[1])
        t = math.inf
        for c, dc, size in ((x0, dx, self._size[0]), (z0, dz, self._size[1])):
            if dc > 0:
                t = min(t, (size - r - c) / dc)
            elif dc < 0:
                t = min(t, (r - c) / dc)
        s = self._spans
        hmin, hmax = min(h0, h0 + dh), max(h0, h0 + dh)
        near = ((s[:, 2] > min(x0, x0 + dx) - r) & (s[:, 0] < max(x0, x0 + dx) + r)
                & (s[:, 3] > min(z0, z0 + dz) - r) & (s[:, 1] < max(z0, z0 + dz) + r)
                & (s[:, 4] < hmax + r) & (s[:, 5] > hmin - bh - r))
        s = s[near]  # (K, 6)
        if len(s) == 0:
            return t
        sx0, sz0, sx1, sz1, lo, hi = s.T
        # The open set of centres within r of the cell: two grown boxes and four corner discs; it is convex, so
        # the line meets it in one interval, the hull of the pieces' intervals (empty pieces are (inf, -inf)).
        a_in, a_out = _box_interval(x0, dx, sx0 - r, sx1 + r, z0, dz, sz0, sz1)
        b_in, b_out = _box_interval(x0, dx, sx0, sx1, z0, dz, sz0 - r, sz1 + r)
        t_in, t_out = np.minimum(a_in, b_in), np.maximum(a_out, b_out)
        for cx, cz in ((sx0, sz0), (sx0, sz1), (sx1, sz0), (sx1, sz1)):
            c_in, c_out = _disc_interval(x0 - cx, z0 - cz, dx, dz, r)
            t_in, t_out = np.minimum(t_in, c_in), np.maximum(t_out, c_out)
        v_in, v_out = _slab(h0, dh, lo - r, hi + bh + r)  # heights where the body overlaps the span
        enter, leave = np.maximum(t_in, v_in), np.minimum(t_out, v_out)
        hit = (enter < leave) & (leave > 0.0) & (enter < 1.0)
        if hit.any():
            t = min(t, max(float(enter[hit].min()), 0.0))
        return t

    # ------------------------------------------------------------------ occupancy and sampling

    def occupancy(self) -> OccupancyGrid:
        """The floor grid at nav_resolution (free where a standing agent centred at the cell fits)."""
        return self._occupancy

    def _make_occupancy(self) -> OccupancyGrid:
        res = self.cfg.nav_resolution
        w = int(math.ceil(self._size[0] / res - 1e-9))
        h = int(math.ceil(self._size[1] / res - 1e-9))
        x = (np.arange(w) + 0.5) * res
        z = (np.arange(h) + 0.5) * res
        xx, zz = np.meshgrid(x, z, indexing="xy")  # (H, W)
        pts = np.stack([xx.ravel(), np.full(xx.size, -float(self.scene.eye_height)), zz.ravel()], axis=1)
        free = self.is_free(pts).reshape(h, w)
        return OccupancyGrid(free=free, reachable=_largest_component(free), origin=(0.0, 0.0), resolution=res)

    def sample_free_position(self, rng: np.random.Generator) -> np.ndarray:
        """(3,) a free camera position at eye height, uniform over the largest reachable region."""
        if self._home is None:
            raise RuntimeError(f"{self._name()}: no free floor cell for a standing agent (radius {self.cfg.radius})")
        occ, eye = self._occupancy, float(self.scene.eye_height)
        for _ in range(1000):
            i, j = self._reach_cells[int(rng.integers(len(self._reach_cells)))]
            p = np.array([occ.origin[0] + (j + rng.random()) * occ.resolution, -eye,
                          occ.origin[1] + (i + rng.random()) * occ.resolution])
            if self.is_free(p) and np.isfinite(self._home(p)):
                return p
        raise RuntimeError(f"{self._name()}: no free reachable position found in 1000 draws")

    def sample_start_goal(self, rng: np.random.Generator, min_geodesic: float = 1.0, max_geodesic: float = math.inf,
                          max_tries: int = 200) -> tuple[np.ndarray, np.ndarray, float]:
        """A start c2w (4, 4) float64 with random yaw and a level horizon, a goal position (3,) and their geodesic
        distance, which lies in [min_geodesic, max_geodesic]; both positions are free and at eye height."""
        if not (0.0 <= min_geodesic <= max_geodesic) or max_tries < 1:
            raise ValueError(f"need 0 <= min_geodesic <= max_geodesic and max_tries >= 1, got min_geodesic="
                             f"{min_geodesic}, max_geodesic={max_geodesic}, max_tries={max_tries}")
        for _ in range(max_tries):
            start = self.sample_free_position(rng)
            goal = self.sample_free_position(rng)
            d = self.geodesic_distance(start, goal)
            if min_geodesic <= d <= max_geodesic:
                return pose(start, yaw=float(rng.uniform(-math.pi, math.pi))), goal, d
        raise RuntimeError(f"{self._name()}: no start/goal pair with geodesic distance in [{min_geodesic}, "
                           f"{max_geodesic}] m found in {max_tries} tries")

    def _name(self) -> str:
        return f"{self.scene.family} scene (seed {self.scene.seed})"

    # ------------------------------------------------------------------ geodesics

    @property
    def nav_obstacles(self) -> np.ndarray:
        """(R, 4) inflated obstacle rectangles (x0, z0, x1, z1) that geodesic paths avoid (open interiors)."""
        return self._rects.copy()

    @property
    def nav_bounds(self) -> np.ndarray:
        """(4,) the walkable box (x0, z0, x1, z1) inside the grid edge."""
        return self._box.copy()

    def geodesic_distance(self, a, b):
        """Shortest walkable path length on the floor plane between a and b: (2,) (x, z) or (3,) positions (y is
        ignored), or (N, 2) / (N, 3) stacks (one side may be a single point). float for two single points, else
        (N,) float64; inf when unreachable. Points inside an obstacle are first moved to the nearest walkable point.
        """
        pa, sa = _plane_points(a, "a")
        pb, sb = _plane_points(b, "b")
        if len(pa) != len(pb) and 1 not in (len(pa), len(pb)):
            raise ValueError(f"a and b must hold the same number of points or one point, got {len(pa)} and {len(pb)}")
        if len(pb) == 1 and len(pa) > 4:
            out = self.distance_field_to(pb[0])._query(self._snap(pa))
        elif len(pa) == 1 and len(pb) > 4:
            out = self.distance_field_to(pa[0])._query(self._snap(pb))
        else:
            pa, pb = np.broadcast_arrays(self._snap(pa), self._snap(pb))
            out = np.array([self._pair_distance(u, v) for u, v in zip(pa, pb)])
        return float(out[0]) if sa and sb else out

    def _pair_distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Geodesic between two walkable points (2,): straight if they see each other, else through the graph."""
        if not _segments_blocked(a[None], b[None], self._rects)[0]:
            return float(np.linalg.norm(a - b))
        nodes = self._nodes
        if len(nodes) == 0:
            return math.inf
        da = np.where(self._sees(a, nodes), np.linalg.norm(nodes - a, axis=1), np.inf)  # (N,)
        db = np.where(self._sees(b, nodes), np.linalg.norm(nodes - b, axis=1), np.inf)
        return float((da[:, None] + self._dist + db[None, :]).min())

    def distance_field_to(self, goal) -> GoalDistance:
        """Precompute the geodesic distance to `goal` ((2,) or (3,)); call the result with points."""
        return GoalDistance(self, goal)

    def shortest_path(self, a, b) -> np.ndarray:
        """(K, 2) waypoints (x, z) from a to b inclusive (after moving each to the nearest walkable point); (0, 2)
        when b is unreachable from a."""
        pa, sa = _plane_points(a, "a")
        pb, sb = _plane_points(b, "b")
        if not (sa and sb):
            raise ValueError(f"shortest_path takes two single points, got a {np.shape(a)} and b {np.shape(b)}")
        a2, b2 = self._snap(np.concatenate([pa, pb]))
        if not _segments_blocked(a2[None], b2[None], self._rects)[0]:
            return np.stack([a2, b2])
        nodes = self._nodes
        if len(nodes) == 0:
            return np.zeros((0, 2))
        da = np.where(self._sees(a2, nodes), np.linalg.norm(nodes - a2, axis=1), np.inf)
        db = np.where(self._sees(b2, nodes), np.linalg.norm(nodes - b2, axis=1), np.inf)
        total = da[:, None] + self._dist + db[None, :]  # (N, N)
        i, j = np.unravel_index(np.argmin(total), total.shape)
        if not np.isfinite(total[i, j]):
            return np.zeros((0, 2))
        hops = [i]
        while hops[-1] != j and len(hops) <= len(nodes):
            hops.append(int(np.argmin(self._adj[hops[-1]] + self._dist[:, j])))
        return np.concatenate([a2[None], nodes[hops], b2[None]])

    def _sees(self, p: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(K,) bool: the straight segment from p (2,) to each target (K, 2) stays walkable."""
        return ~_segments_blocked(np.broadcast_to(p, targets.shape), targets, self._rects)

    def _snap(self, p: np.ndarray) -> np.ndarray:
        """(M, 2) -> (M, 2): points moved into the walkable box and out of inflated obstacles (nearest side)."""
        box = self._box
        p = np.clip(p, box[:2], box[2:])
        r = self._rects
        inside = _inside_rects(p, r)  # (M, R)
        for m in np.flatnonzero(inside.any(axis=1)):
            x, z = p[m]
            cands = []
            for x0, z0, x1, z1 in r[inside[m]]:
                cands += [(x0 - _SNAP_EPS, z), (x1 + _SNAP_EPS, z), (x, z0 - _SNAP_EPS), (x, z1 + _SNAP_EPS)]
            cands = np.clip(np.array(cands), box[:2], box[2:])
            cands = np.concatenate([cands, self._nodes])
            ok = ~_inside_rects(cands, r).any(axis=1)
            if ok.any():
                cands = cands[ok]
                p[m] = cands[np.argmin(np.linalg.norm(cands - p[m], axis=1))]
        return p

    def _make_anchors(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One anchor per walkable grid cell (its centre) with its straight distance to every visible corner.

        A point in the cell sees the centre whenever r_nav < cell / 2 (inflated obstacles then reach only the
        cell's rim), which lets `GoalDistance` bound a query by the anchor's exact distance; queries that do not
        see their anchor fall back to testing every corner. Returns the (NZ, NX) anchor index
        (-1 where none), the (P, 2) anchors and (P, N) corner distances (inf where hidden).
        """
        ii, jj = np.nonzero(~blocks)
        pts = np.stack([(jj + 0.5) * self._cell, (ii + 0.5) * self._cell], axis=1)  # (P, 2)
        box = self._box
        keep = np.all((pts > box[:2]) & (pts < box[2:]), axis=1) & ~_inside_rects(pts, self._rects).any(axis=1)
        ii, jj, pts = ii[keep], jj[keep], pts[keep]
        index = np.full(blocks.shape, -1, dtype=np.int64)
        index[ii, jj] = np.arange(len(pts))
        n = len(self._nodes)
        length = np.linalg.norm(pts[:, None, :] - self._nodes[None, :, :], axis=-1)  # (P, N)
        seen = ~_segments_blocked(np.repeat(pts, n, axis=0), np.tile(self._nodes, (len(pts), 1)),
                                  self._rects).reshape(len(pts), n)
        return index, pts, np.where(seen, length, np.inf)

    def _corner_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Rectangle corners nudged diagonally outward, kept when walkable: the only places shortest paths bend.

        Returns (N, 2) positions and (N, 2) outward signs (sx, sz)."""
        r = self._rects
        signs = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
        xs = np.where(signs[None, :, 0] < 0, r[:, None, 0], r[:, None, 2])  # (R, 4)
        zs = np.where(signs[None, :, 1] < 0, r[:, None, 1], r[:, None, 3])
        pts = np.stack([xs, zs], axis=-1).reshape(-1, 2) + np.tile(signs, (len(r), 1)) * _CORNER_EPS
        sgn = np.tile(signs, (len(r), 1))
        box = self._box
        keep = np.all((pts > box[:2]) & (pts < box[2:]), axis=1) & ~_inside_rects(pts, r).any(axis=1)
        pts, sgn = pts[keep], sgn[keep]
        _, first = np.unique(np.round(pts / _CORNER_EPS).astype(np.int64), axis=0, return_index=True)
        first = np.sort(first)
        return pts[first], sgn[first]

    def _visibility_graph(self) -> np.ndarray:
        """(N, N) straight-edge lengths between mutually visible corners, inf elsewhere.

        Only edges tangent to the obstacle at both ends can lie on a shortest path: a line through a convex
        corner must not enter the obstacle's quadrant there, which is (d . sx) * (d . sz) <= 0 for direction d.
        """
        n = len(self._nodes)
        adj = np.full((n, n), np.inf)
        if n < 2:
            return adj
        iu, ju = np.triu_indices(n, 1)
        d = self._nodes[ju] - self._nodes[iu]  # (P, 2)
        tangent = ((d * self._signs[iu]).prod(axis=1) <= 0) & ((d * self._signs[ju]).prod(axis=1) <= 0)
        iu, ju = iu[tangent], ju[tangent]
        clear = ~_segments_blocked(self._nodes[iu], self._nodes[ju], self._rects)
        iu, ju = iu[clear], ju[clear]
        length = np.linalg.norm(self._nodes[ju] - self._nodes[iu], axis=1)
        adj[iu, ju] = length
        adj[ju, iu] = length
        return adj


# ---------------------------------------------------------------------- helpers (pure functions)


_EYE3 = np.eye(3)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pose(c2w, name: str) -> np.ndarray:
    """A validated camera-to-world (4, 4) float64 copy; ValueError names the problem."""
    a = _to_numpy(c2w)
    if a.shape != (4, 4):
        raise ValueError(f"{name} must be a (4, 4) camera-to-world matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf: {a.tolist()}")
    if abs(a[3, 0]) > 1e-6 or abs(a[3, 1]) > 1e-6 or abs(a[3, 2]) > 1e-6 or abs(a[3, 3] - 1.0) > 1e-6:
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    rot = a[:3, :3]
    err = float(np.abs(rot @ rot.T - _EYE3).max())
    (a0, a1, a2), (b0, b1, b2), (c0, c1, c2) = rot.tolist()
    det = a0 * (b1 * c2 - b2 * c1) - a1 * (b0 * c2 - b2 * c0) + a2 * (b0 * c1 - b1 * c0)
    if err > 1e-3 or det < 0:
        raise ValueError(f"{name} rotation must be orthonormal with det +1, got |R R^T - I| = {err:.3g}, "
                         f"det = {det:.3g}")
    return a.copy()


def _plane_points(x, name: str) -> tuple[np.ndarray, bool]:
    """(2,) / (3,) / (N, 2) / (N, 3) positions -> ((M, 2) float64 (x, z), whether one point was given)."""
    p = _to_numpy(x)
    if p.ndim not in (1, 2) or p.shape[-1] not in (2, 3) or (p.ndim == 2 and len(p) == 0):
        raise ValueError(f"{name} must have shape (2,) (x, z), (3,) (x, y, z), (N, 2) or (N, 3), got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or Inf")
    single = p.ndim == 1
    p = p.reshape(-1, p.shape[-1])
    return (p[:, [0, 2]] if p.shape[1] == 3 else p.copy()), single


def _slab(c, dc, lo, hi):
    """Interval of t where c + t*dc lies in the open range (lo, hi); (inf, -inf) when empty. Scalars c, dc."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if dc == 0.0:
        inside = (lo < c) & (c < hi)
        return np.where(inside, -np.inf, np.inf), np.where(inside, np.inf, -np.inf)
    t1, t2 = (lo - c) / dc, (hi - c) / dc
    return np.minimum(t1, t2), np.maximum(t1, t2)


def _box_interval(x0, dx, bx0, bx1, z0, dz, bz0, bz1):
    """Interval of t where (x0, z0) + t*(dx, dz) lies in the open boxes (bx0, bx1) x (bz0, bz1); (K,) each."""
    ax, bx = _slab(x0, dx, bx0, bx1)
    az, bz = _slab(z0, dz, bz0, bz1)
    t_in, t_out = np.maximum(ax, az), np.minimum(bx, bz)
    empty = t_in >= t_out
    return np.where(empty, np.inf, t_in), np.where(empty, -np.inf, t_out)


def _disc_interval(ox, oz, dx, dz, r):
    """Interval of t where (ox, oz) + t*(dx, dz) (relative to a disc centre) lies in the open disc of radius r."""
    a = dx * dx + dz * dz
    c = ox * ox + oz * oz - r * r
    if a == 0.0:
        return np.where(c < 0, -np.inf, np.inf), np.where(c < 0, np.inf, -np.inf)
    b = 2.0 * (dx * ox + dz * oz)
    disc = b * b - 4.0 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    hit = disc > 0
    return np.where(hit, (-b - root) / (2 * a), np.inf), np.where(hit, (-b + root) / (2 * a), -np.inf)


def _inside_rects(p: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(M, 2) points, (R, 4) rectangles -> (M, R) bool: strictly inside the (slightly shrunk) open rectangle."""
    lo, hi = rects[None, :, :2] + _VIS_TOL, rects[None, :, 2:] - _VIS_TOL
    q = p[:, None, :]
    return np.all((q > lo) & (q < hi), axis=-1)


def _segments_blocked(p: np.ndarray, q: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(M,) bool: does segment p[m] -> q[m] pass through the open interior of any rectangle? p, q (M, 2).

    Separating axes of a segment and a box are x, z and the segment's normal; they overlap (open) on all three
    iff the segment enters the interior. Segments that only graze a side are clear. Vectorised in chunks.
    """
    m = len(p)
    out = np.zeros(m, dtype=bool)
    if m == 0 or len(rects) == 0:
        return out
    lo, hi = rects[:, :2] + _VIS_TOL, rects[:, 2:] - _VIS_TOL  # (R, 2)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    chunk = max(1, (1 << 18) // len(rects))
    for s in range(0, m, chunk):
        a, b = p[s:s + chunk], q[s:s + chunk]  # (m, 2)
        low, high, d = np.minimum(a, b), np.maximum(a, b), b - a
        hit = ((low[:, None, 0] < hi[None, :, 0]) & (high[:, None, 0] > lo[None, :, 0])
               & (low[:, None, 1] < hi[None, :, 1]) & (high[:, None, 1] > lo[None, :, 1]))  # (m, R)
        c = d[:, None, 0] * (centre[None, :, 1] - a[:, None, 1]) - d[:, None, 1] * (centre[None, :, 0] - a[:, None, 0])
        e = np.abs(d[:, None, 1]) * half[None, :, 0] + np.abs(d[:, None, 0]) * half[None, :, 1]
        out[s:s + chunk] = (hit & (np.abs(c) < e)).any(axis=1)
    return out


def _merge_cells(mask: np.ndarray) -> np.ndarray:
    """(NZ, NX) bool -> (R, 4) float rectangles (j0, i0, j1, i1) in cell units covering exactly the True cells:
    row runs, each stacked downward while the rows below repeat it."""
    rects, active = [], {}  # active: (j0, j1) -> first row
    nz = mask.shape[0]
    for i in range(nz + 1):
        runs = set()
        if i < nz:
            edges = np.flatnonzero(np.diff(np.concatenate([[0], mask[i].astype(np.int8), [0]])))
            runs = {(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])}
        for run in list(active):
            if run not in runs:
                rects.append((run[0], active.pop(run), run[1], i))
        for run in runs:
            active.setdefault(run, i)
    return np.array(sorted(rects), dtype=np.float64).reshape(-1, 4)


def _all_pairs(adj: np.ndarray) -> np.ndarray:
    """Floyd-Warshall over an (N, N) symmetric edge-length matrix (inf = no edge)."""
    d = adj.copy()
    np.fill_diagonal(d, 0.0)
    for k in range(len(d)):
        np.minimum(d, d[:, k, None] + d[None, k, :], out=d)
    return d


def _largest_component(free: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: the largest 4-connected True region, by union-find over row runs."""
    h, w = free.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = free
    step = np.diff(padded, axis=1)  # (H, W + 1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)  # row-major order pairs each start with its end
    if len(rows) == 0:
        return np.zeros_like(free)
    parent = list(range(len(rows)))

    def root(u: int) -> int:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    first = np.searchsorted(rows, np.arange(h + 1))
    st, en = starts.tolist(), ends.tolist()
    for i in range(h - 1):
        a, a_end, b, b_end = first[i], first[i + 1], first[i + 1], first[i + 2]
        while a < a_end and b < b_end:
            if st[a] < en[b] and st[b] < en[a]:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if en[a] < en[b]:
                a += 1
            else:
                b += 1
    label = np.array([root(u) for u in range(len(rows))])
    size = np.bincount(label, weights=ends - starts)
    main = label == np.argmax(size)
    out = np.zeros_like(free)
    for i, s, e in zip(rows[main], starts[main], ends[main]):
        out[i, s:e] = True
    return out
