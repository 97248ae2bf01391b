"""The published preset streaming on a GPU: a chunk eager and as a CUDA graph, and where its time goes.

    python benchmarks/published_pass.py [--out DIR] [--steps 8] [--no-profile]

`sana-wm-1600m-720p` at 704x1280, random bf16 weights, batch 1, streamed by `StreamingGenerator` exactly as a
user would: chunks of 3 latent frames (2,640 tokens, 24 raw frames at 16 fps) under a walking camera, the denoising
passes reading the KV window and GDN states, the clean pass writing them, then the decode. LTX-2's VAE is a local
download, so a stand-in decodes: our causal VAE at the published factors (32x, 8 frames, 128 channels), narrow; its
decode is timed alone and subtracted for the DiT's share. Rows, in this one process on this one GPU:
- pass x 5, no camera, eager: one chunk-causal DiT pass without camera inputs, times 5 (the row `step_latency.py`
  printed until the fifteenth session);
- step, eager / step, graph (`graph=True`: the whole step captured once, replayed): p50 ms per chunk;
- step, graph, fused (`fuse=True`: the blocks' elementwise hot spots as compiled Triton kernels, model/fused.py);
- step, graph, fused blocks (`fuse_scope="block"`: each block's whole forward compiled, one graph per kind of block);
  the fused rows also give the seconds their generator took to build, compile and capture (`compile_s`);
- DiT only: a graph row less the stand-in decode.
The real-time factor is 24 frames at 16 fps over the row. The profiles (an eager step, plain and fused) attribute
kernel time to named regions of the block, inclusive (`camera branch` holds its UCPE products), and list the
costliest kernels.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from step_latency import first_frames, time_steps, walk  # noqa: E402

import model.attention as attention  # noqa: E402
from model.config import WorldModelConfig, get_config  # noqa: E402
from model.generator import StreamingGenerator  # noqa: E402
from model.layers import CrossAttention, GLUMBConvTemp, RMSNorm  # noqa: E402
from model.transformer import SanaWMBlock, SanaWMTransformer, build_model  # noqa: E402
from model.vae import CausalVAE, CausalVAEConfig  # noqa: E402

PRESET = "sana-wm-1600m-720p"
# LTX-2's factors and latent width at the narrowest widths our causal VAE takes: the published step's shapes with a
# decode that costs little (timed alone).
STAND_IN_VAE = CausalVAEConfig(latent_channels=128, spatial_factor=32, temporal_factor=8,
                               block_out_channels=(32, 64, 128), blocks_per_level=(1, 1, 1))


def published_model(device, cfg: WorldModelConfig | None = None) -> SanaWMTransformer:
    """Random bf16 weights (N(0, 0.02)), projections fused as the generator runs them."""
    cfg = cfg or get_config(PRESET)
    model = build_model(cfg, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.eval()
    for blk in model.blocks:
        blk.attn.fuse_projections()
    return model


def published_inputs(cfg: WorldModelConfig, device) -> dict:
    """One noisy chunk of `chunk_frames` latents, no camera inputs: the chunk-causal pass `step_latency.py` timed."""
    g = torch.Generator().manual_seed(0)
    return {"latents": torch.randn(1, cfg.in_channels, cfg.chunk_frames, *cfg.latent_hw, generator=g).to(
                device, torch.bfloat16),
            "timestep": torch.full((1, cfg.chunk_frames), 727.0, device=device), "chunks": [cfg.chunk_frames]}


def time_ms(fn, n: int) -> float:
    """Mean GPU milliseconds of fn() over n calls after two warm-ups, by CUDA events."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def published_generator(model: SanaWMTransformer, graph: bool, fuse: bool = False,
                        scope: str = "ops") -> StreamingGenerator:
    """Sets the model's kernels (eager or fused) for every generator on it: measure each before building the next."""
    return StreamingGenerator(model, CausalVAE(STAND_IN_VAE), "cuda", torch.bfloat16, 1, graph=graph, fuse=fuse,
                              fuse_scope=scope)


# ---------------------------------------------------------------------------------------------------- the profile
REGIONS = {  # (owner, attribute) -> region name
    (SanaWMBlock, "forward"): "block",
    (attention.SanaWMAttention, "forward"): "self-attention",
    (attention.SanaWMAttention, "_project"): "fused projections",
    (attention.SanaWMAttention, "_main_gdn"): "main gdn branch",
    (attention.SanaWMAttention, "_main_softmax"): "main softmax branch",
    (attention.SanaWMAttention, "_camera"): "camera branch",
    (attention, "_sdpa"): "sdpa",
    (CrossAttention, "forward"): "cross-attention",
    (GLUMBConvTemp, "spatial"): "ffn spatial",
    (GLUMBConvTemp, "temporal"): "ffn temporal conv",
}
OPS_REGIONS = {  # the model's hot-path functions (model/fused.py), eager or compiled, per module
    "apply_ucpe_fast": "ucpe products", "apply_rope": "rope", "short_conv_chunk_causal": "short convs",
    "cam_beta_discount": "camera beta discount", "rms_norm": "rms norms",
    "gdn_gates": "gdn gates", "gdn_chunk_step": "gdn scan", "cam_delta_chunk_step": "camera delta scan",
}


def _ranged(fn, name: str):
    @functools.wraps(fn)
    def wrapped(*a, **k):
        with torch.profiler.record_function(name):
            return fn(*a, **k)
    return wrapped


@contextlib.contextmanager
def regions(model: SanaWMTransformer):
    """Wrap each REGIONS callable, and each module's hot-path functions, in a profiler range of its name; restores
    them on exit."""
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in REGIONS]
    for m in model.modules():
        if isinstance(m, attention.SanaWMAttention):
            saved.append((m, "ops", m.ops))
            m.ops = replace(m.ops, **{k: _ranged(getattr(m.ops, k), v) for k, v in OPS_REGIONS.items()
                                      if k != "rms_norm"})
        elif isinstance(m, RMSNorm):
            saved.append((m, "fn", m.fn))
            m.fn = _ranged(m.fn, OPS_REGIONS["rms_norm"])
    for (owner, attr), name in REGIONS.items():
        setattr(owner, attr, _ranged(getattr(owner, attr), name))
    try:
        yield
    finally:
        for owner, attr, orig in saved:
            setattr(owner, attr, orig)


def _kernel_us(evt) -> float:
    """Kernel microseconds launched under a CPU event, its children included."""
    own = sum(getattr(k, "duration", 0) for k in getattr(evt, "kernels", []))
    return own + sum(_kernel_us(c) for c in evt.cpu_children)


def profile(gen: StreamingGenerator, n: int) -> dict:
    """Kernel time per region (inclusive) and the costliest kernels of n steps of gen, in ms per pass."""
    from torch.profiler import ProfilerActivity
    state = gen.reset(first_frames(gen, 1), seed=0)
    c2w = walk(gen, 1)
    fn = functools.partial(gen.step, state, c2w)
    fn()
    torch.cuda.synchronize()
    with regions(gen.model), torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    passes = n * len(gen.sigmas)
    events = prof.events()
    by_region, kernels, total = defaultdict(float), defaultdict(lambda: [0.0, 0]), 0.0
    names = set(REGIONS.values()) | set(OPS_REGIONS.values())
    for e in events:
        if e.name in names and e.cpu_parent is not None and e.cpu_parent.name == e.name:
            continue  # a region re-entered through super() or a wrapper chain
        if e.name in names:
            by_region[e.name] += _kernel_us(e)
        for k in getattr(e, "kernels", []):
            kernels[k.name][0] += k.duration
            kernels[k.name][1] += 1
            total += k.duration
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:25]
    return {"kernel_ms_per_pass": total / passes / 1e3,
            "regions_ms_per_pass": {k: v / passes / 1e3 for k, v in sorted(by_region.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"kernel": k[:120], "ms_per_pass": v[0] / passes / 1e3, "launches_per_pass": v[1] / passes}
                            for k, v in top]}


# ---------------------------------------------------------------------------------------------------- main
def steps_ms(gen: StreamingGenerator, n: int) -> tuple[list[float], float]:
    """Wall milliseconds of n streamed chunks, and the seconds of the two warm-up chunks before them (the first graph
    step captures, the first fused steps compile)."""
    t0 = time.perf_counter()
    state = gen.reset(first_frames(gen, 1), seed=0)
    c2w = walk(gen, 1)
    for _ in range(2):
        gen.step(state, c2w)
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    return [t * 1e3 for t in time_steps(gen, state, c2w, n)], warm_s


def _decode_ms(gen: StreamingGenerator, n: int) -> float:
    """The stand-in VAE's decode of one chunk alone (subtracted to give the DiT's share of a step)."""
    state = gen.reset(first_frames(gen, 1), seed=0)
    x = torch.randn(1, gen.cfg.in_channels, gen.cfg.chunk_frames, *gen.cfg.latent_hw, device="cuda")

    def decode():
        for j in range(gen.cfg.chunk_frames):
            gen.vae.decode_step(x[:, :, j:j + 1], state.vae)
    return time_ms(decode, n)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-blocks", action="store_true", help="skip the fused-blocks row (it compiles longest)")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("published_pass.py needs a CUDA device")
    cfg = get_config(PRESET)
    model = published_model("cuda", cfg)
    passes = len(cfg.denoise_timesteps)
    video_s = cfg.chunk_frames * cfg.vae_temporal / cfg.fps
    res = {"benchmark": "published_pass", "preset": PRESET, "torch": torch.__version__,
           "device": torch.cuda.get_device_name(), "tokens": cfg.chunk_frames * cfg.tokens_per_frame,
           "passes_per_chunk": passes, "stand_in_vae": asdict(STAND_IN_VAE), "rows": {}, "profile": {}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    def row(name, chunk_ms, **kw):   # written as it comes: a later row that breaks or runs out of time keeps these
        res["rows"][name] = {"chunk_ms": chunk_ms, "pass_ms": chunk_ms / passes,
                             "realtime_factor": video_s / (chunk_ms / 1e3), **kw}
        print(f"{name}: {chunk_ms:.0f} ms per chunk", flush=True)
        (out / "published_pass_cuda.json").write_text(json.dumps(res, indent=1))

    def graph_rows(fuse: bool, scope: str = "ops"):
        label = (", fused blocks" if scope == "block" else ", fused") if fuse else ""
        try:
            ts, warm_s = steps_ms(published_generator(model, graph=True, fuse=fuse, scope=scope), a.steps)
            row(f"step, graph{label}", statistics.median(ts), p99_ms=max(ts), compile_s=warm_s)
            row(f"DiT only, graph{label}", statistics.median(ts) - res["decode_ms"])
        except Exception as e:  # one broken row must not hide the others
            res.setdefault("errors", []).append(f"graph{label}: {e!r}")

    with torch.no_grad():
        bare = functools.partial(model, **published_inputs(cfg, "cuda"))
        row("pass x 5, no camera, eager", time_ms(bare, 5) * passes)
        eager = published_generator(model, graph=False)
        ts, _ = steps_ms(eager, a.steps)
        res["decode_ms"] = _decode_ms(eager, 5)
        row("step, eager", statistics.median(ts), p99_ms=max(ts))
        if not a.no_profile:
            res["profile"]["eager"] = profile(eager, 2)
        graph_rows(fuse=False)
        graph_rows(fuse=True)   # the first steps compile the kernels
        if not a.no_profile:
            try:
                res["profile"]["fused"] = profile(published_generator(model, graph=False, fuse=True), 2)
            except Exception as e:
                res.setdefault("errors", []).append(f"fused profile: {e!r}")
        if not a.no_blocks:     # last: it compiles longest
            graph_rows(fuse=True, scope="block")
    (out / "published_pass_cuda.json").write_text(json.dumps(res, indent=1))

    prof = res["profile"]
    if prof:
        kinds = list(prof)
        print("\nkernel time per pass: " + ", ".join(f"{k} {prof[k]['kernel_ms_per_pass']:.1f} ms" for k in kinds))
        print(f"{'region (inclusive, ms per pass)':<32}" + "".join(f"{k:>9}" for k in kinds))
        for name in prof[kinds[0]]["regions_ms_per_pass"]:
            print(f"  {name:<30}" + "".join(f"{prof[k]['regions_ms_per_pass'].get(name, 0.0):9.2f}" for k in kinds))
        for k in kinds:
            print(f"costliest kernels, {k} (ms per pass, launches per pass):")
            for r in prof[k]["top_kernels"][:12]:
                print(f"  {r['ms_per_pass']:7.2f} {r['launches_per_pass']:6.0f}  {r['kernel'][:90]}")
    print(f"\n{PRESET}: {res['tokens']} tokens per chunk, {passes} passes per chunk, stand-in VAE decode "
          f"{res['decode_ms']:.1f} ms ({res['device']})")
    print(f"{'row':<34} {'ms/chunk':>9} {'ms/pass':>8} {'x real time':>11} {'warm-up s':>9}")
    for k, r in res["rows"].items():
        warm = f"{r['compile_s']:9.1f}" if "compile_s" in r else ""
        print(f"{k:<34} {r['chunk_ms']:9.0f} {r['pass_ms']:8.1f} {r['realtime_factor']:11.2f} {warm}")
    for e in res.get("errors", []):
        print("error:", e)
    return res


if __name__ == "__main__":
    main()
