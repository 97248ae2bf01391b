"""Compiled forms of the block's elementwise hot spots, for the CUDA step (`StreamingGenerator(fuse=True)`).

Why: on the GPU a published-size pass is bound by hundreds of small elementwise kernels, not by its matmuls
(`benchmarks/published_pass.py` profiles it): the UCPE 4x4 products, RoPE, the short convs along frames, the camera
branch's beta discount and the RMSNorms. `torch.compile` (inductor) turns each of these pure functions into one or a
few Triton kernels, and a CUDA graph captures them like any other kernel. The eager functions in `EAGER` are the
reference; `tests/model/test_fused.py` pits the two.

A model opts in with `fuse_kernels` (like `fuse_projections`: derived, inference only). Each function is compiled
for the static shapes it meets (`dynamic=False`); a published-size stream meets a dozen per function, so each call
raises dynamo's recompile limit to `RECOMPILE_LIMIT` while it runs instead of changing it for the process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from . import gdn
from .camera import apply_ucpe_fast
from .layers import rms_norm
from .rope import apply_rope

RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class Ops:
    """The functions a block calls on its hot path; `EAGER` is the plain set."""

    rms_norm: Callable
    apply_rope: Callable
    apply_ucpe_fast: Callable
    short_conv_chunk_causal: Callable
    cam_beta_discount: Callable


EAGER = Ops(rms_norm=rms_norm, apply_rope=apply_rope, apply_ucpe_fast=apply_ucpe_fast,
            short_conv_chunk_causal=gdn.short_conv_chunk_causal, cam_beta_discount=gdn.cam_beta_discount)

_LIMIT_KEY = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def _compiled(fn: Callable, backend) -> Callable:
    compiled = torch.compile(fn, backend=backend, dynamic=False)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch._dynamo.config.patch(**{_LIMIT_KEY: RECOMPILE_LIMIT}):
            return compiled(*args, **kwargs)
    return run


@functools.cache
def fused_ops(backend: str | Callable = "inductor") -> Ops:
    """Every `Ops` function compiled with `backend` (one table per backend, shared by the models that use it)."""
    return Ops(**{f.name: _compiled(getattr(EAGER, f.name), backend) for f in fields(Ops)})
