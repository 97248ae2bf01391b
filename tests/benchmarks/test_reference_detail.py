"""benchmarks/reference_detail.py: the high-pass is what 2x bilinear cannot draw, and alpha 0 is the baseline."""

import json

import numpy as np
import torch
from bench_loader import load_benchmark

from agents.common import resize_rgb
from model.generator import StreamingGenerator
from model.train.evaluate import psnr

rd = load_benchmark("reference_detail")


def test_high_pass_drops_2x2_means_and_keeps_pixel_checkers():
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(rd.high_pass(flat), torch.zeros_like(flat), atol=1e-6)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1.0   # +-1, 2x2 means 0
    x = checker.expand(1, 3, 8, 8)
    assert torch.allclose(rd.high_pass(x), x, atol=1e-6)


def test_main_on_micro_scores_the_bilinear_baseline_at_alpha_0(tmp_path):
    res = rd.main(["--checkpoint", "micro", "--episodes", "2", "--seed", "100000", "--horizons", "1", "2",
                   "--out", str(tmp_path)])
    assert json.loads((tmp_path / "reference_detail.json").read_text())["rows"] == res["rows"]
    assert res["model_hw"] == [32, 32] and res["scored_hw"] == [64, 64]
    assert [r["horizon"] for r in res["rows"]] == [1, 2] and all(0 < r["valid"] <= 1 for r in res["rows"])
    # alpha 0, recomputed: the model from the area-averaged 2x start, its frames resized bilinearly
    fid = rd.fid
    eps = fid.walk_episodes(2, 100000, 1 + 2 * 4)
    truth = torch.from_numpy(fid.Oracle(eps, (64, 64)).render(eps.c2w))               # (2, 9, 64, 64, 3)
    gen = StreamingGenerator.from_pretrained("micro", batch_size=2, trace=True)
    small = torch.from_numpy(resize_rgb(truth[:, 0].numpy(), (32, 32)))
    k = fid.intrinsics_from_fov(32, 32, fid.FOV).expand(2, 4).float()
    state = gen.reset(small, k, seed=100000, c2w0=torch.from_numpy(eps.c2w[:, 0]))
    f = gen.step(state, torch.from_numpy(np.ascontiguousarray(eps.c2w[:, 1:5])))
    up = torch.from_numpy(resize_rgb(f.numpy(), (64, 64)))
    assert res["rows"][0]["psnr_alpha_0.0"] == psnr(up, truth[:, 1:5])
    assert res["rows"][0]["psnr_alpha_1.0"] != res["rows"][0]["psnr_alpha_0.0"]      # the detail was added
