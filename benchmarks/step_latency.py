"""Streaming step latency: per-step p50/p99, cache vs recompute, flatness over long episodes, graphs on GPU.

    python benchmarks/step_latency.py [--preset tiny] [--long-preset micro] [--long-steps 5000]

Rows (all ratios measured in this one run):
- steps: `--preset` at batch 1 on CPU, eager and traced (`trace=True`, the env's CPU default), traced with one
  denoising pass, traced on one thread, and compiled (`compile=True`, env `compile=True`; not with `--no-compile`),
  and each `--against` checkpoint traced in the same rounds (e.g. the previous shipped weights, another frame size);
  p50 / p99 ms per step and frames/s (random weights if none are shipped; the time of a step does not depend on
  the weights), the compilation's time and the compiled frames against eager;
- cache vs recompute: one step at episode length L with the streaming caches against the naive baseline that
  recomputes the whole visible context every pass (`RecomputeGenerator`), L = 16, 64, 256;
- flat: latency and `WorldState.nbytes()` at step 100 and step `--long-steps` (`--long-preset`);
- on CUDA: eager vs CUDA graph vs CUDA graph with fused kernels (`fuse=True`, each hot function compiled; and
  `fuse_scope="block"`, each block's whole forward compiled) at batch 1 and 64 (`tiny`), and the graph's cost of
  switching between two states.
  The published preset at 704x1280 has its own script, `published_pass.py`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from model.config import get_config
from model.generator import RecomputeGenerator, StreamingGenerator
from model.transformer import build_model
from model.vae import CausalVAE, vae_config


def make_generator(preset: str, device: str, dtype, batch: int, graph: bool = False,
                   trace: bool = False, **kw) -> StreamingGenerator:
    """Shipped weights when there are any, else a seeded random model of the preset; `kw` go to the generator."""
    try:
        return StreamingGenerator.from_pretrained(preset, device=device, dtype=dtype, batch_size=batch, graph=graph,
                                                  trace=trace, **kw)
    except FileNotFoundError:
        torch.manual_seed(0)
        model = build_model(get_config(preset))
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02)
        return StreamingGenerator(model, CausalVAE(vae_config(get_config(preset).vae)), device, dtype, batch, graph,
                                  trace=trace, **kw)


def walk(gen: StreamingGenerator, batch: int, device=None) -> torch.Tensor:
    """One step of poses on the host, as an env hands them over: walking forward 5 cm per raw frame."""
    c2w = torch.eye(4, dtype=torch.float64).repeat(batch, gen.frames_per_step, 1, 1)
    c2w[:, :, 2, 3] = torch.arange(1, gen.frames_per_step + 1) * 0.05
    return c2w


def device_facts() -> dict:
    """Driver and device facts for the JSON. cuda-python (the optional `cuda` extra) reads what torch does not
    expose (driver version, SM clock); without it, torch's view alone."""
    facts = {"name": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
             "torch_cuda": torch.version.cuda}
    try:
        from cuda.bindings import driver
    except ImportError:
        return facts
    try:
        driver.cuInit(0)
        _, version = driver.cuDriverGetVersion()
        _, dev = driver.cuDeviceGet(torch.cuda.current_device())
        attr = driver.CUdevice_attribute
        facts["driver_version"] = f"{int(version) // 1000}.{int(version) % 1000 // 10}"
        for key, a in (("sm_count", attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
                       ("clock_khz", attr.CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
                       ("memory_clock_khz", attr.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)):
            facts[key] = int(driver.cuDeviceGetAttribute(a, dev)[1])
    except Exception as e:  # a facts table must not fail the benchmark
        facts["cuda_python_error"] = repr(e)
    return facts


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(gen: StreamingGenerator, state, c2w, n: int) -> list[float]:
    out = []
    for _ in range(n):
        sync(gen.device)
        t = time.perf_counter()
        gen.step(state, c2w)
        sync(gen.device)
        out.append(time.perf_counter() - t)
    return out


def first_frames(gen: StreamingGenerator, batch: int) -> torch.Tensor:
    h, w = gen.frame_hw
    return torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _row(gen: StreamingGenerator, preset: str, ts: list[float]) -> dict:
    ts = sorted(ts)
    p50, p99 = statistics.median(ts), ts[min(len(ts) - 1, int(round(0.99 * (len(ts) - 1))))]
    return {"preset": preset, "device": str(gen.device), "dtype": str(gen.dtype).replace("torch.", ""),
            "batch": gen.batch_size, "graph": gen.graph, "trace": gen.trace, "compile": gen.compile, "fuse": gen.fuse,
            "fuse_scope": gen.fuse_scope if gen.fuse else None,
            "passes": len(gen.sigmas) - 1,
            "steps": len(ts), "p50_ms": p50 * 1e3,
            "p99_ms": p99 * 1e3, "steps_per_s": 1.0 / p50, "frames_per_s": gen.batch_size * gen.frames_per_step / p50}


def bench_steps(preset: str, device, dtype, batch: int, n: int, graph: bool = False, **kw) -> dict:
    gen = make_generator(preset, device, dtype, batch, graph, **kw)
    state = gen.reset(first_frames(gen, batch), seed=0)
    c2w = walk(gen, batch, device)
    time_steps(gen, state, c2w, 3)  # warm-up (and graph capture)
    return _row(gen, preset, time_steps(gen, state, c2w, n))


def bench_cpu_modes(preset: str, n: int, rounds: int = 6, compile: bool = True, against: tuple[str, ...] = ()) -> dict:
    """Eager and traced (`trace=True`) steps at batch 1 on CPU, traced with the other schedule (one denoising
    pass, `denoise_timesteps=(1000, 0)`, or two, (1000, 750, 0), where the checkpoint runs one), traced on one
    thread (since the thirteenth session the traced step halves the caller's intra-op threads itself,
    `parallel.halved_threads`, so on 2 cores this row is the trace's own setting and should read the same), and
    compiled (`compile=True`: torch.compile's inductor fuses
    the small ops), timed in alternating rounds so that all see the same machine noise (a shared 2-core machine
    drifts by 10-40 % between minutes). Also: the compiled step's first call (the compilation: minutes cold, less
    from inductor's on-disk cache) and its frames against the eager step's on the same inputs. `against`: other
    checkpoints or presets, traced, in the same rounds (rows `trace <name>`)."""
    gens = [make_generator(preset, "cpu", torch.float32, 1, trace=t) for t in (False, True)]
    one = len(gens[1].sigmas) == 2   # the checkpoint's own schedule is one pass: the other row runs two
    gens.append(make_generator(preset, "cpu", torch.float32, 1, trace=True,
                               denoise_timesteps=(1000, 750, 0) if one else (1000, 0)))
    default = torch.get_num_threads()
    threads = [default, default, default]
    names = ["eager", "trace", "trace_two_pass" if one else "trace_one_pass"]
    if default > 1:  # the traced generator again, on its own state, one thread during its rounds
        gens.append(gens[1])
        threads.append(1)
        names.append("trace_one_thread")
    labels = [preset] * len(gens)
    for other in against:
        gens.append(make_generator(other, "cpu", torch.float32, 1, trace=True))
        threads.append(default)
        names.append(f"trace {_label(other)}")
        labels.append(_label(other))
    if compile:   # last: the comparison below takes gens[-1]
        gens.append(make_generator(preset, "cpu", torch.float32, 1, compile=True))
        threads.append(default)
        names.append("compile")
        labels.append(preset)
    states = [g.reset(first_frames(g, 1), seed=0) for g in gens]
    c2w = walk(gens[0], 1, "cpu")
    times: list[list[float]] = [[] for _ in gens]
    out: dict = {}
    try:
        for g, s, th in zip(gens, states, threads):
            torch.set_num_threads(th)
            if g.compile:
                print("compiling the step (torch.compile, inductor): minutes on a cold cache", flush=True)
                out["compile_first_step_s"] = time_steps(g, s, c2w, 1)[0]
            time_steps(g, s, c2w, 5)  # warm-up (the trace is recorded on the first step, then profiled twice)
        for _ in tqdm(range(rounds), desc="cpu steps, rounds", leave=False):
            for i, (g, s, th) in enumerate(zip(gens, states, threads)):
                torch.set_num_threads(th)
                times[i] += time_steps(g, s, c2w, max(1, n // rounds))
    finally:
        torch.set_num_threads(default)
    if compile:   # one step from the same state: the compiled state is overwritten with the eager one's
        states[-1].copy_(states[0])
        eager_rgb, eager_lat = gens[0].step(states[0], c2w, return_latents=True)
        comp_rgb, comp_lat = gens[-1].step(states[-1], c2w, return_latents=True)
        out["compiled_vs_eager_max_frame_diff"] = int((eager_rgb.int() - comp_rgb.int()).abs().max())
        out["compiled_vs_eager_max_latent_diff"] = float((eager_lat - comp_lat).abs().max())
    out["rows"] = [{**_row(g, label, ts), "threads": th, "row": name}
                   for g, ts, th, name, label in zip(gens, times, threads, names, labels)]
    return out


def _label(name: str) -> str:
    """A preset's name, or a checkpoint path's file stem."""
    return Path(name).stem if name.endswith(".safetensors") else name


def _replay(row: dict) -> str:
    """How a row's step ran: eager, CUDA graph, the CPU trace, or compiled on CPU."""
    fused = "graph+fuse" + (" block" if row.get("fuse_scope") == "block" else "")
    return (fused if row.get("graph") and row.get("fuse") else "graph" if row.get("graph") else
            "trace" if row.get("trace") else "compile" if row.get("compile") else "eager")


def bench_switch(preset: str, device, dtype, batch: int, n: int) -> dict:
    """CUDA graph: the same state stepped every time (it owns the captured buffers, no copies) against two
    states stepped in turn (each step moves ownership: one state copy out, one in)."""
    gen = make_generator(preset, device, dtype, batch, graph=True)
    state = gen.reset(first_frames(gen, batch), seed=0)
    c2w = walk(gen, batch, device)
    time_steps(gen, state, c2w, 3)
    fork = state.clone()
    same = statistics.median(time_steps(gen, state, c2w, n))
    turns = []
    for _ in range(n // 2):
        turns += time_steps(gen, fork, c2w, 1) + time_steps(gen, state, c2w, 1)
    alt = statistics.median(turns)
    return {"preset": preset, "batch": batch, "same_state_ms": same * 1e3, "alternating_ms": alt * 1e3,
            "state_mb": state.nbytes() / 2**20, "switch_cost_ms": (alt - same) * 1e3}


def bench_recompute(preset: str, device, dtype, lengths: list[int]) -> list[dict]:
    """One step at episode length L: streaming caches vs recomputing the visible context."""
    gen = make_generator(preset, device, dtype, 1)
    state = gen.reset(first_frames(gen, 1), seed=0)
    ref = RecomputeGenerator(gen)
    ref.reset(first_frames(gen, 1), seed=0)
    c2w = walk(gen, 1, device)
    rows, done = [], 0
    for length in tqdm(lengths, desc="cache vs recompute", leave=False):
        while done < length - 1:  # build the history with the streaming generator, reuse its latents
            _, lat = gen.step(state, c2w, return_latents=True)
            ref.latents.append(lat)
            cond, pl = gen._chunk_camera(c2w, gen._k_lat(ref.k))
            ref.conds.append(cond)
            ref.pluckers.append(pl)
            done += 1
        snap = state.clone()
        stream = statistics.median(time_steps(gen, snap, c2w, 3))
        sync(device)
        t = time.perf_counter()
        ref.step(c2w)
        sync(device)
        recompute = time.perf_counter() - t
        for lst in (ref.latents, ref.conds, ref.pluckers):
            lst.pop()
        rows.append({"preset": preset, "episode_length": length, "stream_ms": stream * 1e3,
                     "recompute_ms": recompute * 1e3, "recompute_over_stream": recompute / stream})
    return rows


def bench_flat(preset: str, device, dtype, long_steps: int, rounds: int = 24) -> dict:
    """Latency and memory at step 100 and step `long_steps`. The state at step 100 is kept (a clone) and both are
    timed at the end, in alternating rounds of 5 steps on fresh clones: this machine drifts by up to 40 % between
    minutes, and a ratio of two medians taken minutes apart measured that drift (1.41 in one run) instead of the
    state's growth. 6 rounds read 1.19 in a noisy minute where 12 read 0.99 on the same states; 12 rounds with the
    early state always first read 1.11 where 24 in alternating order read 0.995 and 1.073 (fifteenth session), so
    the order alternates and there are 24."""
    gen = make_generator(preset, device, dtype, 1)
    state = gen.reset(first_frames(gen, 1), seed=0)
    c2w = walk(gen, 1, device)
    early = None
    for i in tqdm(range(1, long_steps + 1), desc=f"{long_steps} steps ({preset})", leave=False):
        if i == 100:
            early = state.clone()
        gen.step(state, c2w)
    t100, tl = [], []
    pairs = [(early, t100), (state, tl)]
    for r in range(rounds):
        for st, out in (pairs if r % 2 == 0 else pairs[::-1]):   # which state goes first alternates
            out += time_steps(gen, st.clone(), c2w, 5)
    t100, tl = statistics.median(t100), statistics.median(tl)
    b100, bl = early.nbytes(), state.nbytes()
    return {"preset": preset, "step_100_ms": t100 * 1e3, f"step_{long_steps}_ms": tl * 1e3,
            "latency_ratio": tl / t100, "nbytes_100": b100, f"nbytes_{long_steps}": bl, "nbytes_ratio": bl / b100,
            "timing": f"{rounds} rounds of 5 steps each, in alternating order, at the end of the run"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--recompute-preset", default="micro")
    p.add_argument("--lengths", type=int, nargs="*", default=[16, 64, 256])
    p.add_argument("--long-preset", default="micro")
    p.add_argument("--long-steps", type=int, default=5000)
    p.add_argument("--gpu-presets", nargs="*", default=["tiny", "tiny64"], help="presets of the eager/graph rows")
    p.add_argument("--gpu-only", action="store_true", help="skip the CPU rows (on the GPU machine)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the compiled CPU row (its first step compiles C++ for minutes on a cold cache)")
    p.add_argument("--against", nargs="*", default=[],
                   help="checkpoints or presets traced in the same CPU rounds, each as a ratio to --preset's trace")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.platform())
    res = {"benchmark": "step_latency", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "device": name, "steps": []}
    if cuda:
        res["device_facts"] = device_facts()
    if not a.gpu_only:
        cpu = bench_cpu_modes(a.preset, 2 * a.steps, compile=not a.no_compile, against=tuple(a.against))
        res["steps"] = cpu.pop("rows")
        res.update(cpu)
        p50 = {r["row"]: r["p50_ms"] for r in res["steps"]}
        res["trace_speedup"] = p50["eager"] / p50["trace"]
        res["one_pass_speedup"] = (p50["trace"] / p50["trace_one_pass"] if "trace_one_pass" in p50
                                   else p50["trace_two_pass"] / p50["trace"])
        if "trace_one_thread" in p50:
            res["one_thread_speedup"] = p50["trace"] / p50["trace_one_thread"]
        if "compile" in p50:
            res["compile_over_trace"] = p50["trace"] / p50["compile"]
        res["against"] = {_label(x): p50[f"trace {_label(x)}"] / p50["trace"] for x in a.against}
        res["recompute"] = bench_recompute(a.recompute_preset, "cpu", torch.float32, a.lengths)
        res["flat"] = bench_flat(a.long_preset, "cpu", torch.float32, a.long_steps)
    if cuda:
        modes = {"eager": {}, "graph": {"graph": True}, "graph+fuse": {"graph": True, "fuse": True},
                 "graph+fuse block": {"graph": True, "fuse": True, "fuse_scope": "block"}}
        p50 = {}
        for preset in a.gpu_presets:
            for batch in (1, 64):
                for mode, kw in modes.items():
                    try:
                        r = bench_steps(preset, dev, torch.bfloat16, batch, a.steps, **kw)
                    except Exception as e:  # one broken row must not hide the others
                        res.setdefault("errors", []).append(f"{preset} b{batch} {mode}: {e!r}")
                        r = {"preset": preset, "device": dev, "dtype": "bfloat16", "batch": batch, "steps": 0,
                             "p50_ms": float("nan"), "p99_ms": float("nan"), "steps_per_s": float("nan"),
                             "frames_per_s": float("nan"), **kw}
                    res["steps"].append(r)
                    p50[preset, batch, mode] = r["p50_ms"]
                    print(r, flush=True)
        def over(slow: str, fast: str) -> dict:   # p50 ratio of two modes, per preset and batch
            return {f"{p}_b{b}": p50[p, b, slow] / p50[p, b, fast] for p, b, m in p50 if m == "eager"}
        res["graph_speedup"] = over("eager", "graph")
        res["fuse_speedup"] = over("graph", "graph+fuse")
        res["fuse_block_speedup"] = over("graph", "graph+fuse block")
        try:
            res["switch"] = [bench_switch(a.gpu_presets[0], dev, torch.bfloat16, b, a.steps) for b in (1, 64)]
        except Exception as e:
            res.setdefault("errors", []).append(f"switch: {e!r}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"step_latency_{dev}.json").write_text(json.dumps(res, indent=1))

    print(f"\nstreaming steps ({res['device']}, {res['threads']} threads)")
    print(f"{'preset':<8} {'device':>6} {'dtype':>9} {'B':>3} {'replay':>16} {'passes':>6} {'threads':>7} "
          f"{'p50 ms':>9} {'p99 ms':>9} {'steps/s':>8} {'frames/s':>9}")
    for r in res["steps"]:
        print(f"{r['preset']:<8} {r['device']:>6} {r['dtype']:>9} {r['batch']:>3} {_replay(r):>16} "
              f"{r.get('passes', ''):>6} {r.get('threads', ''):>7} "
              f"{r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} {r['steps_per_s']:>8.2f} {r['frames_per_s']:>9.1f}")
    if not a.gpu_only:
        print(f"\nCPU trace over eager (p50): {res['trace_speedup']:.2f}x")
        print(f"one denoising pass over two, traced (p50): {res['one_pass_speedup']:.2f}x")
        if "one_thread_speedup" in res:
            print(f"one thread over {res['threads']}, traced (p50): {res['one_thread_speedup']:.2f}x")
        for name, ratio in res["against"].items():
            print(f"{name} traced over {a.preset} traced (p50): {ratio:.2f}x")
        if "compile_over_trace" in res:
            print(f"compiled over traced (p50): {res['compile_over_trace']:.2f}x; first compiled step (the "
                  f"compilation) {res['compile_first_step_s']:.0f} s; compiled vs eager: frames max diff "
                  f"{res['compiled_vs_eager_max_frame_diff']}/255, latents "
                  f"{res['compiled_vs_eager_max_latent_diff']:.1e}")
        print(f"\ncache vs recompute ({a.recompute_preset}, one step at episode length L)")
        print(f"{'L':>5} {'stream ms':>10} {'recompute ms':>13} {'ratio':>7}")
        for r in res["recompute"]:
            print(f"{r['episode_length']:>5} {r['stream_ms']:>10.1f} {r['recompute_ms']:>13.1f} "
                  f"{r['recompute_over_stream']:>7.1f}")
        f = res["flat"]
        print(f"\nflat over long episodes ({f['preset']}): step 100 {f['step_100_ms']:.1f} ms, step {a.long_steps} "
              f"{f[f'step_{a.long_steps}_ms']:.1f} ms (ratio {f['latency_ratio']:.2f}); "
              f"nbytes ratio {f['nbytes_ratio']:.2f}")
    if cuda:
        print()
        for key, what in (("graph_speedup", "graph over eager"), ("fuse_speedup", "fused graph over graph"),
                          ("fuse_block_speedup", "fused-block graph over graph")):
            print(f"{what} (p50): " + ", ".join(f"{k} {v:.2f}x" for k, v in res[key].items()))
        for r in res.get("switch", []):
            print(f"graph, {r['preset']} b{r['batch']}: same state {r['same_state_ms']:.1f} ms, two states in turn "
                  f"{r['alternating_ms']:.1f} ms (state {r['state_mb']:.1f} MB)")
    return res


if __name__ == "__main__":
    main()
