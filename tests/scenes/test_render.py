"""Renderer: geometry round trips, depth, determinism, batching, bad input, and compiled vs eager."""

import math

import numpy as np
import pytest
import torch

from sanawm_env.scenes import RenderConfig, Renderer, intrinsics_from_fov, make_scene, pose
from sanawm_env.scenes.poses import apply_local_delta
from sanawm_env.scenes.simple import box_room

SIZE = 48
K = intrinsics_from_fov(SIZE, SIZE, 90.0)


def _room_centre(scene):
    i0, j0, i1, j1 = scene.rooms[0]
    return np.array([(j0 + j1) / 2 * scene.cell, -scene.eye_height, (i0 + i1) / 2 * scene.cell])


@pytest.fixture(scope="module", params=["indoor", "outdoor"])
def scene(request):
    return make_scene(request.param, 5)


def test_full_turn_in_steps_returns_first_frame_exactly(scene):
    """Compose 36 yaw deltas of 10 degrees (the env's integration path) and compare frame 0 with frame 36."""
    r = Renderer(scene, RenderConfig(SIZE, SIZE))
    c2w = pose(_room_centre(scene), yaw=0.3, pitch=-0.1)
    poses = [c2w]
    for _ in range(36):
        poses.append(apply_local_delta(poses[-1], np.array([0, 0, 0, 0, math.radians(10.0), 0])))
    out = r.render(torch.tensor(np.stack([poses[0], poses[18], poses[36]])), K)
    assert torch.equal(out.rgb[0], out.rgb[2])
    assert torch.equal(out.depth[0], out.depth[2])
    assert not torch.equal(out.rgb[0], out.rgb[1])  # half a turn later the view differs


def test_forward_move_reduces_centre_depth_by_distance():
    room = box_room(nx=14, nz=14, cell=0.5)
    r = Renderer(room, RenderConfig(SIZE, SIZE))
    start = pose([3.5, -1.5, 2.0], yaw=0.0)
    moved = apply_local_delta(start, np.array([0, 0, 0.73, 0, 0, 0]))
    d = r.render(torch.tensor(np.stack([start, moved])), K).depth
    c = SIZE // 2
    wall_z = 13 * 0.5  # the far wall's inner face
    assert abs(float(d[0, c, c]) - (wall_z - 2.0)) < 1e-3
    assert abs(float(d[0, c, c] - d[1, c, c]) - 0.73) < 1e-3  # within one depth quantum (1 mm)


def test_floor_depth_looking_straight_down():
    room = box_room()
    r = Renderer(room, RenderConfig(SIZE, SIZE))
    d = r.render(torch.tensor(pose([3.0, -1.5, 3.0], pitch=-math.pi / 2)), K).depth
    assert abs(float(d[0, SIZE // 2, SIZE // 2]) - 1.5) < 1e-4


def test_box_top_seen_from_above_and_sky_depth_is_inf():
    room = box_room(box=(6, 6, 0.8))
    r = Renderer(room, RenderConfig(SIZE, SIZE))
    above = pose([6.5 * 0.5, -1.5, 6.5 * 0.5], pitch=-math.pi / 2)
    d = r.render(torch.tensor(above), K).depth
    assert abs(float(d[0, SIZE // 2, SIZE // 2]) - (1.5 - 0.8)) < 1e-4
    outdoor = make_scene("outdoor", 1)
    up = pose(_room_centre(outdoor), pitch=math.pi / 2)
    sky = Renderer(outdoor, RenderConfig(16, 16)).render(torch.tensor(up), intrinsics_from_fov(16, 16)).depth
    assert torch.isinf(sky).all()


@pytest.mark.parametrize("family", ["indoor", "outdoor"])
def test_same_seed_same_scene_and_frames(family):
    a, b, other = make_scene(family, 11), make_scene(family, 11), make_scene(family, 12)
    for name in ("h_lo", "h_hi", "side_mat", "wall_mat", "floor_mat", "materials", "sky", "atlas"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not (a.h_hi.shape == other.h_hi.shape and torch.equal(a.h_hi, other.h_hi))
    c2w = torch.tensor(pose(_room_centre(a), yaw=1.0))
    fa = Renderer(a, RenderConfig(SIZE, SIZE)).render(c2w, K).rgb
    fb = Renderer(b, RenderConfig(SIZE, SIZE)).render(c2w, K).rgb
    assert torch.equal(fa, fb)


def test_batch_of_mixed_scenes_equals_single_renders():
    scenes = [make_scene("indoor", 2), make_scene("outdoor", 2)]
    poses = torch.tensor(np.stack([pose(_room_centre(s), yaw=0.5) for s in scenes]))
    both = Renderer(scenes, RenderConfig(SIZE, SIZE)).render(poses, K, scene_index=[0, 1])
    for n, s in enumerate(scenes):
        one = Renderer(s, RenderConfig(SIZE, SIZE)).render(poses[n], K)
        assert torch.equal(both.rgb[n], one.rgb[0])
        assert torch.equal(both.depth[n], one.depth[0])


def test_outputs_shapes_dtypes_and_colour():
    scene = make_scene("indoor", 3)
    out = Renderer(scene, RenderConfig(24, 40, supersample=2)).render(
        torch.tensor(np.stack([pose(_room_centre(scene), yaw=a) for a in (0.0, 2.0)])), intrinsics_from_fov(40, 24))
    assert out.rgb.shape == (2, 24, 40, 3) and out.rgb.dtype == torch.uint8
    assert out.depth.shape == (2, 24, 40) and out.depth.dtype == torch.float32
    assert out.rgb.float().std() > 10  # textured, not a flat colour
    assert (out.depth > 0).all()


def test_intrinsics_per_camera_and_from_fov_agree():
    scene = box_room()
    c2w = torch.tensor(pose([3.0, -1.5, 3.0], yaw=0.2))
    r = Renderer(scene, RenderConfig(SIZE, SIZE))
    a = r.render(c2w, K).rgb
    b = r.render(c2w, K.unsqueeze(0)).rgb
    assert torch.equal(a, b)
    narrow = r.render(c2w, intrinsics_from_fov(SIZE, SIZE, 40.0)).rgb
    assert not torch.equal(a, narrow)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.eye(3), "shape"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), "orthonormal"),
        (np.zeros((0, 4, 4)), "no poses"),
    ],
)
def test_bad_pose_raises_value_error_naming_the_problem(bad, match):
    r = Renderer(box_room(), RenderConfig(8, 8))
    with pytest.raises(ValueError, match=match):
        r.render(bad, intrinsics_from_fov(8, 8))


def test_zero_size_image_and_bad_intrinsics_raise():
    with pytest.raises(ValueError, match="image size"):
        Renderer(box_room(), RenderConfig(0, 16))
    r = Renderer(box_room(), RenderConfig(8, 8))
    with pytest.raises(ValueError, match="intrinsics"):
        r.render(np.eye(4), torch.tensor([0.0, 1.0, 4.0, 4.0]))
    with pytest.raises(ValueError, match="scene_index"):
        r.render(np.eye(4), intrinsics_from_fov(8, 8), scene_index=[3])


@pytest.mark.slow
def test_compiled_renderer_matches_eager_reference():
    """The fused (torch.compile) march and shading against the eager reference, both scene families."""
    scenes = [make_scene("indoor", 4), make_scene("outdoor", 4)]
    rng = np.random.default_rng(0)
    poses, sidx = [], []
    for n, s in enumerate(scenes):
        for _ in range(6):
            p = _room_centre(s) + np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5)])
            poses.append(pose(p, yaw=rng.uniform(-3, 3), pitch=rng.uniform(-0.6, 0.6), roll=rng.uniform(-0.3, 0.3)))
            sidx.append(n)
    poses = torch.tensor(np.stack(poses))
    eager = Renderer(scenes, RenderConfig(SIZE, SIZE)).render(poses, K, sidx)
    fused = Renderer(scenes, RenderConfig(SIZE, SIZE, compile=True)).render(poses, K, sidx)
    diff = (eager.rgb.int() - fused.rgb.int()).abs()
    assert diff.float().mean() < 0.05 and (diff > 2).float().mean() < 1e-3
    finite = torch.isfinite(eager.depth)
    assert torch.equal(finite, torch.isfinite(fused.depth))
    assert torch.allclose(eager.depth[finite], fused.depth[finite], rtol=1e-4, atol=1e-4)
