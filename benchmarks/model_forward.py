"""One chunk pass of the world-model DiT per preset: time, FLOPs and achieved TFLOP/s.

    python benchmarks/model_forward.py [--presets tiny micro] [--repeats 10] [--out benchmarks/results]

On CPU this times `tiny` (and `micro`); with a CUDA device it adds the published `sana-wm-1600m-720p` at
704x1280 with random bf16 weights. A chunk pass is one forward over a chunk of latent frames with its
camera conditioning (the unit a streaming step repeats for each denoising pass). FLOPs are counted by
torch.utils.flop_counter (matmuls, convs and attention).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from model.camera import camera_conditions, plucker_maps
from model.config import get_config
from model.transformer import build_model


def chunk_inputs(cfg, batch: int, device, dtype):
    t = cfg.chunk_frames
    lh, lw = cfg.latent_hw
    n = 1 + cfg.vae_temporal * (t - 1)
    c2w = torch.eye(4, device=device).repeat(batch, n, 1, 1)
    c2w[:, :, 2, 3] = torch.linspace(0, 0.5, n, device=device)
    k = torch.tensor([lw * 0.6, lw * 0.6, (lw - 1) / 2, (lh - 1) / 2], device=device).repeat(batch, n, 1)
    x = torch.randn(batch, cfg.in_channels, t, lh, lw, device=device, dtype=dtype)
    ts = torch.full((batch, t), 727.0, device=device)
    return x, ts, camera_conditions(c2w, k, cfg.vae_temporal), plucker_maps(c2w, k, lh, lw, cfg.vae_temporal).to(dtype)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench(name: str, device, dtype, batch: int, repeats: int) -> dict:
    cfg = get_config(name)
    model = build_model(cfg, device=device, dtype=dtype).eval()
    with torch.no_grad():
        for p in model.parameters():  # random weights everywhere, like a trained model
            p.normal_(0.0, 0.02)
        x, ts, cc, pl = chunk_inputs(cfg, batch, device, dtype)
        chunks = [cfg.chunk_frames]
        model(x, ts, cc, pl, chunks=chunks)
        with FlopCounterMode(display=False) as fc:
            model(x, ts, cc, pl, chunks=chunks)
        flops = fc.get_total_flops()
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            model(x, ts, cc, pl, chunks=chunks)
            sync(device)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"preset": name, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "batch": batch,
            "latent_frames": cfg.chunk_frames, "tokens": cfg.chunk_frames * cfg.tokens_per_frame,
            "params": model.num_parameters(), "ms_median": med * 1e3, "ms_min": min(times) * 1e3,
            "gflop": flops / 1e9, "tflops_per_s": flops / med / 1e12}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="*", default=None)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cases = a.presets or (["micro", "tiny", "sana-wm-1600m-720p"] if cuda else ["micro", "tiny"])
    rows = []
    for name in tqdm(cases, desc="model forward"):
        dtype = torch.bfloat16 if (cuda and name == "sana-wm-1600m-720p") else torch.float32
        rows.append(bench(name, device, dtype, a.batch, a.repeats))
    device_name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.platform())
    info = {"benchmark": "model_forward", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "device_name": device_name, "rows": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"model_forward_{device}.json").write_text(json.dumps(info, indent=1))
    print(f"\none chunk pass (chunk-causal, camera branch on), {device}, batch {a.batch}, median of {a.repeats}")
    print(f"{'preset':<20} {'dtype':>8} {'params':>14} {'tokens':>7} {'ms':>9} {'GFLOP':>9} {'TFLOP/s':>8}")
    for r in rows:
        print(f"{r['preset']:<20} {r['dtype']:>8} {r['params']:>14,} {r['tokens']:>7} {r['ms_median']:>9.2f} "
              f"{r['gflop']:>9.2f} {r['tflops_per_s']:>8.3f}")
    return rows


if __name__ == "__main__":
    main()
