"""Oracle renderer throughput: frames/s for a batch of cameras, eager reference vs fused (torch.compile).

    python benchmarks/render_throughput.py [--size 128] [--batch 32] [--repeats 7] [--out benchmarks/results]

Cameras stand at random free spots of each scene family with random headings and small pitch, so
the work per frame is what an agent sees. Prints a table and writes JSON; the fused/eager ratio is
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sanawm_env.scenes import RenderConfig, Renderer, intrinsics_from_fov, make_scene, pose
from sanawm_env.scenes.geometry import SceneGeometry


def camera_batch(scene, batch: int, seed: int) -> torch.Tensor:
    geom = SceneGeometry(scene)
    rng = np.random.default_rng(seed)
    poses = [pose(geom.sample_free_position(rng), yaw=rng.uniform(-np.pi, np.pi), pitch=rng.uniform(-0.2, 0.2))
             for _ in range(batch)]
    return torch.tensor(np.stack(poses))


def time_render(renderer: Renderer, c2w: torch.Tensor, k: torch.Tensor, repeats: int) -> list[float]:
    renderer.render(c2w, k)  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        renderer.render(c2w, k)
        times.append(time.perf_counter() - t)
    return times


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seeds", type=int, default=3, help="scenes per family")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    k = intrinsics_from_fov(a.size, a.size, 90.0)
    rows = []
    cases = [(fam, seed, ss) for fam in ("indoor", "outdoor") for seed in range(a.seeds) for ss in (1, 2)]
    for fam, seed, ss in tqdm(cases, desc="render benchmark"):
        scene = make_scene(fam, 100 + seed)
        c2w = camera_batch(scene, a.batch, seed)
        row = {"family": fam, "seed": 100 + seed, "supersample": ss}
        for mode in ("eager", "fused"):
            r = Renderer(scene, RenderConfig(a.size, a.size, supersample=ss, compile=mode == "fused"))
            t = statistics.median(time_render(r, c2w, k, a.repeats))
            row[f"{mode}_fps"] = a.batch / t
        row["fused_over_eager"] = row["fused_fps"] / row["eager_fps"]
        rows.append(row)

    summary = []
    for fam in ("indoor", "outdoor"):
        for ss in (1, 2):
            sel = [r for r in rows if r["family"] == fam and r["supersample"] == ss]
            summary.append({"family": fam, "supersample": ss,
                            "eager_fps": statistics.median(r["eager_fps"] for r in sel),
                            "fused_fps": statistics.median(r["fused_fps"] for r in sel),
                            "fused_over_eager": statistics.median(r["fused_over_eager"] for r in sel)})
    result = {"benchmark": "render_throughput", "size": a.size, "batch": a.batch, "repeats": a.repeats,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "processor": platform.processor() or platform.platform(), "rows": rows, "summary": summary}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "render_throughput.json").write_text(json.dumps(result, indent=1))

    print(f"\nrenderer, {a.size}x{a.size}, batch {a.batch}, {torch.get_num_threads()} threads, "
          f"median of {a.repeats} over {a.seeds} scenes per family (frames/s)")
    print(f"{'family':<8} {'ssaa':>4} {'eager':>8} {'fused':>8} {'fused/eager':>12}")
    for s in summary:
        print(f"{s['family']:<8} {s['supersample']:>4} {s['eager_fps']:>8.0f} {s['fused_fps']:>8.0f} "
              f"{s['fused_over_eager']:>12.2f}")
    return result


if __name__ == "__main__":
    main()
