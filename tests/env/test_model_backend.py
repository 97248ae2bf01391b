"""The model backend (the streaming world model, `micro`): the same env contract as the oracle."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sanawm_env
from sanawm_env.backends import ModelBackend, make_backend
from sanawm_env.scenes import make_scene

MODEL = dict(backend="model", model="micro", size=32, scene_seeds=2)
TIMINGS = ("step_ms", "backend_ms")


def _actions(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 6)).astype(np.float32)


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a if k not in TIMINGS)
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("env_id", sorted(sanawm_env.ENV_IDS))
def test_checkers_pass_with_the_model_backend(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, **MODEL)
    check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*minimal resolution.*")  # micro frames are 32x32
        sb3_check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(env.action_space.sample())
    assert obs["rgb"].shape == (32, 32, 3) and info["frames"].shape == (4, 32, 32, 3)
    assert type(reward) is float and type(term) is bool and type(trunc) is bool
    env.close()
    env.close()


def test_same_seed_same_actions_identical_and_the_model_generates():
    acts = _actions(5)
    runs = []
    for seed in (3, 3, 4):
        env = gym.make("SanaWM/PointNav-v0", **MODEL)
        obs, _ = env.reset(seed=seed)
        out = [obs] + [env.step(a) for a in acts]
        runs.append(out)
        env.close()
    assert all(_same(x[0] if isinstance(x, tuple) else x, y[0] if isinstance(y, tuple) else y)
               for x, y in zip(runs[0], runs[1]))
    assert not _same(runs[0][-1][0], runs[2][-1][0])
    frames = runs[0][-1][4]["frames"]
    assert frames.std() > 1.0  # generated, not a constant image


def test_vector_env_equals_single_envs_with_the_model():
    n = 3
    acts = np.stack([_actions(4, seed=i) for i in range(n)], 1)  # (T, N, 6)
    envs = gym.make_vec("SanaWM/FreeRoam-v0", num_envs=n, **MODEL)
    singles = [gym.make("SanaWM/FreeRoam-v0", **MODEL) for _ in range(n)]
    obs, _ = envs.reset(seed=20)
    single = [e.reset(seed=20 + i)[0] for i, e in enumerate(singles)]
    for i in range(n):
        assert np.array_equal(obs["rgb"][i], single[i]["rgb"])
    for a in acts:
        obs, *_ = envs.step(a)
        for i, e in enumerate(singles):
            # One batch of N worlds vs N batches of one: float32 GEMMs block differently, so frames agree to
            # one 8-bit level at a few pixels rather than bit for bit.
            diff = np.abs(obs["rgb"][i].astype(int) - e.step(a[i])[0]["rgb"].astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01
    envs.close()


def test_get_state_set_state_branches_the_generated_world():
    acts = _actions(6, seed=2)
    env = gym.make("SanaWM/FreeRoam-v0", **MODEL)
    env.reset(seed=4)
    for a in acts[:2]:
        env.step(a)
    snap = env.unwrapped.get_state()
    first = [env.step(a)[0]["rgb"] for a in acts[2:]]
    env.unwrapped.set_state(snap)
    again = [env.step(a)[0]["rgb"] for a in acts[2:]]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))


def test_start_image_is_the_first_frame_and_sizes_must_match():
    env = gym.make("SanaWM/FreeRoam-v0", **MODEL)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    obs, _ = env.reset(seed=0, options={"start_image": img})
    assert np.array_equal(obs["rgb"], img)
    with pytest.raises(ValueError, match="32x32"):
        make_backend("model", num_worlds=1, height=64, width=64, model="micro")
    b = ModelBackend(1, model="micro")
    with pytest.raises(RuntimeError, match="reset every world"):
        b.step(np.tile(np.eye(4), (1, 4, 1, 1)))
    scene = make_scene("indoor", 0)
    with pytest.raises(ValueError, match="start images must be uint8"):
        b.reset([0], [scene], np.eye(4)[None], np.array([[16.0, 16.0, 15.5, 15.5]]), images=np.zeros((1, 8, 8, 3)))


def test_model_frame_size_reads_the_config_without_loading(tmp_path):
    from model.checkpoint import save_checkpoint
    from model.config import get_config
    from model.generator import StreamingGenerator
    from model.transformer import build_model
    from sanawm_env.backends import model_frame_size

    assert model_frame_size("micro") == 32
    path = save_checkpoint(build_model(get_config("tiny64")), tmp_path / "x_dit.safetensors")
    assert StreamingGenerator.config_of(path or tmp_path / "x_dit.safetensors").name == "tiny64"
    assert model_frame_size(str(tmp_path / "x_dit.safetensors")) == 64
    with pytest.raises(FileNotFoundError, match="nope"):
        model_frame_size(str(tmp_path / "nope.safetensors"))


def test_start_frames_are_rendered_as_the_checkpoint_says(tmp_path):
    """The model backend renders start frames the way the model's training clips were (checkpoint metadata)."""
    from safetensors.torch import save_file

    from model.checkpoint import save_checkpoint
    from model.config import get_config
    from model.transformer import build_model
    from model.vae import CausalVAE, vae_config

    cfg = get_config("micro")
    path = save_checkpoint(build_model(cfg), tmp_path / "m_dit.safetensors",
                           {"render": json.dumps({"supersample": 2, "fov": 90.0})})
    save_file(CausalVAE(vae_config(cfg.vae)).state_dict(), str(tmp_path / "m_vae.safetensors"))
    assert ModelBackend(1, model=str(path)).oracle.cfg.supersample == 2
    assert ModelBackend(1, model="micro").oracle.cfg.supersample == 1            # a checkpoint that does not say
    assert ModelBackend(1, model=str(path), supersample=1).oracle.cfg.supersample == 1   # asked for explicitly


def test_model_timesteps_reach_the_generator_and_change_the_frames():
    """One denoising pass instead of the checkpoint's two (the fast CPU setting): a different world, same contract."""
    acts = _actions(2)
    frames = {}
    for ts in (None, [1000, 0]):
        env = gym.make("SanaWM/FreeRoam-v0", **MODEL, model_timesteps=ts)
        assert env.unwrapped.config.model_timesteps == (None if ts is None else (1000, 0))
        assert env.unwrapped._worlds.backend.gen.sigmas == ([1.0, 0.5, 0.0] if ts is None else [1.0, 0.0])
        env.reset(seed=0)
        frames[ts is None] = [env.step(a)[4]["frames"] for a in acts]
        env.close()
    assert not np.array_equal(frames[True][-1], frames[False][-1])
    with pytest.raises(ValueError, match="timesteps must fall"):
        gym.make("SanaWM/FreeRoam-v0", **MODEL, model_timesteps=(0, 1000))


def test_compile_fuses_the_model_step_on_cpu_instead_of_the_trace():
    """env `compile=True` compiles the model's step too (the first step compiles; tests/model/test_generator.py
    checks the compiled step against eager), and stays the traced replay without it."""
    fused, traced = ModelBackend(1, model="micro", compile=True), ModelBackend(1, model="micro")
    assert (fused.gen.compile, fused.gen.trace, fused.oracle.cfg.compile) == ("inductor", False, True)
    assert (traced.gen.compile, traced.gen.trace, traced.oracle.cfg.compile) == (None, True, False)
    assert not fused.gen.graph and not traced.gen.graph and fused.gen.fuse is None   # graphs and fusion: CUDA only


@pytest.mark.gpu
def test_model_backend_on_cuda_replays_a_cuda_graph():
    """On a CUDA device the backend steps a CUDA graph by default (and fuses its kernels with compile=True): the
    same frames as the eager step, through resets of one world and of both."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (run on the lent GPU machine)")
    graphed = ModelBackend(2, model="micro", device="cuda")
    eager = ModelBackend(2, model="micro", device="cuda", graph=False)
    assert graphed.gen.graph and graphed.gen.fuse is None and not eager.gen.graph
    assert ModelBackend(1, model="micro", device="cuda", compile=True).gen.fuse == "inductor"
    scene, k = make_scene("indoor", 0), np.array([[16.0, 16.0, 15.5, 15.5]] * 2)
    c2w = np.tile(np.eye(4), (2, 4, 1, 1))
    c2w[:, :, 2, 3] = np.arange(1, 5) * 0.05
    for ids in ([0, 1], [1], [0, 1]):
        for b in (graphed, eager):
            b.reset(ids, [scene] * len(ids), np.tile(np.eye(4), (len(ids), 1, 1)), k[:len(ids)], seeds=ids)
        for _ in range(2):
            assert np.abs(eager.step(c2w).astype(int) - graphed.step(c2w).astype(int)).mean() < 2.0
