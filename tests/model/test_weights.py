"""The shipped embedded model: it loads with no network, fits the size budget, and streams frames."""

import json

import numpy as np
import torch

from model.generator import WEIGHTS, StreamingGenerator


def test_shipped_pair_fits_the_budget_and_records_its_vae_psnr():
    files = [WEIGHTS / "tiny_dit.safetensors", WEIGHTS / "tiny_vae.safetensors"]
    assert sum(f.stat().st_size for f in files) <= 40 * 2**20
    record = json.loads((WEIGHTS / "tiny_vae.json").read_text())
    assert record["metrics"]["psnr"] >= 24.0 and record["metrics_by_size"]["128x128"]["psnr"] >= 24.0
    assert "Fidelity" in (WEIGHTS / "MODEL_CARD.md").read_text()


def test_tiny_loads_offline_and_streams_from_a_start_frame():
    gen = StreamingGenerator.from_pretrained("tiny")
    assert gen.frame_hw == (64, 64) and gen.frames_per_step == 4
    assert StreamingGenerator.config_of("tiny") == gen.cfg
    y, x = np.mgrid[0:64, 0:64]
    first = np.stack([x * 4, y * 4, np.full_like(x, 128)], -1).astype(np.uint8)[None]   # a smooth gradient
    state = gen.reset(first, seed=0)
    c2w = torch.eye(4, dtype=torch.float64).repeat(1, 4, 1, 1)
    c2w[:, :, 2, 3] = torch.arange(1, 5) * 0.05
    frames = gen.step(state, c2w)
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (1, 4, 64, 64, 3)
    f = frames.float()
    assert 5.0 < f.std() < 120.0 and abs(f.mean() - float(first.mean())) < 60.0  # not blank, not saturated
