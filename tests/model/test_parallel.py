"""beside/join: inline outside a trace, a prim::fork under torch.jit.trace, with the same results and side effects."""

import pytest
import torch

from model.parallel import beside, halved_threads, join

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the CPU trace is torch.jit


def _body(x, s):
    h = x @ x.T

    def branch():                      # reads h, writes s: like a camera branch writing its own cache
        s.mul_(0.5).add_(h.mean())
        return torch.tanh(h)

    handle = beside(branch)
    main = torch.relu(h) * 2.0
    return main + join(handle)


def test_inline_outside_a_trace():
    calls = []
    handle = beside(lambda: calls.append(1) or 7)
    assert calls == [1] and join(handle) == 7      # ran at once, in order


def test_trace_records_a_fork_with_the_same_results_and_writes():
    x = torch.randn(5, 3)
    s_eager, s_traced = torch.ones(2), torch.ones(2)
    fn = torch.jit.trace(_body, (x, torch.ones(2)), check_trace=False)
    assert "prim::fork" in str(fn.graph)
    for _ in range(3):                             # the write lands every replay, before the next one reads it
        torch.testing.assert_close(fn(x, s_traced), _body(x, s_eager))
    torch.testing.assert_close(s_traced, s_eager)


@pytest.mark.parametrize(("outside", "inside"), [(4, 2), (3, 1), (2, 1), (1, 1)])
def test_halved_threads_sets_half_inside_and_restores_after(outside, inside):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(outside)
        with halved_threads() as k:
            assert k == inside and torch.get_num_threads() == inside
        assert torch.get_num_threads() == outside
        with pytest.raises(RuntimeError, match="boom"), halved_threads():
            raise RuntimeError("boom")
        assert torch.get_num_threads() == outside      # restored on an error too
    finally:
        torch.set_num_threads(before)
