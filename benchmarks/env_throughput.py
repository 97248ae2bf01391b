"""Env throughput: env steps/s and frames/s per backend, single env and vector env, and the env's overhead.

    python benchmarks/env_throughput.py [--size 128] [--steps 12] [--nums 1,8,32] [--device cpu] [--compile]
    python benchmarks/env_throughput.py --size 64 --steps 6 --nums 1,8     # quick

For every backend in BACKENDS, task and N, the env is stepped with random actions while a second backend of the
same kind replays the very poses the env produced (reset into the same scenes), step by step, interleaved, so both
see the same work and the same machine noise. The overhead ratio is env step time / backend step time for those
steps; the env must stay within 1.10 at N = 1. N = 256 is added on CUDA. Prints a table and writes
benchmarks/results/env_throughput.json.
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

from sanawm_env.backends import make_backend
from sanawm_env.env import SanaWMEnv
from sanawm_env.vector import SanaWMVectorEnv

# One line per backend: name -> extra env kwargs. The model row uses `--model` (default: the shipped tiny model
# when present, else the seeded random micro model: the env overhead does not depend on the weights).
BACKENDS: dict[str, dict] = {
    "oracle": {},
    "model": {"model": None},
}
TASKS = ("freeroam", "pointnav")


def replay_backend(env, backend_name: str, extra: dict):
    """A fresh backend of the env's kind, reset into the env's worlds (scenes, poses, intrinsics)."""
    w = env._worlds
    cfg = env.config
    b = make_backend(backend_name, num_worlds=w.n, height=cfg.height, width=cfg.width,
                     frames_per_step=cfg.frames_per_step, device=cfg.device, compile=cfg.compile,
                     supersample=cfg.supersample, **({"model": extra["model"]} if "model" in extra else {}))
    b.reset(np.arange(w.n), [e.scene for e in w.episodes], w.pose.copy(), w.intrinsics.copy())
    return b


def model_size(name: str) -> int:
    from model.config import PRESETS

    return PRESETS[name].height if name in PRESETS else 128


def run_case(backend_name: str, extra: dict, task: str, n: int, vector: bool, a) -> dict:
    size = a.size
    if "model" in extra:
        extra = {"model": extra["model"] or a.model}
        size = model_size(extra["model"])
    kw = dict(task=task, backend=backend_name, size=size, device=a.device, compile=a.compile,
              frames_per_step=a.frames_per_step, scene_seeds=(0, 1, 2, 3), **extra)
    if task == "pointnav":
        kw["end_on_success"] = False  # a lucky random walk must not end the episode mid-benchmark
    env = SanaWMVectorEnv(num_envs=n, **kw) if vector else SanaWMEnv(**kw)
    env.reset(seed=0)
    replay = replay_backend(env, backend_name, extra)
    rng = np.random.default_rng(0)
    shape = (n, 6) if vector else (6,)
    env_t, back_t, inner_env, inner_back = [], [], [], []
    for t in range(a.warmup + a.steps):
        act = rng.uniform(-1, 1, shape).astype(np.float32)
        act[..., 1] = 0.0  # no crouching / jumping: keep the walk on the floor
        t0 = time.perf_counter()
        _, _, term, trunc, info = env.step(act)
        t1 = time.perf_counter()
        poses = np.asarray(info["poses"], dtype=np.float64).reshape(n, -1, 4, 4)
        t2 = time.perf_counter()
        replay.step(poses)
        t3 = time.perf_counter()
        if np.any(term) or np.any(trunc):
            raise RuntimeError("an episode ended during the benchmark; lower --steps")
        if t >= a.warmup:
            env_t.append(t1 - t0)
            back_t.append(t3 - t2)
            inner_env.append(float(np.ravel(info["step_ms"])[0]))
            inner_back.append(float(np.ravel(info["backend_ms"])[0]))
    k = env.frames_per_step
    env.close()
    replay.close()
    env_s, back_s = statistics.median(env_t), statistics.median(back_t)
    return {"backend": backend_name + (f":{extra['model']}" if "model" in extra else ""), "size": size,
            "env": "vector" if vector else "single", "task": task, "num_envs": n,
            "frames_per_step": k, "env_ms": env_s * 1e3, "backend_ms": back_s * 1e3,
            "env_steps_per_s": n / env_s, "frames_per_s": n * k / env_s, "backend_frames_per_s": n * k / back_s,
            # per step, the env and the replaying backend rendered the same poses: the median of the ratios
            "overhead_ratio": statistics.median(e / b for e, b in zip(env_t, back_t)),
            # the env's own split of the same calls (info["step_ms"] / info["backend_ms"]), free of replay noise
            "inner_overhead_ratio": statistics.median(e / b for e, b in zip(inner_env, inner_back)),
            "env_overhead_ms": statistics.median(e - b for e, b in zip(inner_env, inner_back))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames-per-step", type=int, default=4)
    p.add_argument("--steps", type=int, default=12, help="timed steps per case (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--nums", default="1,8,32", help="vector env sizes (256 is added on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="oracle: fused (torch.compile) ray caster")
    p.add_argument("--model", default=None, help="model backend: tiny (if shipped) or micro, or a checkpoint")
    p.add_argument("--backends", default="oracle,model")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    if a.model is None:
        from model.generator import WEIGHTS

        a.model = "tiny" if (WEIGHTS / "tiny_dit.safetensors").exists() else "micro"
    nums = [int(x) for x in a.nums.split(",")]
    if a.device.startswith("cuda") and 256 not in nums:
        nums.append(256)
    cases = []
    for name, extra in BACKENDS.items():
        if name not in a.backends.split(","):
            continue
        cases += [(name, extra, task, 1, False) for task in TASKS]
        cases += [(name, extra, "freeroam", n, True) for n in nums]
        cases += [(name, extra, "pointnav", 1, True)]
    rows = [run_case(*c, a) for c in tqdm(cases, desc="env benchmark")]
    result = {"benchmark": "env_throughput", "size": a.size, "frames_per_step": a.frames_per_step,
              "steps": a.steps, "device": a.device, "compile": a.compile,
              "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.machine(),
              "processor": platform.processor() or platform.platform(),
              "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None, "rows": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "env_throughput.json").write_text(json.dumps(result, indent=1))

    print(f"\nenv throughput, {a.size}x{a.size}, K={a.frames_per_step} frames/step, {a.device}"
          f"{' (' + result['gpu'] + ')' if result['gpu'] else ''}, {torch.get_num_threads()} threads, "
          f"{'compiled' if a.compile else 'eager'} oracle, median of {a.steps} steps")
    print(f"{'backend':<12} {'env':<7} {'task':<9} {'N':>4} {'env steps/s':>12} {'frames/s':>10} {'env ms':>9} "
          f"{'backend ms':>11} {'env/backend':>12} {'inner':>7} {'env-only ms':>12}")
    for r in rows:
        print(f"{r['backend']:<12} {r['env']:<7} {r['task']:<9} {r['num_envs']:>4} {r['env_steps_per_s']:>12.1f} "
              f"{r['frames_per_s']:>10.1f} {r['env_ms']:>9.2f} {r['backend_ms']:>11.2f} {r['overhead_ratio']:>12.3f} "
              f"{r['inner_overhead_ratio']:>7.3f} {r['env_overhead_ms']:>12.2f}")
    worst = max(r["overhead_ratio"] for r in rows if r["num_envs"] == 1)
    print(f"worst env/backend ratio at N = 1: {worst:.3f} (target <= 1.10); 'inner' = info step_ms / backend_ms "
          f"of the same calls, 'env-only ms' = their difference")
    return result


if __name__ == "__main__":
    main()
