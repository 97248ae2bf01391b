"""SceneGeometry: swept collisions, height clamps, occupancy, exact geodesics, sampling and bad input.

Collisions are checked against a brute-force oracle over every cell (body_clearance); geodesics against straight
lines, a hand-computed detour around a pillar, and an independent segment-vs-rectangle clipper.
"""

import functools
import math

import numpy as np
import pytest
import torch

from sanawm_env.scenes.geometry import GeometryConfig, OccupancyGrid, SceneGeometry
from sanawm_env.scenes.indoor import generate_indoor
from sanawm_env.scenes.outdoor import generate_outdoor
from sanawm_env.scenes.poses import apply_local_delta, pose
from sanawm_env.scenes.scene import SOLID, Scene, material

CFG = GeometryConfig()
R = CFG.radius
R_NAV = R / math.sqrt(2.0)
CASES = [("indoor", 0), ("indoor", 3), ("outdoor", 0), ("outdoor", 2)]


@functools.cache
def generated(family: str, seed: int) -> SceneGeometry:
    return SceneGeometry((generate_indoor if family == "indoor" else generate_outdoor)(seed))


def hand_made(nx: int = 16, nz: int = 12, cell: float = 0.5, ceiling: float = 2.8, blocks=()) -> Scene:
    """A walled room; blocks are (i0, j0, i1, j1, lo, hi) spans over half-open cell ranges."""
    h_lo, h_hi = torch.zeros(nz, nx), torch.zeros(nz, nx)
    h_hi[0, :] = h_hi[-1, :] = h_hi[:, 0] = h_hi[:, -1] = ceiling
    for i0, j0, i1, j1, lo, hi in blocks:
        h_lo[i0:i1, j0:j1], h_hi[i0:i1, j0:j1] = lo, hi
    zeros = torch.zeros(nz, nx, dtype=torch.int64)
    return Scene(family="indoor", seed=0, cell=cell, h_lo=h_lo, h_hi=h_hi, side_mat=zeros, wall_mat=zeros.clone(),
                 floor_mat=zeros.clone(), materials=torch.tensor([material(SOLID, (0.5, 0.5, 0.5))]),
                 ceiling=ceiling, ceiling_mat=0, outside_mat=0, sky=torch.zeros(16),
                 light=torch.tensor([0.0, -1.0, 0.0]), eye_height=1.5, far=40.0, rooms=[(1, 1, nz - 1, nx - 1)])


def body_clearance(scene: Scene, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over every cell: (M,) floor-plane distance from each camera position (M, 3) to the nearest span
    overlapping the body's heights, and (M,) distance to the grid edge."""
    lo, hi = scene.h_lo.double().numpy(), scene.h_hi.double().numpy()
    i, j = np.nonzero(hi > lo)
    c, hc = scene.cell, -pts[:, 1:2]
    overlaps = (lo[i, j][None] < hc + R) & (hi[i, j][None] > hc - CFG.body_height - R)  # (M, S)
    x, z = pts[:, 0:1], pts[:, 2:3]
    dx = np.maximum(np.maximum(j * c - x, x - (j + 1) * c), 0.0)
    dz = np.maximum(np.maximum(i * c - z, z - (i + 1) * c), 0.0)
    span = np.where(overlaps, np.hypot(dx, dz), np.inf).min(axis=1, initial=np.inf)
    w, length = scene.extent
    edge = np.minimum.reduce([pts[:, 0], w - pts[:, 0], pts[:, 2], length - pts[:, 2]])
    return span, edge


def swept_clear(scene: Scene, a: np.ndarray, b: np.ndarray, spacing: float = 0.005) -> bool:
    """The body keeps its radius from every span and the grid edge at dense samples of the segment a -> b."""
    n = max(2, int(np.linalg.norm(b - a) / spacing) + 2)
    pts = a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)
    span, edge = body_clearance(scene, pts)
    return bool((span >= R - 1e-6).all() and (edge >= R - 1e-6).all())


def crosses(p: np.ndarray, q: np.ndarray, rect: np.ndarray) -> bool:
    """Liang-Barsky: does segment p -> q (2,) enter the open interior of rect (x0, z0, x1, z1)?"""
    t0, t1, d = 0.0, 1.0, q - p
    for k in range(2):
        lo, hi = rect[k] + 1e-9, rect[k + 2] - 1e-9
        if d[k] == 0.0:
            if not lo < p[k] < hi:
                return False
        else:
            a, b = sorted(((lo - p[k]) / d[k], (hi - p[k]) / d[k]))
            t0, t1 = max(t0, a), min(t1, b)
    return t0 < t1


def forward(c2w: np.ndarray, metres: float) -> np.ndarray:
    return apply_local_delta(c2w, np.array([0.0, 0.0, metres, 0.0, 0.0, 0.0]))


# ---------------------------------------------------------------------- collision


def test_walking_into_a_wall_stops_at_the_radius():
    scene = hand_made()  # inner face of the +x wall at x = 15 * 0.5 = 7.5
    geo = SceneGeometry(scene)
    c2w = pose([2.0, -1.5, 3.0], yaw=math.pi / 2)  # looking along +x
    hits = []
    for _ in range(70):
        nxt, hit = geo.move(c2w, forward(c2w, 0.1))
        assert swept_clear(scene, c2w[:3, 3], nxt[:3, 3])
        assert nxt[0, 3] <= 7.5 - R + 1e-6
        c2w = nxt
        hits.append(hit)
    assert hits[-1] and not hits[0]
    gap = 7.5 - c2w[0, 3]
    assert R - 1e-6 <= gap <= R + 1e-2
    assert abs(c2w[2, 3] - 3.0) < 1e-9 and abs(c2w[1, 3] + 1.5) < 1e-9  # stopped on the line, not slid


@pytest.mark.parametrize("family,seed", CASES)
def test_walks_in_generated_scenes_stop_at_contact_and_never_cross(family, seed):
    geo = generated(family, seed)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        c2w = pose(geo.sample_free_position(rng), yaw=float(rng.uniform(-math.pi, math.pi)))
        for _ in range(400):
            nxt, hit = geo.move(c2w, forward(c2w, 0.3))
            assert swept_clear(geo.scene, c2w[:3, 3], nxt[:3, 3])
            c2w = nxt
            if hit:
                break
        assert hit, "a 120 m walk should reach a wall or the grid edge"
        span, edge = body_clearance(geo.scene, c2w[None, :3, 3])
        assert R - 1e-6 <= min(span[0], edge[0]) <= R + 1e-2  # stopped at contact, not short of it


def test_one_long_move_does_not_cross_the_first_wall():
    walls = [(1, 6, 11, 7, 0.0, 2.8), (1, 10, 11, 11, 0.0, 2.8), (1, 13, 11, 14, 0.0, 2.8)]
    scene = hand_made(nx=24, blocks=walls)  # first wall covers x in [3.0, 3.5]
    geo = SceneGeometry(scene)
    start = pose([1.5, -1.5, 3.0], yaw=math.pi / 2)
    end, hit = geo.move(start, forward(start, 10.0))
    assert hit
    assert 3.0 - R - 1e-2 <= end[0, 3] <= 3.0 - R + 1e-6
    assert swept_clear(scene, start[:3, 3], end[:3, 3])


@pytest.mark.parametrize("family,seed", CASES)
def test_long_moves_in_generated_scenes_never_tunnel(family, seed):
    geo = generated(family, seed)
    rng = np.random.default_rng(100 + seed)
    for _ in range(10):
        start = pose(geo.sample_free_position(rng), yaw=float(rng.uniform(-math.pi, math.pi)))
        end, hit = geo.move(start, forward(start, 10.0))
        assert swept_clear(geo.scene, start[:3, 3], end[:3, 3], spacing=0.01)
        if not hit:
            np.testing.assert_allclose(end, forward(start, 10.0), atol=1e-12)


def test_free_move_reaches_the_target_exactly():
    geo = SceneGeometry(hand_made())
    start = pose([2.0, -1.5, 2.0], yaw=0.2)
    target = pose([3.1, -1.4, 3.3], yaw=0.9, pitch=0.2, roll=-0.1)
    out, hit = geo.move(start, target)
    assert not hit
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, target)
    out_t, hit_t = geo.move(torch.tensor(start), torch.tensor(target))  # torch poses are accepted too
    np.testing.assert_array_equal(out_t, target)
    assert not hit_t


def test_rotation_is_taken_when_the_move_is_blocked():
    geo = SceneGeometry(hand_made())
    start = pose([7.0, -1.5, 3.0])
    target = pose([9.0, -1.5, 3.0], yaw=1.0, pitch=0.3)
    out, hit = geo.move(start, target)
    assert hit
    np.testing.assert_array_equal(out[:3, :3], target[:3, :3])
    assert out[0, 3] <= 7.5 - R + 1e-6


def test_height_is_clamped_between_floor_and_ceiling():
    geo = SceneGeometry(hand_made(ceiling=2.8))
    start = pose([3.0, -1.5, 3.0])
    up, hit_up = geo.move(start, pose([3.0, -10.0, 3.0]))
    down, hit_down = geo.move(start, pose([3.0, 0.5, 3.0]))
    assert hit_up and hit_down
    assert abs(-up[1, 3] - (2.8 - R)) < 1e-12
    assert abs(-down[1, 3] - (CFG.body_height + R)) < 1e-12
    outdoor = generated("outdoor", 0)
    p = outdoor.sample_free_position(np.random.default_rng(0))
    high, hit = outdoor.move(pose(p), pose(p + [0.0, -100.0, 0.0]))
    assert hit and abs(-high[1, 3] - (CFG.max_height - R)) < 1e-12


def test_door_lintel_is_walkable_under_but_blocks_a_raised_camera():
    # A wall across x in [4.0, 4.5] with a doorway (lintel from 2.1 m) over z in [2.5, 3.5].
    blocks = [(1, 8, 11, 9, 0.0, 2.8), (5, 8, 7, 9, 2.1, 2.8)]
    scene = hand_made(blocks=blocks)
    geo = SceneGeometry(scene)
    walk = pose([2.0, -1.5, 3.0], yaw=math.pi / 2)
    through, hit = geo.move(walk, forward(walk, 4.0))
    assert not hit and through[0, 3] > 4.5
    raised = pose([2.0, -2.3, 3.0], yaw=math.pi / 2)  # body top at 2.48 m, above the lintel's 2.1 m
    stopped, hit = geo.move(raised, forward(raised, 4.0))
    assert hit and 4.0 - R - 1e-2 <= stopped[0, 3] <= 4.0 - R + 1e-6
    assert swept_clear(scene, raised[:3, 3], stopped[:3, 3])


def test_move_batch_matches_single_moves():
    geo = generated("indoor", 0)
    rng = np.random.default_rng(5)
    starts = np.stack([pose(geo.sample_free_position(rng), yaw=float(rng.uniform(-3, 3))) for _ in range(6)])
    targets = np.stack([forward(c, 2.5) for c in starts])
    out, hit = geo.move_batch(torch.tensor(starts), targets)
    assert out.shape == (6, 4, 4) and hit.shape == (6,) and hit.dtype == bool
    for n in range(6):
        single, h = geo.move(starts[n], targets[n])
        np.testing.assert_array_equal(out[n], single)
        assert hit[n] == h


# ---------------------------------------------------------------------- geodesics


PILLAR = (5, 9, 7, 11, 0.0, 2.8)  # cells z in [2.5, 3.5], x in [4.5, 5.5]


def test_geodesic_is_euclidean_in_view_and_detours_round_a_pillar():
    geo = SceneGeometry(hand_made(blocks=[PILLAR]))
    rng = np.random.default_rng(0)
    a = np.stack([rng.uniform(0.8, 3.9, 30), rng.uniform(0.8, 5.2, 30)], axis=1)  # left of the pillar: all in view
    b = np.stack([rng.uniform(0.8, 3.9, 30), rng.uniform(0.8, 5.2, 30)], axis=1)
    np.testing.assert_allclose(geo.geodesic_distance(a, b), np.linalg.norm(a - b, axis=1), rtol=0, atol=1e-6)
    # Straight through the pillar's centre line: round two inflated corners.
    left, right = np.array([3.0, 3.0]), np.array([7.0, 3.0])
    detour = 2 * math.hypot(4.5 - R_NAV - 3.0, 0.5 + R_NAV) + 1.0 + 2 * R_NAV
    assert abs(geo.geodesic_distance(left, right) - detour) < 1e-3
    assert geo.geodesic_distance(left, right) > 4.0 + 0.05


@pytest.mark.parametrize("family,seed", CASES)
def test_geodesic_bounds_symmetry_and_paths(family, seed):
    geo = generated(family, seed)
    rng = np.random.default_rng(seed + 7)
    a = np.stack([geo.sample_free_position(rng) for _ in range(30)])
    b = np.stack([geo.sample_free_position(rng) for _ in range(30)])
    ab, ba = geo.geodesic_distance(a, b), geo.geodesic_distance(b, a)
    euclid = np.linalg.norm((a - b)[:, [0, 2]], axis=1)
    assert np.isfinite(ab).all()
    assert (ab >= euclid - 1e-6).all()
    np.testing.assert_allclose(ab, ba, rtol=0, atol=1e-6)
    rects, bounds = geo.nav_obstacles, geo.nav_bounds
    for n in range(10):
        path = geo.shortest_path(a[n], b[n])
        np.testing.assert_allclose(path[0], a[n, [0, 2]], atol=1e-12)
        np.testing.assert_allclose(path[-1], b[n, [0, 2]], atol=1e-12)
        assert abs(np.linalg.norm(np.diff(path, axis=0), axis=1).sum() - ab[n]) < 1e-6
        assert (path >= bounds[:2]).all() and (path <= bounds[2:]).all()
        for p, q in zip(path[:-1], path[1:]):
            assert not any(crosses(p, q, r) for r in rects)


@pytest.mark.parametrize("family,seed", CASES)
def test_distance_field_matches_pairwise_geodesics(family, seed):
    geo = generated(family, seed)
    rng = np.random.default_rng(seed + 11)
    goal = geo.sample_free_position(rng)
    field = geo.distance_field_to(goal)
    pts = np.stack([geo.sample_free_position(rng) for _ in range(40)])
    values = field(pts)
    assert values.shape == (40,)
    pairwise = np.array([geo.geodesic_distance(p, goal) for p in pts])
    np.testing.assert_allclose(values, pairwise, rtol=0, atol=1e-9)
    assert isinstance(field(pts[0]), float) and abs(field(pts[0]) - pairwise[0]) < 1e-9
    assert field(goal) == 0.0


def brute_force_geodesic(geo: SceneGeometry, a: np.ndarray, b: np.ndarray) -> float:
    """Dijkstra over every exact obstacle corner that is not strictly inside an obstacle, with every mutually
    visible pair as an edge (checked with `crosses`): the true shortest path in the closed walkable region."""
    rects, box = geo.nav_obstacles, geo.nav_bounds
    corners = [np.array([r[u], r[v]]) for r in rects for u in (0, 2) for v in (1, 3)]
    corners = [c for c in corners if (c >= box[:2]).all() and (c <= box[2:]).all()
               and not any((c > r[:2] + 1e-9).all() and (c < r[2:] - 1e-9).all() for r in rects)]
    pts = [a, b, *corners]
    dist = [math.inf] * len(pts)
    dist[0], todo = 0.0, set(range(len(pts)))
    while todo:
        u = min(todo, key=dist.__getitem__)
        todo.remove(u)
        if u == 1 or dist[u] == math.inf:
            break
        for v in todo:
            if not any(crosses(pts[u], pts[v], r) for r in rects):
                dist[v] = min(dist[v], dist[u] + float(np.linalg.norm(pts[v] - pts[u])))
    return dist[1]


def test_geodesic_matches_brute_force_in_a_cluttered_room():
    boxes = [(2, 3, 4, 5, 0.0, 0.75), (6, 6, 7, 9, 0.0, 0.95), (3, 10, 5, 11, 0.0, 1.8), (9, 2, 10, 4, 0.0, 0.45),
             (8, 12, 10, 14, 0.0, 0.75), (11, 8, 13, 9, 0.0, 1.8), (4, 15, 6, 17, 0.0, 0.95)]
    geo = SceneGeometry(hand_made(nx=20, nz=15, blocks=boxes))
    rng = np.random.default_rng(0)
    starts = [geo.sample_free_position(rng)[[0, 2]] for _ in range(12)]
    goals = [geo.sample_free_position(rng)[[0, 2]] for _ in range(12)]
    detours = 0
    for a, b in zip(starts, goals):
        exact = brute_force_geodesic(geo, a, b)
        ours = geo.geodesic_distance(a, b)
        assert exact - 1e-9 <= ours <= exact + 2e-3  # corner nodes sit 1e-4 outside the exact corners
        detours += exact > np.linalg.norm(a - b) + 1e-3
    assert detours >= 3  # the pairs do exercise paths that bend


def test_sealed_rooms_are_unreachable():
    geo = SceneGeometry(hand_made(blocks=[(1, 8, 11, 9, 0.0, 2.8)]))  # a full wall splits the room
    a, b = np.array([2.0, -1.5, 3.0]), np.array([6.0, -1.5, 3.0])
    assert geo.geodesic_distance(a, b) == math.inf
    assert geo.distance_field_to(b)(a) == math.inf
    assert geo.shortest_path(a, b).shape == (0, 2)
    assert geo.geodesic_distance(a, np.array([2.5, -1.5, 4.0])) == pytest.approx(math.hypot(0.5, 1.0), abs=1e-9)


def test_points_inside_obstacles_are_snapped_to_a_finite_answer():
    geo = SceneGeometry(hand_made(blocks=[PILLAR]))
    inside = np.array([5.0, 3.0])  # the pillar's centre
    d = geo.geodesic_distance(inside, np.array([2.0, 3.0]))
    assert math.isfinite(d) and d >= 3.0 - 0.5 - R_NAV - 1e-3


# ---------------------------------------------------------------------- occupancy and sampling


@pytest.mark.parametrize("family,seed", CASES)
def test_occupancy_agrees_with_is_free_and_blocks_walls(family, seed):
    geo = generated(family, seed)
    scene = geo.scene
    occ = geo.occupancy()
    assert isinstance(occ, OccupancyGrid)
    w, length = scene.extent
    assert occ.free.shape == (round(length / CFG.nav_resolution), round(w / CFG.nav_resolution))
    centres = occ.centres()  # (H, W, 2)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, occ.free.shape[0], 600)
    j = rng.integers(0, occ.free.shape[1], 600)
    pts = np.stack([centres[i, j, 0], np.full(600, -scene.eye_height), centres[i, j, 1]], axis=1)
    np.testing.assert_array_equal(occ.free[i, j], geo.is_free(pts))
    np.testing.assert_array_equal(occ.cell_of(pts), np.stack([i, j], axis=1))
    # Cells over a tall span (walls, buildings) are never free.
    lo, hi = scene.h_lo.numpy(), scene.h_hi.numpy()
    ci = (centres[..., 1] // scene.cell).astype(int)
    cj = (centres[..., 0] // scene.cell).astype(int)
    tall = (lo[ci, cj] == 0) & (hi[ci, cj] >= 2.0)
    assert tall.any() and not occ.free[tall].any()
    assert occ.reachable.any() and not (occ.reachable & ~occ.free).any()
    assert occ.reachable.sum() > 0.5 * occ.free.sum()


def test_occupancy_of_a_hand_made_room():
    scene = hand_made()
    occ = SceneGeometry(scene).occupancy()
    h, w = occ.free.shape
    assert occ.free[h // 2, w // 2]  # room centre
    assert not occ.free[:, :5].any() and not occ.free[:2].any()  # the wall ring (0.5 m) and the radius beside it
    assert occ.free[:, 7].sum() == h - 14  # 0.5 m of wall plus 0.18 m of radius at each end


@pytest.mark.parametrize("family,seed", CASES)
def test_sampling_is_deterministic_and_free(family, seed):
    geo = generated(family, seed)
    first = [geo.sample_free_position(np.random.default_rng(42)) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    rng = np.random.default_rng(1)
    pts = np.stack([geo.sample_free_position(rng) for _ in range(400)])
    assert geo.is_free(pts).all()
    np.testing.assert_array_equal(pts[:, 1], -geo.scene.eye_height)
    assert len(np.unique(pts, axis=0)) == 400
    start, goal, d = geo.sample_start_goal(np.random.default_rng(3), min_geodesic=2.0, max_geodesic=12.0)
    again = geo.sample_start_goal(np.random.default_rng(3), min_geodesic=2.0, max_geodesic=12.0)
    np.testing.assert_array_equal(start, again[0])
    np.testing.assert_array_equal(goal, again[1])
    assert 2.0 <= d <= 12.0 and d == again[2]
    assert abs(d - geo.geodesic_distance(start[:3, 3], goal)) < 1e-9
    assert geo.is_free(start[:3, 3]) and geo.is_free(goal)
    np.testing.assert_allclose(start[:3, 1], [0.0, 1.0, 0.0], atol=1e-12)  # level horizon: camera down = gravity


def test_many_samples_are_all_free():
    """Sampling draws a fine free cell, then a point inside it: the rare spots near a cell's edge that touch a span
    (about 1 in 800 draws) must be rejected."""
    geo = generated("indoor", 0)
    rng = np.random.default_rng(9)
    pts = np.stack([geo.sample_free_position(rng) for _ in range(4000)])
    assert geo.is_free(pts).all()
    assert np.isfinite(geo.distance_field_to(pts[0])(pts)).all()


def test_impossible_start_goal_constraint_names_scene_and_constraint():
    geo = SceneGeometry(hand_made())
    with pytest.raises(RuntimeError, match=r"indoor scene \(seed 0\).*\[50.0, inf\]"):
        geo.sample_start_goal(np.random.default_rng(0), min_geodesic=50.0, max_tries=5)


# ---------------------------------------------------------------------- bad input


def test_bad_input_raises_value_errors_that_name_the_problem():
    geo = SceneGeometry(hand_made())
    ok = pose([2.0, -1.5, 2.0])
    with pytest.raises(ValueError, match=r"c2w_from must be a \(4, 4\).*\(3, 4\)"):
        geo.move(ok[:3], ok)
    nan = ok.copy()
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match="c2w_to contains NaN"):
        geo.move(ok, nan)
    skew = ok.copy()
    skew[0, 1] = 0.5
    with pytest.raises(ValueError, match="orthonormal"):
        geo.move(ok, skew)
    with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
        geo.move_batch(np.stack([ok, ok]), ok[None])
    with pytest.raises(ValueError, match=r"c2w_to\[1\] contains NaN"):
        geo.move_batch(np.stack([ok, ok]), np.stack([ok, nan]))
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        geo.is_free(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        geo.is_free(np.array([np.nan, -1.5, 2.0]))
    with pytest.raises(ValueError, match="a contains NaN"):
        geo.geodesic_distance(np.array([np.nan, 1.0]), np.array([2.0, 2.0]))
    with pytest.raises(ValueError, match=r"b must have shape"):
        geo.geodesic_distance(np.array([1.0, 1.0]), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="radius"):
        SceneGeometry(hand_made(), GeometryConfig(radius=-0.1))
    with pytest.raises(ValueError, match="eye_height"):
        SceneGeometry(hand_made(), GeometryConfig(body_height=2.0))
