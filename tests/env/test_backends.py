"""The Backend protocol and the oracle backend: shapes, frames equal to the renderer's, batch reuse, snapshots."""

import numpy as np
import pytest
import torch

from sanawm_env.backends import Backend, OracleBackend, OracleConfig, OracleState, make_backend
from sanawm_env.scenes import RenderConfig, Renderer, intrinsics_from_fov, pose
from sanawm_env.scenes.simple import box_room

H = W = 32
K_INTR = intrinsics_from_fov(W, H, 90.0).numpy()


@pytest.fixture(scope="module")
def rooms():
    return box_room(), box_room(box=(5, 6, 1.0))


def poses(n, z0=2.0):
    return np.stack([pose([2.0 + 0.3 * i, -1.5, z0], yaw=0.2 * i) for i in range(n)])


def test_make_backend_names():
    with pytest.raises(FileNotFoundError, match="no world-model checkpoint at /nope/dit.safetensors"):
        make_backend("model", num_worlds=1, height=H, width=W, model="/nope/dit.safetensors")
    with pytest.raises(ValueError, match="must be one of"):
        make_backend("unreal", num_worlds=1, height=H, width=W)
    b = make_backend("oracle", num_worlds=2, height=H, width=W, frames_per_step=3)
    assert isinstance(b, Backend)
    assert (b.num_worlds, b.frames_per_step, b.height, b.width) == (2, 3, H, W)


def test_oracle_frames_are_the_renderers(rooms):
    b = OracleBackend(2, OracleConfig(height=H, width=W, frames_per_step=2))
    first = b.reset(np.array([0, 1]), list(rooms), poses(2), np.stack([K_INTR] * 2))
    assert first.shape == (2, H, W, 3) and first.dtype == np.uint8
    c2w = np.stack([poses(2, 2.0), poses(2, 2.2)], axis=1)  # (N=2, K=2, 4, 4)
    frames = b.step(c2w)
    assert frames.shape == (2, 2, H, W, 3) and frames.dtype == np.uint8
    for i, scene in enumerate(rooms):
        ref = Renderer(scene, RenderConfig(H, W)).render(torch.from_numpy(c2w[i]), torch.from_numpy(K_INTR)).rgb
        assert np.array_equal(frames[i], ref.numpy())
    ref0 = Renderer(rooms[0], RenderConfig(H, W)).render(torch.from_numpy(poses(2)[:1]), torch.from_numpy(K_INTR))
    assert np.array_equal(first[0], ref0.rgb[0].numpy())


def test_scene_batch_is_rebuilt_only_when_a_scene_changes(rooms):
    a, c = rooms
    b = OracleBackend(3, OracleConfig(height=H, width=W, frames_per_step=1))
    b.reset(np.arange(3), [a, a, c], poses(3), np.stack([K_INTR] * 3))
    assert b.batch_builds == 1
    assert b._renderer.batch.num_scenes == 2  # each distinct scene once
    for _ in range(3):
        b.step(poses(3)[:, None])
    b.reset(np.array([1]), [a], poses(1), K_INTR[None])  # same scene again
    b.step(poses(3)[:, None])
    assert b.batch_builds == 1
    b.reset(np.array([0]), [c], poses(1), K_INTR[None])
    b.step(poses(3)[:, None])
    assert b.batch_builds == 2


def test_state_round_trip(rooms):
    b = OracleBackend(2, OracleConfig(height=H, width=W, frames_per_step=1))
    b.reset(np.arange(2), list(rooms), poses(2), np.stack([K_INTR] * 2))
    s = b.get_state(1)
    assert isinstance(s, OracleState) and s.scene is rooms[1]
    b.set_state(0, s)  # world 0 now lives in world 1's scene
    f = b.step(np.stack([poses(1)[0], poses(1)[0]])[:, None])
    assert np.array_equal(f[0], f[1])
    with pytest.raises(TypeError, match="OracleState"):
        b.set_state(0, {"scene": rooms[0]})


def test_oracle_refuses_bad_input(rooms):
    b = OracleBackend(2, OracleConfig(height=H, width=W, frames_per_step=2))
    with pytest.raises(RuntimeError, match="never reset"):
        b.step(np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="start image"):
        b.reset(np.array([0]), [rooms[0]], poses(1), K_INTR[None], images=np.zeros((1, H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="distinct worlds"):
        b.reset(np.array([0, 0]), list(rooms), poses(2), np.stack([K_INTR] * 2))
    with pytest.raises(ValueError, match=r"c2w must have shape \(1, 4, 4\)"):
        b.reset(np.array([0]), [rooms[0]], poses(2), K_INTR[None])
    b.reset(np.arange(2), list(rooms), poses(2), np.stack([K_INTR] * 2))
    with pytest.raises(ValueError, match=r"\(2, 2, 4, 4\)"):
        b.step(poses(2)[:, None])
    b.close()
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.step(np.zeros((2, 2, 4, 4)))


def test_oracle_ignores_but_checks_seeds(rooms):
    b = OracleBackend(1, OracleConfig(height=H, width=W, frames_per_step=1))
    a = b.reset(np.array([0]), [rooms[0]], poses(1), K_INTR[None], seeds=np.array([1]))
    c = b.reset(np.array([0]), [rooms[0]], poses(1), K_INTR[None], seeds=np.array([2]))
    assert np.array_equal(a, c)  # nothing random in the ground truth
    with pytest.raises(ValueError, match="seeds"):
        b.reset(np.array([0]), [rooms[0]], poses(1), K_INTR[None], seeds=np.array([1, 2]))
