"""Latent cache round trip, and camera conditioning in training equal to what StreamingGenerator computes."""

import numpy as np
import pytest
import torch

from model.camera import scale_intrinsics
from model.generator import StreamingGenerator
from model.train.common import to_unit
from model.train.data import load_index
from model.train.latents import Args, LatentCache, build_cache, camera_conditioning, load_vae, save_vae, window_starts
from model.vae import CausalVAE, vae_config
from sanawm_env.scenes.export import ExportConfig, export_clips


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("lat")
    index = export_clips(ExportConfig(out=str(root / "clips"), clips=3, frames=13, size=32, seed=11, png=True,
                                      compile=False, supersample=1, clips_per_scene=2), progress=False)
    torch.manual_seed(0)
    vae = CausalVAE(vae_config("micro"))
    vae.set_latent_stats_(torch.randn(2, 4, 3, 4, 4) * 3 + 1)       # non-trivial normalisation
    vae_path = save_vae(vae, root / "vae.safetensors", "micro")
    cache = build_cache(Args(data=str(index), vae=str(vae_path), out=str(root / "cache"), window=3, stride=4,
                             shard=2, batch=2, device="cpu", progress=False))
    return index, vae_path, cache


def test_window_starts():
    assert window_starts(17, 3, 4) == [0, 8] and window_starts(13, 3, 4) == [0] and window_starts(13, 3, 4, 4) == [0, 4]
    assert window_starts(8, 3, 4) == [] and window_starts(9, 1, 4) == list(range(9))


def test_cache_round_trip(dataset):
    index, vae_path, cache_path = dataset
    cache = LatentCache.load(cache_path)
    clips = load_index(index)
    vae = load_vae(vae_path)
    assert len(cache) == 3 * 2 and len(cache.meta["shards"]) == 3 and cache.window == 3
    assert cache.latents.shape == (6, 4, 3, 4, 4) and cache.c2w.shape == (6, 9, 4, 4)
    assert cache.c2w.dtype == torch.float64 and cache.meta["vae_preset"] == "micro"
    for i in range(len(cache)):
        clip, a = clips[int(cache.clip[i])], int(cache.start[i])
        frames = torch.from_numpy(clip.frames[a:a + 9])[None]
        with torch.no_grad():
            z = vae.encode(to_unit(frames))                           # the window alone, first frame alone
        torch.testing.assert_close(cache.latents[i], z[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(cache.c2w[i, 0], torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
        rel = np.linalg.inv(clip.c2w[a]) @ clip.c2w[a:a + 9]
        np.testing.assert_allclose(cache.c2w[i].numpy(), rel, atol=1e-9)
        k = torch.tensor(clip.intrinsics[a], dtype=torch.float32)
        assert torch.equal(cache.k[i], k)
        assert torch.equal(cache.k_lat[i], scale_intrinsics(k, (32, 32), (4, 4)))


def test_camera_conditioning_equals_streaming_generator(dataset):
    """Drive the generator itself with a window's poses and record what its model is given."""
    index, _, cache_path = dataset
    cache = LatentCache.load(cache_path)
    clip = load_index(index)[int(cache.clip[1])]
    a = int(cache.start[1])
    gen = StreamingGenerator.from_pretrained("micro", batch_size=1)
    seen = {}   # chunk index -> its (cond, plucker), from every call (a streamed pair gives two chunks)
    prepare = gen.model.prepare

    def spy(frames, cond, pl, caption, chunks, offset, stream, *rest, **kw):
        first, a = int(stream[0][0]), 0
        for j, size in enumerate(chunks):
            seen[first + j] = (cond[:, a:a + size].clone(), pl[:, :, a:a + size].clone())
            a += size
        return prepare(frames, cond, pl, caption, chunks, offset, stream, *rest, **kw)

    gen.model.prepare = spy
    c2w = torch.from_numpy(clip.c2w[a:a + 9])                          # world poses, not relative
    state = gen.reset(clip.frames[a][None], intrinsics=clip.intrinsics[a], c2w0=c2w[0], seed=0)
    for c in range(2):                                                 # chunks of one latent = 4 raw frames
        gen.step(state, c2w[None, 1 + 4 * c:5 + 4 * c])
    assert sorted(seen) == [0, 1, 2]
    want_cond = torch.cat([seen[c][0] for c in range(3)], 1)
    want_pl = torch.cat([seen[c][1] for c in range(3)], 2)
    cond, pl = camera_conditioning(gen.cfg, cache.c2w[1:2], cache.k_lat[1:2], 3)
    assert cond.shape == (1, 3, 20) and pl.shape == (1, 24, 3, 4, 4)
    torch.testing.assert_close(cond, want_cond, rtol=0, atol=1e-6)
    torch.testing.assert_close(pl, want_pl, rtol=0, atol=1e-6)
    # Prefixes: fewer latents give the same leading conditioning.
    c2, p2 = camera_conditioning(gen.cfg, cache.c2w[1:2], cache.k_lat[1:2], 2)
    assert torch.equal(c2, cond[:, :2]) and torch.equal(p2, pl[:, :, :2])
    with pytest.raises(ValueError, match="expected c2w_rel"):
        camera_conditioning(gen.cfg, cache.c2w[1:2, :5], cache.k_lat[1:2], 3)
