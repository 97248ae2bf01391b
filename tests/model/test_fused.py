"""model/fused.py: the compiled hot-path functions against the eager ones, through whole streamed steps."""

import os
import re
from dataclasses import fields

import numpy as np
import pytest
import torch

from model.fused import EAGER, FUSIBLE
from model.generator import StreamingGenerator, micro_model

SEED = 5


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Dynamo keeps its compiled entries on each function's code object for the process; these tests add many, so
    they clear them after themselves (other tests compile the same functions under the default limit of 8)."""
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def first():
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))


def _poses(gen: StreamingGenerator, steps: int, b: int = 2) -> list[torch.Tensor]:
    """Walking forward 5 cm and turning 0.05 rad per raw frame."""
    out, k = [], gen.frames_per_step
    for s in range(steps):
        a = torch.arange(s * k + 1, (s + 1) * k + 1, dtype=torch.float64) * 0.05
        c2w = torch.eye(4, dtype=torch.float64).repeat(b, k, 1, 1)
        c2w[:, :, 0, 0], c2w[:, :, 0, 2], c2w[:, :, 2, 0], c2w[:, :, 2, 2] = a.cos(), a.sin(), -a.sin(), a.cos()
        c2w[:, :, 2, 3] = a
        out.append(c2w)
    return out


def _stream(gen: StreamingGenerator, first, steps: int = 3):
    state = gen.reset(first, seed=SEED)
    outs = [gen.step(state, c2w, return_latents=True) for c2w in _poses(gen, steps, first.shape[0])]
    return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 2)


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_fused_steps_equal_eager_steps(first, space):
    """Every hot-path function goes through torch.compile (a backend that records each graph and runs it as
    captured), and three streamed steps, the pair included, come out as the eager ones."""
    traced = set()   # the functions each captured graph's ops came from

    def recording(gm, example_inputs):
        for node in gm.graph.nodes:
            traced.update(re.findall(r", in (\w+)", node.meta.get("stack_trace") or ""))
        return gm.forward

    kw = {"warp_space": space, "cam_post_renorm": True}
    eager = _stream(StreamingGenerator(*micro_model(**kw), batch_size=2), first)
    gen = StreamingGenerator(*micro_model(**kw), batch_size=2, fuse=recording)
    fused = _stream(gen, first)
    assert all(m.ops is not EAGER for m in gen.model.modules() if hasattr(m, "ops"))
    assert {getattr(FUSIBLE, f.name).__name__ for f in fields(FUSIBLE)} <= traced   # each one went through compile
    assert torch.equal(fused[0], eager[0])
    assert (fused[1] - eager[1]).abs().max().item() < 1e-6
    gen.model.fuse_kernels(None)   # back to the eager functions
    assert all(m.ops is EAGER for m in gen.model.modules() if hasattr(m, "ops"))


def test_block_scope_compiles_whole_blocks_once_per_kind(first):
    """fuse_scope="block": each block's forward goes through torch.compile with the hot functions inlined (the
    pixel-space skip, the pair and the cache writes inside), the blocks of one kind share their graphs, and three
    streamed steps come out as the eager ones (dynamo's graph runs RoPE in real arithmetic: round-off, not bits)."""
    graphs, traced = [], set()

    def recording(gm, example_inputs):
        graphs.append(gm)
        for node in gm.graph.nodes:
            traced.update(re.findall(r", in (\w+)", node.meta.get("stack_trace") or ""))
        return gm.forward

    kw = {"warp_space": "pixel", "cam_post_renorm": True}
    eager = _stream(StreamingGenerator(*micro_model(**kw), batch_size=2), first)
    gen = StreamingGenerator(*micro_model(**kw), batch_size=2, fuse=recording, fuse_scope="block")
    fused = _stream(gen, first)
    blocks = gen.model.blocks
    assert all(m.ops is FUSIBLE for m in gen.model.modules() if hasattr(m, "ops"))
    assert {"forward", "spatial", "temporal", "_camera", "_main_gdn", "_main_softmax"} <= traced
    assert {getattr(FUSIBLE, f.name).__name__ for f in fields(FUSIBLE)} <= traced
    # a graph per kind (GDN, softmax) and call layout (a pair, a chunk): per-block graphs would be 2x the depth
    assert 2 <= len(graphs) < 2 * len(blocks)
    assert (fused[0].int() - eager[0].int()).abs().max().item() <= 1
    assert (fused[1] - eager[1]).abs().max().item() < 1e-4
    n = len(graphs)   # compiled once: a new episode (what a CUDA-graph capture replays) compiles nothing more
    again = _stream(gen, first)
    assert len(graphs) == n and torch.equal(again[0], fused[0])
    gen.model.fuse_kernels(None)
    assert all("forward" not in blk.__dict__ for blk in blocks)
    assert all(m.ops is EAGER for m in gen.model.modules() if hasattr(m, "ops"))


@pytest.mark.inductor
@pytest.mark.parametrize("scope", ["ops", "block"])
def test_inductor_lowers_both_scopes_and_matches_eager(first, scope):
    """Inductor itself (its C++ codegen on CPU; the GPU's Triton codegen shares its lowering), not a recording
    backend: every function, or every whole block, lowers and the streamed steps match eager within round-off.
    Skipped in `make test` (2-3 min of C++ compilation per scope on a 2-core CPU); `make test-inductor` runs it."""
    if os.environ.get("SANAWM_INDUCTOR") != "1":
        pytest.skip("compiles C++ for minutes: run `make test-inductor` (SANAWM_INDUCTOR=1)")
    from torch._inductor.compile_fx import compile_fx

    kw = {"warp_space": "pixel", "warp_skip_fill": True, "warp_skip_target": "chunk", "cam_post_renorm": True}
    eager = _stream(StreamingGenerator(*micro_model(**kw), batch_size=2), first)
    fused = _stream(StreamingGenerator(*micro_model(**kw), batch_size=2, fuse=compile_fx, fuse_scope=scope), first)
    assert (fused[0].int() - eager[0].int()).abs().max().item() <= 1
    assert (fused[1] - eager[1]).abs().max().item() < 1e-4


def test_fuse_needs_cuda_and_stays_out_of_trace_and_compile():
    with pytest.raises(ValueError, match="CUDA device"):
        StreamingGenerator(*micro_model(), fuse=True)
    with pytest.raises(ValueError, match="does not combine with trace or compile"):
        StreamingGenerator(*micro_model(), fuse="aot_eager", trace=True)
    with pytest.raises(ValueError, match="torch.compile backend"):
        StreamingGenerator(*micro_model(), fuse="no-such-backend")
    with pytest.raises(ValueError, match="fuse_scope must be one of"):
        StreamingGenerator(*micro_model(), fuse="aot_eager", fuse_scope="model")


@pytest.mark.gpu
@pytest.mark.parametrize("scope", ["ops", "block"])
def test_fused_kernels_on_cuda_match_eager_in_and_out_of_a_graph(first, scope):
    """Inductor's Triton kernels, bf16: the graph replays the fused step as run eagerly, without a host sync, and the
    fused step stays within bf16 round-off of the plain one."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (run on the lent GPU machine)")
    kw = {"device": "cuda", "dtype": torch.bfloat16, "batch_size": 2}
    plain = _stream(StreamingGenerator(*micro_model(), **kw), first, 4)
    fused = _stream(StreamingGenerator(*micro_model(), fuse=True, fuse_scope=scope, **kw), first, 4)
    graphed = StreamingGenerator(*micro_model(), fuse=True, fuse_scope=scope, graph=True, **kw)
    state = graphed.reset(first, seed=SEED)
    poses = _poses(graphed, 4)
    outs = [graphed.step(state, c2w) for c2w in poses[:3]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs.append(graphed.step(state, poses[3]))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph_frames = torch.cat(outs, 1)
    assert (graph_frames.int() - fused[0].int()).abs().float().mean() < 2.0
    assert (fused[0].int() - plain[0].int()).abs().float().mean() < 4.0
    assert ((fused[1] - plain[1]).float().norm() / plain[1].float().norm()).item() < 5e-2
