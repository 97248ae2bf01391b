"""Two independent halves of a traced step run at once on the CPU's inter-op pool.

Why: a tiny step is thousands of small ops, too small for intra-op threads to pay (one thread is 0.98x of two,
benchmarks/README.md). But some work is independent: the camera branch of every attention block and its main
branch; the clean cache pass and the VAE decode of the same latent. Under `torch.jit.trace` (the CPU replay,
`StreamingGenerator(trace=True)`) `beside` records `fn` as a `prim::fork` subgraph that the replay runs on another
thread while the caller goes on, and `join` waits for it. Outside a trace both run inline, in order, so eager
mode, training and CUDA-graph capture see plain calls: the eager step stays the reference the trace is tested
against. The two halves must not write what the other reads (each writes its own caches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["beside", "join"]


def beside(fn: Callable[[], Any]) -> Any:
    """Start fn() beside the caller when tracing (a future), else run it now (its result)."""
    return torch.jit.fork(fn) if torch.jit.is_tracing() else fn()


def join(handle: Any) -> Any:
    """The result of `beside`'s fn, waiting for it if it ran as a fork."""
    return torch.jit.wait(handle) if isinstance(handle, torch._C.Future) else handle
