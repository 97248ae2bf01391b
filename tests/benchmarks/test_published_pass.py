"""benchmarks/published_pass.py's CPU-checkable parts: the stand-in VAE fits the published preset, and the profile's
regions cover the block and leave the model as they found it (the timings themselves need a CUDA device)."""

import dataclasses

import torch
from bench_loader import load_benchmark
from torch.profiler import ProfilerActivity, profile

from model.fused import EAGER
from model.generator import StreamingGenerator
from model.layers import RMSNorm, rms_norm
from model.vae import CausalVAE


def test_regions_cover_a_published_step_and_restore_the_model():
    pp = load_benchmark("published_pass")
    # the published layout (3-latent chunks, 32x, softmax every 4th block, camera branch) at a size a CPU steps
    cfg = dataclasses.replace(pp.get_config(pp.PRESET), depth=4, hidden_size=224, num_heads=2, height=128, width=128)
    model = pp.published_model("cpu", cfg).float()
    gen = StreamingGenerator(model, CausalVAE(pp.STAND_IN_VAE), "cpu", torch.float32, 1)
    assert gen.frames_per_step == 24 and not gen.defer_clean
    state = gen.reset(pp.first_frames(gen, 1), seed=0)
    c2w = pp.walk(gen, 1)
    with torch.no_grad(), pp.regions(gen.model), profile(activities=[ProfilerActivity.CPU]) as prof:
        frames = gen.step(state, c2w)
    assert frames.shape == (1, 24, 128, 128, 3)
    names = {e.name for e in prof.events()}
    assert set(pp.REGIONS.values()) | set(pp.OPS_REGIONS.values()) <= names
    assert all(m.ops is EAGER for m in gen.model.modules() if hasattr(m, "ops"))
    assert all(m.fn is rms_norm for m in gen.model.modules() if isinstance(m, RMSNorm))
    assert all(getattr(owner, attr).__name__ == attr for owner, attr in pp.REGIONS)
    assert not any(hasattr(getattr(owner, attr), "__wrapped__") for owner, attr in pp.REGIONS)
