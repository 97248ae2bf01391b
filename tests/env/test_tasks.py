"""Tasks and measures on worlds with known geometry: PointNav reward / success / SPL by hand, stop semantics,
geodesics around an obstacle, ImageNav's goal image, Explore's coverage, and the measure dependency checks."""

import math

import numpy as np
import pytest

from sanawm_env.env import SanaWMEnv
from sanawm_env.scenes import pose
from sanawm_env.scenes.simple import box_room
from sanawm_env.tasks import MEASURES, Measure, Measurements, TaskConfig, floor_cells, make_task, register_measure

ROOM = box_room()                      # free floor x, z in [0.5, 5.5] m; agent radius 0.18
PILLAR = box_room(box=(5, 5, 2.8))     # a full-height 0.5 m pillar over x, z in [2.5, 3.0]
FORWARD = np.array([0, 0, 1, 0, 0, 0], np.float32)
TURN = np.array([0, 0, 0, 0, 1, 0], np.float32)


def nav(task="pointnav", scene=ROOM, **kw):
    return SanaWMEnv(task=task, scene=scene, **{"size": 32, "frames_per_step": 1, **kw})


def test_pointnav_straight_walk_by_hand():
    env = nav()
    obs, info = env.reset(seed=0, options={"start_pose": pose([1.0, -1.5, 1.0]), "goal": [1.0, 0.0, 3.0]})
    assert info["distance_to_goal"] == pytest.approx(2.0)
    assert obs["pointgoal"] == pytest.approx([2.0, 0.0])
    rewards = []
    for t in range(8):
        obs, r, term, trunc, info = env.step(FORWARD)
        rewards.append(r)
        assert term == (t == 7)
    assert rewards[:7] == pytest.approx([-0.01 + 0.25] * 7)
    assert rewards[7] == pytest.approx(-0.01 + 0.25 + 2.5)
    assert info["success"] == 1.0 and info["path_length"] == pytest.approx(2.0)
    assert info["spl"] == pytest.approx(1.0) and info["soft_spl"] == pytest.approx(1.0)
    assert info["distance_to_goal"] == pytest.approx(0.0, abs=1e-9)


def test_spl_and_soft_spl_after_a_detour():
    env = nav()
    env.reset(seed=0, options={"start_pose": pose([1.0, -1.5, 1.0]), "goal": [1.0, 0.0, 3.0]})
    for a in ([1, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0]):  # 0.5 m sideways and back first
        env.step(np.array(a, np.float32))
    for _ in range(8):
        _, _, term, _, info = env.step(FORWARD)
    assert term and info["success"] == 1.0
    assert info["spl"] == pytest.approx(2.0 / 2.5)  # l / max(p, l), p = 2.5 m
    assert info["soft_spl"] == pytest.approx(2.0 / 2.5)


def test_success_on_stop_and_stopping_short():
    env = nav(success_on="stop")
    env.reset(seed=0, options={"start_pose": pose([1.0, -1.5, 1.0]), "goal": [1.0, 0.0, 3.0]})
    for _ in range(8):
        _, _, term, _, info = env.step(FORWARD)
        assert not term  # at the goal, but no stop yet
    assert info["success"] == 0.0
    env.request_stop()
    obs, r, term, _, info = env.step(FORWARD)  # the stop step does not move
    assert term and info["success"] == 1.0 and info["path_length"] == pytest.approx(2.0)
    assert r == pytest.approx(-0.01 + 2.5)
    env.reset(seed=0, options={"start_pose": pose([1.0, -1.5, 1.0]), "goal": [1.0, 0.0, 3.0]})
    env.step(FORWARD)
    env.request_stop()
    _, _, term, _, info = env.step(np.zeros(6, np.float32))
    assert term and info["success"] == 0.0 and info["spl"] == 0.0
    assert info["soft_spl"] == pytest.approx(0.25 / 2.0)  # (1 - 1.75 / 2) * 2 / max(0.25, 2)


def test_geodesic_goes_around_the_pillar():
    env = nav(scene=PILLAR)
    _, info = env.reset(seed=0, options={"start_pose": pose([2.75, -1.5, 1.5]), "goal": [2.75, 0.0, 4.0]})
    assert info["distance_to_goal"] > 2.5 + 0.05  # the straight line runs through the pillar
    g = env.get_state().episode.geometry.geodesic_distance([2.75, 1.5], [2.75, 4.0])
    assert info["distance_to_goal"] == pytest.approx(g)


def test_pointgoal_angle_is_positive_to_the_right():
    env = nav()
    obs, _ = env.reset(seed=0, options={"start_pose": pose([1.0, -1.5, 1.0]), "goal": [3.0, 0.0, 1.0]})
    assert obs["pointgoal"] == pytest.approx([2.0, math.pi / 2])
    obs, _, _, _, _ = env.step(TURN)  # turning right brings the goal closer to straight ahead
    assert obs["pointgoal"][1] == pytest.approx(math.pi / 2 - math.radians(10), abs=1e-6)


def test_imagenav_goal_image_is_the_view_from_the_goal():
    env = nav(task="imagenav")
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"rgb", "goal_rgb"}
    goal_pose = env.get_state().episode.goal_pose
    obs2, _ = env.reset(seed=3, options={"start_pose": goal_pose, "goal": goal_pose})
    assert np.array_equal(obs2["rgb"], obs2["goal_rgb"])
    assert not np.array_equal(obs["rgb"], obs["goal_rgb"])


def test_explore_coverage_from_geometry():
    env = nav(task="explore", frames_per_step=2)
    _, info = env.reset(seed=0, options={"start_pose": pose([3.0, -1.5, 3.0])})
    # Looking level from 1.5 m with a 90 degree square view, the floor is seen from 1.5 m ahead to the wall 2.5 m
    # ahead: a trapezoid of about 2.5^2 - 1.5^2 = 4 m^2.
    assert 3.5 <= info["coverage"] <= 4.6
    total = info["coverage"]
    for _ in range(36):
        _, r, _, _, info = env.step(TURN)
        total += r
        assert r >= 0.0
    assert total == pytest.approx(info["coverage"])
    # A full turn sees the 5 x 5 m floor but the disc of radius 1.5 m under the camera: 25 - 7.07 m^2.
    assert info["coverage"] == pytest.approx(25.0 - math.pi * 1.5**2, abs=1.5)
    gained = sum(env.step(TURN)[1] for _ in range(36))
    assert gained == 0.0  # nothing new the second time round
    for _ in range(6):
        env.step(np.array([0, 0, 0, -1, 0, 0], np.float32))  # look 60 degrees down
    for _ in range(36):
        _, _, _, _, info = env.step(TURN)
    assert info["coverage"] > 22.0
    assert info["coverage"] <= floor_cells(ROOM, 0.25).sum() * 0.25**2 == 25.0


def test_coverage_stops_at_walls():
    env = nav(task="explore", scene=PILLAR)
    _, open_view = nav(task="explore").reset(seed=0, options={"start_pose": pose([2.75, -1.5, 1.0])})
    _, blocked = env.reset(seed=0, options={"start_pose": pose([2.75, -1.5, 1.0])})
    assert blocked["coverage"] < open_view["coverage"] - 0.5  # the pillar hides the floor behind it


def test_measure_dependencies_are_ordered_and_checked():
    m = Measurements(("spl", "success", "path_length", "distance_to_goal"), TaskConfig())
    assert m.order.index("distance_to_goal") < m.order.index("success") < m.order.index("spl")
    assert m.order.index("path_length") < m.order.index("spl")
    with pytest.raises(ValueError, match="'spl' depends on 'success'"):
        Measurements(("spl", "path_length"), TaskConfig())
    with pytest.raises(ValueError, match="unknown measures"):
        Measurements(("teleports",), TaskConfig())

    @register_measure
    class A(Measure):
        uuid, depends_on = "_test_a", ("_test_b",)

    @register_measure
    class B(Measure):
        uuid, depends_on = "_test_b", ("_test_a",)

    try:
        with pytest.raises(ValueError, match="cycle"):
            Measurements(("_test_a", "_test_b"), TaskConfig())
        with pytest.raises(ValueError, match="already registered"):
            register_measure(A)
    finally:
        MEASURES.pop("_test_a")
        MEASURES.pop("_test_b")


def test_every_measure_documents_its_formula():
    for uuid, cls in MEASURES.items():
        assert cls.__doc__ and "=" in cls.__doc__, uuid


def test_task_options_are_validated():
    with pytest.raises(ValueError, match="success_on"):
        make_task("pointnav", success_on="never")
    with pytest.raises(TypeError, match="does not use"):
        make_task("explore", success_radius=1.0)
    assert make_task("pointnav", success_radius=0.5).cfg.success_radius == 0.5
