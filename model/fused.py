"""Compiled forms of the block's elementwise hot spots, for the CUDA step (`StreamingGenerator(fuse=True)`).

Why: on the GPU a published-size pass is bound by hundreds of small elementwise kernels, not by its matmuls
(`benchmarks/published_pass.py` profiles it): the UCPE 4x4 products, RoPE, the short convs along frames, the camera
branch's beta discount and renorm, the GDN gates, the RMSNorms, and the fp32 elementwise prep around the streamed GDN
and camera recurrences. `torch.compile` (inductor) turns each of these pure functions into a few Triton kernels (the
recurrences' matmuls stay cuBLAS calls), and a CUDA graph captures them like any other kernel. The eager functions
in `EAGER` are the reference; `FUSIBLE` is what gets compiled, the same functions except where another form fuses
better (the UCPE products as multiply-adds); `tests/model/test_fused.py` pits the two.

A model opts in with `fuse_kernels` (like `fuse_projections`: derived, inference only), at one of two scopes:
- "ops": each function above compiled on its own (`fused_ops`); what runs between them stays eager;
- "block": every block's whole forward compiled (`fused_forward`), the `FUSIBLE` functions inlined, so the glue
  between them fuses too (modulation, gating, casts, the FFN's GLU). One compiled forward serves all blocks of a
  kind (dynamo guards on the values it reads, not on the module), so compile time does not grow with depth.
Each function is compiled for the static shapes it meets (`dynamic=False`); a published-size stream meets a dozen
per function, so each call raises dynamo's recompile limit to `RECOMPILE_LIMIT` while it runs instead of changing it
for the process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from . import gdn
from .camera import apply_ucpe_fast, apply_ucpe_pointwise, post_ucpe_renorm
from .layers import rms_norm
from .rope import apply_rope

RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class Ops:
    """The functions a block calls on its hot path; `EAGER` is the plain set."""

    rms_norm: Callable
    apply_rope: Callable
    apply_ucpe_fast: Callable
    post_ucpe_renorm: Callable
    short_conv_chunk_causal: Callable
    cam_beta_discount: Callable
    gdn_gates: Callable
    gdn_chunk_step: Callable
    cam_delta_chunk_step: Callable


EAGER = Ops(rms_norm=rms_norm, apply_rope=apply_rope, apply_ucpe_fast=apply_ucpe_fast,
            post_ucpe_renorm=post_ucpe_renorm, short_conv_chunk_causal=gdn.short_conv_chunk_causal,
            cam_beta_discount=gdn.cam_beta_discount, gdn_gates=gdn.gdn_gates, gdn_chunk_step=gdn.gdn_chunk_step,
            cam_delta_chunk_step=gdn.cam_delta_chunk_step)
# What `fused_ops` compiles: EAGER, but the UCPE products as multiply-adds (a matmul stays a cuBLAS call in inductor)
FUSIBLE = replace(EAGER, apply_ucpe_fast=apply_ucpe_pointwise)

_LIMIT_KEY = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def _compiled(fn: Callable, backend) -> Callable:
    compiled = torch.compile(fn, backend=backend, dynamic=False)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch._dynamo.config.patch(**{_LIMIT_KEY: RECOMPILE_LIMIT}):
            return compiled(*args, **kwargs)
    return run


SCOPES = ("ops", "block")


@functools.cache
def fused_forward(forward: Callable, backend: str | Callable = "inductor") -> Callable:
    """A module class's `forward` compiled with `backend`, once per (function, backend): bind it to each module."""
    return _compiled(forward, backend)


@functools.cache
def fused_ops(backend: str | Callable = "inductor") -> Ops:
    """Every `FUSIBLE` function compiled with `backend` (one table per backend, shared by the models that use it)."""
    return Ops(**{f.name: _compiled(getattr(FUSIBLE, f.name), backend) for f in fields(Ops)})
