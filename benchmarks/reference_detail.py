"""Detail from the start frame: is a 2x-size first frame, reprojected into later views, worth an upscaler input?

    python benchmarks/reference_detail.py [--checkpoint tiny] [--episodes 16] [--seed 200000]

The model runs at its own size from the start frame rendered at 2x and area-averaged down. Each later frame is
upsampled bilinearly (the baseline, as `fidelity.py --score-size` resizes), then gets `alpha` times the
high-frequency part of the 2x start frame: the start frame reprojected by the camera's rotation into that view
(`model/warp.py`, the DiT's own warp), minus its 2x2-averaged and re-upsampled self, where the reprojection is
valid 2 px in from its edge. No learning: if this does not pay somewhere, a learned upscaler that reads the start
frame would not either. PSNR against the oracle's 2x frames per horizon, next to the baseline; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity as fid  # noqa: E402  (a sibling script: walks, the oracle, intrinsics)

from agents.common import resize_rgb  # noqa: E402
from model.camera import se3_inverse  # noqa: E402
from model.generator import StreamingGenerator  # noqa: E402
from model.train.common import to_uint8  # noqa: E402
from model.train.evaluate import psnr  # noqa: E402
from model.warp import warp_grid  # noqa: E402

ALPHAS = (0.0, 0.5, 1.0)


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> x minus its 2x2 means upsampled bilinearly: what a 2x bilinear upscale cannot draw."""
    return x - F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)


def run(a: argparse.Namespace) -> dict:
    gen = StreamingGenerator.from_pretrained(a.checkpoint, batch_size=a.episodes, upscaler=None, trace=True)
    hw, k, n = gen.frame_hw, gen.frames_per_step, a.episodes
    big = (2 * hw[0], 2 * hw[1])
    eps = fid.walk_episodes(n, a.seed, 1 + max(a.horizons) * k)
    idx = np.concatenate([[0]] + [np.arange(1 + (h - 1) * k, 1 + h * k) for h in a.horizons])
    truth = torch.from_numpy(fid.Oracle(eps, big).render(eps.c2w[:, idx]))           # (B, 1 + nH K, 2H, 2W, 3)
    start = truth[:, 0]
    small = torch.from_numpy(resize_rgb(start.numpy(), hw))                       # (B, H, W, 3) area-averaged
    k_small = fid.intrinsics_from_fov(hw[1], hw[0], fid.FOV).expand(n, 4).float()
    state = gen.reset(small, k_small, seed=a.seed, c2w0=torch.from_numpy(eps.c2w[:, 0]))
    frames = {}
    for s in range(1, max(a.horizons) + 1):
        f = gen.step(state, torch.from_numpy(np.ascontiguousarray(eps.c2w[:, 1 + (s - 1) * k:1 + s * k])))
        if s in a.horizons:
            frames[s] = torch.from_numpy(resize_rgb(f.cpu().numpy(), big))       # (B, K, 2H, 2W, 3) bilinear
    # the start frame seen from each scored view, by the rotation between them (frame intrinsics)
    c2w = torch.from_numpy(eps.c2w[:, idx])
    rel = (se3_inverse(c2w[:, :1]) @ c2w).float()                                     # (B, F, 4, 4)
    k_big = fid.intrinsics_from_fov(big[1], big[0], fid.FOV).float()
    cond = torch.cat([rel.reshape(n, -1, 16), k_big.expand(n, rel.shape[1], 4)], -1)  # (B, F, 20)
    grid, valid = warp_grid(cond[:, :1].expand_as(cond).contiguous(), cond, big)      # (B F, 2H, 2W, 2), (B F, 1, ..)
    src = (start.permute(0, 3, 1, 2).float() / 127.5 - 1).repeat_interleave(rel.shape[1], 0)   # (B F, 3, 2H, 2W)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True) * valid
    inside = (F.avg_pool2d(valid, 5, 1, 2) > 0.999).float()                           # 2 px in from the edge
    detail = (high_pass(warped) * inside).reshape(n, -1, 3, *big)                     # (B, F, 3, 2H, 2W)
    rows = []
    for i, h in enumerate(a.horizons):
        sl = slice(1 + i * k, 1 + (i + 1) * k)
        base = frames[h].permute(0, 4, 1, 2, 3).float() / 127.5 - 1                   # (B, 3, K, 2H, 2W)
        row = {"horizon": h, "valid": float(inside.reshape(n, -1, 1, *big)[:, sl].mean())}
        for alpha in ALPHAS:
            out = to_uint8(base + alpha * detail[:, sl].transpose(1, 2))              # (B, K, 2H, 2W, 3)
            row[f"psnr_alpha_{alpha}"] = psnr(out, truth[:, sl])
        rows.append(row)
    return {"benchmark": "reference_detail", "args": vars(a), "model_hw": list(hw), "scored_hw": list(big),
            "frames_per_step": k, "rows": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="tiny", help="'tiny', 'micro' or a DiT path (its upscaler is left out)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=200000, help="first scene seed (200000: the tuning split)")
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    res = run(a)
    print(f"start-frame detail on {a.checkpoint} ({res['model_hw'][0]}x{res['model_hw'][1]} model, scored at "
          f"{res['scored_hw'][0]}x{res['scored_hw'][1]}), {a.episodes} walks from scene seed {a.seed}")
    print("horizon  valid  " + "  ".join(f"alpha {x:.1f}" for x in ALPHAS) + "  gain at 1.0")
    for r in res["rows"]:
        print(f"{r['horizon']:7d}  {r['valid']:.2f}  " + "  ".join(f"{r[f'psnr_alpha_{x}']:9.2f}" for x in ALPHAS)
              + f"  {r['psnr_alpha_1.0'] - r['psnr_alpha_0.0']:+10.2f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reference_detail.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {out / 'reference_detail.json'}")
    return res


if __name__ == "__main__":
    main()
