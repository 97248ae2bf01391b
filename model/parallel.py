"""Two independent halves of a traced step run at once on the CPU's inter-op pool.

Why: a tiny step is thousands of small ops, too small for intra-op threads to pay (one thread is 0.98x of two,
benchmarks/README.md). But some work is independent: the camera branch of every attention block and its main
branch; the skip's chunk targets and the denoising pass; the clean cache pass and the VAE decode of the same latent
(chunks of several latents; 1-latent chunks run their clean pass in the next step's model call). Under
`torch.jit.trace` (the CPU replay, `StreamingGenerator(trace=True)`) `beside` records `fn` as a `prim::fork`
subgraph that the replay runs on another thread while the caller goes on, and `join` waits for it. Outside a trace
both run inline, in order, so eager mode, training and CUDA-graph capture see plain calls: the eager step stays the
reference the trace is tested against. The two halves must not write what the other reads (each writes its own
caches).

A replay with forks runs under `halved_threads`: two halves that each use all cores' intra-op threads
oversubscribe them (tiny, traced, on the 2-core CPU: 150 ms a step at 2 intra-op threads, 114 ms at 1).
"""

from __future__ import annotations

import atexit
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["beside", "halved_threads", "join"]


_EXIT_GRACE_S = 0.02


def _exit_grace() -> None:
    """Give the inter-op pool a moment at interpreter exit. Why: a replay that waited on a fork may finish
    unwinding on a pool thread just after the step returned; a process that exits at once can then tear down
    Python under it (seen once: "terminate called without an active exception" right after a last step; known
    upstream, pytorch/pytorch#60998)."""
    time.sleep(_EXIT_GRACE_S)


def beside(fn: Callable[[], Any]) -> Any:
    """Start fn() beside the caller when tracing (a future), else run it now (its result)."""
    if not torch.jit.is_tracing():
        return fn()
    atexit.unregister(_exit_grace)   # once per process, however many traces record forks
    atexit.register(_exit_grace)
    return torch.jit.fork(fn)


def join(handle: Any) -> Any:
    """The result of `beside`'s fn, waiting for it if it ran as a fork."""
    return torch.jit.wait(handle) if isinstance(handle, torch._C.Future) else handle


@contextlib.contextmanager
def halved_threads() -> Iterator[int]:
    """Intra-op threads at half the caller's (at least 1) inside, restored after; yields the count inside.
    Why: the inter-op pool's threads take the count that is set when the pool starts (torch sets it once per pool
    thread), so the first replay under this starts them at the half too, and each half of a fork then runs on
    its own share of the cores instead of both spinning on all of them."""
    n = torch.get_num_threads()
    k = max(1, n // 2)
    if k != n:
        torch.set_num_threads(k)
    try:
        yield k
    finally:
        if k != n:
            torch.set_num_threads(n)
