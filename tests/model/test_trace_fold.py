"""trace_fold.specialize: the folded trace against the plain trace (the reference), on toy bodies and on the
micro step, with what may fold and what must not."""

import warnings

import numpy as np
import pytest
import torch

from model.generator import StreamingGenerator, micro_model
from model.parallel import beside, join
from model.trace_fold import count_nodes, specialize

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the CPU trace is torch.jit


def _trace(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # TracerWarnings: the bodies convert traced values on purpose
        return torch.jit.trace(fn, args, check_trace=False)


def _body(x, s):
    b, n = x.shape
    y = x.float()[:, : n // 2].reshape(b * (n // 2))        # no-op cast, a full slice along dim 0, shape arithmetic

    def branch():                                           # the same inside a fork subgraph
        return s.to(torch.float32)[:b].sum() * x.shape[1]

    handle = beside(branch)
    return y.to(torch.float64) * 2 + join(handle)           # a real cast: must stay


def test_folds_shape_ops_no_op_casts_and_full_slices_in_forks_too():
    x, s = torch.randn(4, 6), torch.randn(4, 3)
    fn = _trace(_body, x, s)
    before = count_nodes(fn.graph, ("aten::size",)), count_nodes(fn.graph, ("aten::to",))
    fast = specialize(fn)
    assert torch.equal(fast(x, s), fn(x, s)) and fast(x, s).dtype == torch.float64
    assert before[0] >= 3 and count_nodes(fast.graph, ("aten::size",)) == 0
    assert count_nodes(fast.graph, ("aten::to",)) == 1          # only the float64 cast is left
    # the original is untouched, its fork subgraph included (Graph.copy shares subgraphs)
    assert (count_nodes(fn.graph, ("aten::size",)), count_nodes(fn.graph, ("aten::to",))) == before
    x2, s2 = torch.randn(4, 6), torch.randn(4, 3)             # new values, the recorded shapes
    assert torch.equal(fast(x2, s2), fn(x2, s2))


def test_partial_slices_and_slices_with_computed_ends_stay():
    def body(x):
        return x[1:] + x[:-1], x[: x.shape[0] - 2]            # partial; an end computed from a traced size

    x = torch.randn(5, 2)
    fn = _trace(body, x)
    fast = specialize(fn)
    for a, b in zip(fast(x), fn(x)):
        assert torch.equal(a, b)
    assert fast(x)[1].shape == (3, 2)    # a computed end is no constant when the slice is checked: never "whole"
    assert count_nodes(fast.graph, ("aten::slice",)) == 3


def test_specialized_step_equals_the_plain_trace_bit_for_bit():
    """The micro step (pixel space, forks, the skip's targets) traced with and without folding: same frames, latents
    and state, step by step, through a fork."""
    kw = {"warp_space": "pixel", "warp_skip_fill": True, "warp_skip_target": "chunk"}
    plain = StreamingGenerator(*micro_model(**kw), batch_size=2, trace=True, specialize=False)
    fast = StreamingGenerator(*micro_model(**kw), batch_size=2, trace=True)
    first = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    sp, sf = plain.reset(first, seed=3), fast.reset(first, seed=3)
    c2w = torch.eye(4, dtype=torch.float64).repeat(2, plain.frames_per_step, 1, 1)
    for i in range(4):
        c2w[..., 2, 3] += 0.05
        if i == 2:
            sp, sf = sp.clone(), sf.clone()
        rp, lp = plain.step(sp, c2w, return_latents=True)
        rf, lf = fast.step(sf, c2w, return_latents=True)
        assert torch.equal(rp, rf) and torch.equal(lp, lf)
        assert all(torch.equal(a, b) for a, b in zip(sp._all(), sf._all()))
    g_plain, g_fast = plain._replays[2].graph, fast._replays[2].graph
    assert count_nodes(g_plain, ("aten::size",)) > 100 and count_nodes(g_fast, ("aten::size",)) == 0
    assert count_nodes(g_fast, ("aten::to", "aten::slice")) < count_nodes(g_plain, ("aten::to", "aten::slice")) / 2
    assert count_nodes(g_fast, ("prim::fork",)) == count_nodes(g_plain, ("prim::fork",))
