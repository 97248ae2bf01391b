"""Tests for model/gdn.py: scan vs naive parity, state carry, bidirectional and chunk-causal definitions, streaming.

The reference recurrences below are written independently of the module (einsum over [B, H, S, D] frame slices,
plain Python lists, reversed lists for the backward direction) so that a shared mistake cannot hide.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import gdn
from model.gdn import (
    cam_beta_discount,
    cam_delta_bidirectional,
    cam_delta_chunk_causal,
    cam_delta_chunk_step,
    cam_delta_naive,
    cam_delta_scan,
    gdn_bidirectional,
    gdn_chunk_causal,
    gdn_chunk_step,
    gdn_naive,
    gdn_scan,
    short_conv_bidirectional,
    short_conv_causal,
    short_conv_chunk_causal,
)

# (B, H, T, S, D): T not a multiple of any chunk, S not a power of two, D in {4, 12}
SHAPES = [
    (1, 1, 1, 3, 4),
    (2, 1, 5, 6, 12),
    (1, 2, 7, 10, 4),
    (2, 2, 13, 3, 12),
    (1, 2, 5, 10, 12),
    (2, 1, 7, 3, 4),
]
GRAD_SHAPES = [SHAPES[1], SHAPES[2], SHAPES[3]]
CHUNK_LAYOUTS = [[1, 3, 3], [4, 3, 2], [2, 5], [3, 1, 1, 4, 2, 2], [1], [6]]
F32_TOL = 1e-5
F64_TOL = 1e-10


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def assert_rel(name: str, out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    err = rel(out, ref)
    assert err < tol, f"{name}: relative error {err:.3e} >= {tol:.1e}"


def make_main(B, H, T, S, D, seed=0, dtype=torch.float32, states=True):
    """Random main-branch inputs: nonnegative post-ReLU q, k (keys scaled ~1/sqrt(S D) so the delta term is strong
    but contractive), beta in (0.05, 0.95), gamma in (0.5, 1), optional random initial states."""
    g = torch.Generator().manual_seed(seed)

    def rn(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    ks = 2.0 / (S * D) ** 0.5
    x = dict(
        q=torch.relu(rn(B, H, T, S, D)) * 0.3,
        k=torch.relu(rn(B, H, T, S, D)) * ks,
        v=rn(B, H, T, S, D),
        q_rot=torch.relu(rn(B, H, T, S, D)) * 0.3,
        k_rot=torch.relu(rn(B, H, T, S, D)) * ks,
        beta=0.05 + 0.9 * torch.rand(B, H, T, S, generator=g, dtype=dtype),
        gamma=0.5 + 0.5 * torch.rand(B, H, T, generator=g, dtype=dtype),
    )
    if states:
        x["s_kv"] = rn(B, H, D, D) * 0.3
        x["s_z"] = torch.relu(rn(B, H, D)) * 0.3 + 0.1
    return x


def make_cam(B, H, T, S, D, seed=0, dtype=torch.float32, state=True):
    m = make_main(B, H, T, S, D, seed=seed, dtype=dtype, states=False)
    x = dict(q=m["q_rot"], k=m["k_rot"], v=m["v"], beta=m["beta"], gamma=m["gamma"])
    if state:
        x["s"] = torch.randn(B, H, D, D, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype) * 0.3
    return x


MAIN_TENSORS = ("q", "k", "v", "q_rot", "k_rot", "beta", "gamma")
CAM_TENSORS = ("q", "k", "v", "beta", "gamma")


def frames(x: dict, names, t0: int, t1: int) -> dict:
    return {n: x[n][:, :, t0:t1] for n in names}


# ---------------------------------------------------------------------------------------------------------------------
# independent references (test-local)
# ---------------------------------------------------------------------------------------------------------------------


def ref_main_update(s_kv, s_z, x, t):
    """One frame of the main recurrence. s_kv: [B, H, D(value), D(key)], s_z: [B, H, D]."""
    g = x["gamma"][:, :, t, None, None]
    b = x["beta"][:, :, t]  # [B, H, S]
    kr, k, v = x["k_rot"][:, :, t], x["k"][:, :, t], x["v"][:, :, t]  # [B, H, S, D]
    s_kv = g * s_kv
    err = (v - torch.einsum("bhvk,bhsk->bhsv", s_kv, kr)) * b[..., None]
    s_kv = s_kv + torch.einsum("bhsv,bhsk->bhvk", err, kr)
    s_z = g[..., 0] * s_z
    s_z = s_z + torch.einsum("bhs,bhsk->bhk", (1.0 - torch.einsum("bhk,bhsk->bhs", s_z, k)) * b, k)
    return s_kv, s_z


def ref_main_read(s_kv, s_z, x, t):
    num = torch.einsum("bhvk,bhsk->bhsv", s_kv, x["q_rot"][:, :, t])
    den = torch.einsum("bhk,bhsk->bhs", s_z, x["q"][:, :, t])
    return num, den


def ref_main(x, chunks, s_kv=None, s_z=None, eps=1e-8, backward=True):
    """Forward inclusive over frames <= t (global, seeded) + backward over frames t+1 .. chunk end (reversed lists)."""
    B, H, T, S, D = x["q"].shape
    zkv, zz = x["q"].new_zeros(B, H, D, D), x["q"].new_zeros(B, H, D)
    s_kv = zkv if s_kv is None else s_kv
    s_z = zz if s_z is None else s_z
    nf, df = [], []
    for t in range(T):
        s_kv, s_z = ref_main_update(s_kv, s_z, x, t)
        n, d = ref_main_read(s_kv, s_z, x, t)
        nf.append(n)
        df.append(d)
    nb, db = [None] * T, [None] * T
    a = 0
    for c in chunks:
        b_kv, b_z = zkv, zz
        for t in reversed(range(a, a + c)):  # read out before including frame t: exclusive
            nb[t], db[t] = ref_main_read(b_kv, b_z, x, t)
            b_kv, b_z = ref_main_update(b_kv, b_z, x, t)
        a += c
    num, den = torch.stack(nf, 2), torch.stack(df, 2)
    if backward:
        num, den = num + torch.stack(nb, 2), den + torch.stack(db, 2)
    return num / (den + eps)[..., None], s_kv, s_z


def ref_cam_update(s, x, t):
    k, v = x["k"][:, :, t], x["v"][:, :, t]
    s = x["gamma"][:, :, t, None, None] * s
    err = (v - torch.einsum("bhvk,bhsk->bhsv", s, k)) * x["beta"][:, :, t, :, None]
    return s + torch.einsum("bhsv,bhsk->bhvk", err, k)


def ref_cam_read(s, x, t):
    return torch.einsum("bhvk,bhsk->bhsv", s, x["q"][:, :, t])


def ref_cam(x, chunks, s=None):
    B, H, T, S, D = x["q"].shape
    z = x["q"].new_zeros(B, H, D, D)
    s = z if s is None else s
    out = []
    for t in range(T):
        s = ref_cam_update(s, x, t)
        out.append(ref_cam_read(s, x, t))
    a = 0
    for c in chunks:
        b = z
        for t in reversed(range(a, a + c)):
            out[t] = out[t] + ref_cam_read(b, x, t)
            b = ref_cam_update(b, x, t)
        a += c
    return torch.stack(out, 2), s


# ---------------------------------------------------------------------------------------------------------------------
# main branch
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seeded", [False, True])
def test_gdn_scan_matches_naive(shape, seeded):
    x = make_main(*shape, seed=1, states=seeded)
    ref = gdn_naive(**x)
    out = gdn_scan(**x)
    for name, o, r in zip(("num", "den", "s_kv", "s_z"), out, ref):
        assert o.dtype == torch.float32
        assert_rel(name, o, r, F32_TOL)
    B, H, T, S, D = shape
    assert out[0].shape == (B, H, T, S, D) and out[1].shape == (B, H, T, S)
    assert out[2].shape == (B, H, D, D) and out[3].shape == (B, H, D)


@pytest.mark.parametrize("shape", SHAPES)
def test_gdn_naive_matches_independent_forward(shape):
    x = make_main(*shape, seed=2, dtype=torch.float64)
    num, den, s_kv, s_z = gdn_naive(**x)
    T = shape[2]
    out_ref, skv_ref, sz_ref = ref_main({n: x[n] for n in MAIN_TENSORS}, [T], x["s_kv"], x["s_z"], backward=False)
    assert_rel("out", num / (den + 1e-8)[..., None], out_ref, F64_TOL)
    assert_rel("s_kv", s_kv, skv_ref, F64_TOL)
    assert_rel("s_z", s_z, sz_ref, F64_TOL)


@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_gdn_scan_gradients_match_naive(shape):
    x0 = make_main(*shape, seed=3)
    g = torch.Generator().manual_seed(7)
    w = [torch.randn(t.shape, generator=g) for t in gdn_naive(**x0)]
    grads = []
    for fn in (gdn_naive, gdn_scan):
        x = {n: t.clone().requires_grad_(True) for n, t in x0.items()}
        loss = sum((o * wi).sum() for o, wi in zip(fn(**x), w))
        loss.backward()
        grads.append({n: t.grad for n, t in x.items()})
    for n in x0:
        assert grads[0][n] is not None and grads[0][n].abs().sum() > 0, n
        assert_rel(f"grad {n}", grads[1][n], grads[0][n], 1e-4)


@pytest.mark.parametrize("fn", [gdn_naive, gdn_scan])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3], SHAPES[5]])
def test_gdn_split_run_carries_state(fn, shape):
    x = make_main(*shape, seed=4)
    full = fn(**x)
    T = shape[2]
    for cut in sorted({1, T // 2, T - 1} - {0, T}):
        a = fn(**frames(x, MAIN_TENSORS, 0, cut), s_kv=x["s_kv"], s_z=x["s_z"])
        b = fn(**frames(x, MAIN_TENSORS, cut, T), s_kv=a[2], s_z=a[3])
        assert_rel("num", torch.cat([a[0], b[0]], 2), full[0], F32_TOL)
        assert_rel("den", torch.cat([a[1], b[1]], 2), full[1], F32_TOL)
        assert_rel("s_kv", b[2], full[2], F32_TOL)
        assert_rel("s_z", b[3], full[3], F32_TOL)


@pytest.mark.parametrize("impl", ["scan", "naive"])
@pytest.mark.parametrize("shape", SHAPES)
def test_gdn_bidirectional_matches_direct_definition(impl, shape):
    x = make_main(*shape, seed=5, dtype=torch.float64, states=False)
    out = gdn_bidirectional(**x, impl=impl)
    ref, _, _ = ref_main(x, [shape[2]])
    assert_rel("out", out, ref, F64_TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_gdn_bidirectional_scan_matches_naive_float32(shape):
    x = make_main(*shape, seed=6, states=False)
    out = gdn_bidirectional(**x)
    assert out.dtype == torch.float32
    assert_rel("out", out, gdn_bidirectional(**x, impl="naive"), F32_TOL)


def test_gdn_bidirectional_sees_the_future():
    """Changing the last frame changes earlier outputs (backward scan) but a causal forward read-out would not."""
    x = make_main(1, 2, 5, 6, 4, seed=8, dtype=torch.float64, states=False)
    y = dict(x)
    y["v"] = x["v"].clone()
    y["v"][:, :, -1] += 1.0
    a, b = gdn_bidirectional(**x), gdn_bidirectional(**y)
    assert (a[:, :, :-1] - b[:, :, :-1]).abs().max() > 1e-6
    fa, fb = gdn_scan(**x), gdn_scan(**y)
    assert torch.equal(fa[0][:, :, :-1], fb[0][:, :, :-1])


@pytest.mark.parametrize("impl", ["scan", "naive"])
@pytest.mark.parametrize("chunks", CHUNK_LAYOUTS)
def test_gdn_chunk_causal_matches_direct_definition(impl, chunks):
    T = sum(chunks)
    x = make_main(2, 2, T, 6, 4, seed=9, dtype=torch.float64)
    out, s_kv, s_z = gdn_chunk_causal(**x, chunks=chunks, impl=impl)
    ref, skv_ref, sz_ref = ref_main({n: x[n] for n in MAIN_TENSORS}, chunks, x["s_kv"], x["s_z"])
    assert_rel("out", out, ref, F64_TOL)
    assert_rel("s_kv", s_kv, skv_ref, F64_TOL)
    assert_rel("s_z", s_z, sz_ref, F64_TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_gdn_chunk_causal_single_chunk_is_bidirectional(shape):
    x = make_main(*shape, seed=10, states=False)
    out, _, _ = gdn_chunk_causal(**x, chunks=[shape[2]])
    assert_rel("out", out, gdn_bidirectional(**x), F32_TOL)


@pytest.mark.parametrize("impl", ["scan", "naive"])
@pytest.mark.parametrize("shape", SHAPES)
def test_gdn_chunk_causal_unit_chunks_is_forward_only(impl, shape):
    x = make_main(*shape, seed=11)
    out, s_kv, s_z = gdn_chunk_causal(**x, chunks=[1] * shape[2], impl=impl)
    num, den, skv_ref, sz_ref = gdn_naive(**x)
    assert_rel("out", out, num / (den + 1e-8)[..., None], F32_TOL)
    assert_rel("s_kv", s_kv, skv_ref, F32_TOL)
    assert_rel("s_z", s_z, sz_ref, F32_TOL)


@pytest.mark.parametrize("impl", ["scan", "naive"])
@pytest.mark.parametrize("chunks", [[1, 3, 3], [4, 3, 2], [3, 1, 1, 4, 2, 2]])
def test_gdn_streaming_equals_chunk_causal(impl, chunks):
    T = sum(chunks)
    x = make_main(2, 2, T, 10, 12, seed=12)
    ref, skv_ref, sz_ref = gdn_chunk_causal(**x, chunks=chunks, impl="scan")
    s_kv, s_z, outs, a = x["s_kv"], x["s_z"], [], 0
    for c in chunks:
        o, s_kv, s_z = gdn_chunk_step(**frames(x, MAIN_TENSORS, a, a + c), s_kv=s_kv, s_z=s_z, impl=impl)
        outs.append(o)
        a += c
    assert_rel("out", torch.cat(outs, 2), ref, F32_TOL)
    assert_rel("s_kv", s_kv, skv_ref, F32_TOL)
    assert_rel("s_z", s_z, sz_ref, F32_TOL)


def test_gdn_chunk_step_starts_from_zero_state():
    x = make_main(1, 2, 3, 6, 4, seed=13, states=False)
    out, s_kv, s_z = gdn_chunk_step(**x)
    ref, skv_ref, sz_ref = gdn_chunk_causal(**x, chunks=[3])
    assert_rel("out", out, ref, F32_TOL)
    assert_rel("s_kv", s_kv, skv_ref, F32_TOL)
    assert_rel("s_z", s_z, sz_ref, F32_TOL)


def test_gdn_chunk_causal_gradients_scan_match_naive():
    x0 = make_main(2, 1, 7, 6, 4, seed=14)
    g = torch.Generator().manual_seed(3)
    w = None
    grads = []
    for impl in ("naive", "scan"):
        x = {n: t.clone().requires_grad_(True) for n, t in x0.items()}
        out = gdn_chunk_causal(**x, chunks=[2, 4, 1], impl=impl)
        w = w or [torch.randn(o.shape, generator=g) for o in out]
        sum((o * wi).sum() for o, wi in zip(out, w)).backward()
        grads.append({n: t.grad for n, t in x.items()})
    for n in x0:
        assert_rel(f"grad {n}", grads[1][n], grads[0][n], 1e-4)


def test_gdn_low_precision_inputs_return_float32():
    x = {n: t.to(torch.bfloat16) for n, t in make_main(1, 1, 3, 3, 4, seed=15).items()}
    for out in (gdn_scan(**x), gdn_naive(**x), gdn_chunk_causal(**x, chunks=[1, 2])):
        assert all(o.dtype == torch.float32 for o in out)
    assert gdn_bidirectional(**{n: x[n] for n in MAIN_TENSORS}).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------------
# camera branch
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seeded", [False, True])
def test_cam_scan_matches_naive(shape, seeded):
    x = make_cam(*shape, seed=20, state=seeded)
    (o_ref, s_ref), (o, s) = cam_delta_naive(**x), cam_delta_scan(**x)
    assert o.dtype == torch.float32 and o.shape == shape and s.shape == (*shape[:2], shape[4], shape[4])
    assert_rel("out", o, o_ref, F32_TOL)
    assert_rel("s", s, s_ref, F32_TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_cam_naive_matches_independent_forward(shape):
    x = make_cam(*shape, seed=21, dtype=torch.float64)
    out, s = cam_delta_naive(**x)
    ref, s_ref = ref_cam({n: x[n] for n in CAM_TENSORS}, [1] * shape[2], x["s"])
    assert_rel("out", out, ref, F64_TOL)
    assert_rel("s", s, s_ref, F64_TOL)


@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_cam_scan_gradients_match_naive(shape):
    x0 = make_cam(*shape, seed=22)
    g = torch.Generator().manual_seed(5)
    w = [torch.randn(t.shape, generator=g) for t in cam_delta_naive(**x0)]
    grads = []
    for fn in (cam_delta_naive, cam_delta_scan):
        x = {n: t.clone().requires_grad_(True) for n, t in x0.items()}
        sum((o * wi).sum() for o, wi in zip(fn(**x), w)).backward()
        grads.append({n: t.grad for n, t in x.items()})
    for n in x0:
        assert grads[0][n].abs().sum() > 0, n
        assert_rel(f"grad {n}", grads[1][n], grads[0][n], 1e-4)


@pytest.mark.parametrize("fn", [cam_delta_naive, cam_delta_scan])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3], SHAPES[5]])
def test_cam_split_run_carries_state(fn, shape):
    x = make_cam(*shape, seed=23)
    full_o, full_s = fn(**x)
    T = shape[2]
    for cut in sorted({1, T // 2, T - 1} - {0, T}):
        oa, sa = fn(**frames(x, CAM_TENSORS, 0, cut), s=x["s"])
        ob, sb = fn(**frames(x, CAM_TENSORS, cut, T), s=sa)
        assert_rel("out", torch.cat([oa, ob], 2), full_o, F32_TOL)
        assert_rel("s", sb, full_s, F32_TOL)


@pytest.mark.parametrize("impl", ["scan", "naive"])
@pytest.mark.parametrize("shape", SHAPES)
def test_cam_bidirectional_matches_direct_definition(impl, shape):
    x = make_cam(*shape, seed=24, dtype=torch.float64, state=False)
    out = cam_delta_bidirectional(**x, impl=impl)
    ref, _ = ref_cam(x, [shape[2]])
    assert_rel("out", out, ref, F64_TOL)


@pytest.mark.parametrize("impl", ["scan", "naive"])
@pytest.mark.parametrize("chunks", CHUNK_LAYOUTS)
def test_cam_chunk_causal_matches_direct_definition(impl, chunks):
    T = sum(chunks)
    x = make_cam(2, 2, T, 6, 4, seed=25, dtype=torch.float64)
    out, s = cam_delta_chunk_causal(**x, chunks=chunks, impl=impl)
    ref, s_ref = ref_cam({n: x[n] for n in CAM_TENSORS}, chunks, x["s"])
    assert_rel("out", out, ref, F64_TOL)
    assert_rel("s", s, s_ref, F64_TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_cam_chunk_causal_single_and_unit_chunks(shape):
    x = make_cam(*shape, seed=26)
    T = shape[2]
    y = {n: x[n] for n in CAM_TENSORS}
    one, _ = cam_delta_chunk_causal(**y, chunks=[T])
    assert_rel("single chunk", one, cam_delta_bidirectional(**y), F32_TOL)
    assert_rel("bidirectional scan vs naive", one, cam_delta_bidirectional(**y, impl="naive"), F32_TOL)
    unit, s = cam_delta_chunk_causal(**x, chunks=[1] * T)
    fwd, s_ref = cam_delta_naive(**x)
    assert_rel("unit chunks", unit, fwd, F32_TOL)
    assert_rel("s", s, s_ref, F32_TOL)


@pytest.mark.parametrize("impl", ["scan", "naive"])
@pytest.mark.parametrize("chunks", [[1, 3, 3], [4, 3, 2], [3, 1, 1, 4, 2, 2]])
def test_cam_streaming_equals_chunk_causal(impl, chunks):
    T = sum(chunks)
    x = make_cam(2, 2, T, 10, 12, seed=27)
    ref, s_ref = cam_delta_chunk_causal(**x, chunks=chunks)
    s, outs, a = x["s"], [], 0
    for c in chunks:
        o, s = cam_delta_chunk_step(**frames(x, CAM_TENSORS, a, a + c), s=s, impl=impl)
        outs.append(o)
        a += c
    assert_rel("out", torch.cat(outs, 2), ref, F32_TOL)
    assert_rel("s", s, s_ref, F32_TOL)


def test_cam_beta_discount_values():
    g = torch.Generator().manual_seed(30)
    B, H, T, S, D = 2, 2, 3, 5, 4
    beta = torch.rand(B, H, T, S, generator=g)
    k = torch.relu(torch.randn(B, H, T, S, D, generator=g)) + 0.1
    # identity and shrinking keys leave beta alone (clamp at 1); uniform inflation by 2 divides it by 4
    torch.testing.assert_close(cam_beta_discount(beta, k, k), beta)
    torch.testing.assert_close(cam_beta_discount(beta, k, 0.5 * k), beta)
    torch.testing.assert_close(cam_beta_discount(beta, k, 2.0 * k), beta / 4)
    # per-token inflation, averaged over the frame's tokens, per (b, h, t)
    scale = 0.2 + 3.0 * torch.rand(B, H, T, S, 1, generator=g)
    k_after = k * scale
    out = cam_beta_discount(beta, k, k_after)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                infl = [float((k_after[b, h, t, s] ** 2).sum() / (k[b, h, t, s] ** 2).sum()) for s in range(S)]
                m = max(sum(infl) / S, 1.0)
                torch.testing.assert_close(out[b, h, t], beta[b, h, t] / m)
    assert (out <= beta + 1e-7).all() and (out < beta - 1e-3).any()


def test_cam_beta_discount_zero_keys_stay_finite():
    beta = torch.full((1, 1, 2, 3), 0.5)
    k = torch.zeros(1, 1, 2, 3, 4)
    out = cam_beta_discount(beta, k, k)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, beta)


# ---------------------------------------------------------------------------------------------------------------------
# short convolution
# ---------------------------------------------------------------------------------------------------------------------


def make_conv(B, T, S, C, K=4, seed=40, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, S, C, generator=g, dtype=dtype)
    w = torch.randn(C, 1, K, generator=g, dtype=dtype)
    tail = torch.randn(B, K - 1, S, C, generator=g, dtype=dtype)
    return x, w, tail


def conv1d_causal(x, w, tail=None):
    """Reference: torch conv1d over (B*S, C, T) with left zero padding (or the tail as left context)."""
    B, T, S, C = x.shape
    K = w.shape[-1]
    if tail is not None:
        x = torch.cat([tail, x], 1)
    xs = x.permute(0, 2, 3, 1).reshape(B * S, C, -1)  # [B*S, C, T']
    y = F.conv1d(F.pad(xs, (K - 1, 0)), w, groups=C)[..., -T:]  # [B*S, C, T]
    return y.reshape(B, S, C, T).permute(0, 3, 1, 2)


CONV_SHAPES = [(1, 1, 3, 5), (2, 5, 6, 3), (2, 7, 10, 4), (1, 13, 3, 2), (2, 2, 6, 3)]


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("with_tail", [False, True])
def test_short_conv_causal_matches_conv1d(shape, with_tail):
    x, w, tail = make_conv(*shape)
    tail = tail if with_tail else None
    y, new_tail = short_conv_causal(x, w, tail)
    torch.testing.assert_close(y, conv1d_causal(x, w, tail), rtol=1e-5, atol=1e-6)
    ctx = torch.cat([torch.zeros(x.shape[0], 3, *x.shape[2:]) if tail is None else tail, x], 1)
    assert torch.equal(new_tail, ctx[:, -3:])


@pytest.mark.parametrize("pieces", [[1, 1, 1, 1, 1, 1, 1], [2, 5], [4, 3], [1, 6]])
def test_short_conv_causal_streaming_with_tail(pieces):
    x, w, _ = make_conv(2, 7, 6, 3)
    ref, ref_tail = short_conv_causal(x, w)
    tail, ys, a = None, [], 0
    for p in pieces:
        y, tail = short_conv_causal(x[:, a : a + p], w, tail)
        ys.append(y)
        a += p
    torch.testing.assert_close(torch.cat(ys, 1), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(tail, ref_tail)


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_short_conv_bidirectional_is_symmetric_7_tap(shape):
    x, w, _ = make_conv(*shape, dtype=torch.float64)
    y = short_conv_bidirectional(x, w)
    T, K = x.shape[1], w.shape[-1]
    ref = torch.zeros_like(x)
    for t in range(T):
        for j in range(-(K - 1), K):
            if 0 <= t + j < T:
                ref[:, t] += w[:, 0, K - 1 - abs(j)] * x[:, t + j]
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    literal = conv1d_causal(x, w) + conv1d_causal(x.flip(1), w).flip(1) - w[:, 0, -1] * x
    torch.testing.assert_close(y, literal, rtol=1e-12, atol=1e-12)


def conv_chunk_reference(x, w, chunks, tail):
    """Global forward causal pass seeded by the tail + per-chunk backward pass (flipped conv1d) - centre tap."""
    fwd = conv1d_causal(x, w, tail)
    bwd = torch.cat([conv1d_causal(c.flip(1), w).flip(1) for c in x.split(chunks, 1)], 1)
    return fwd + bwd - w[:, 0, -1] * x


@pytest.mark.parametrize("chunks", CHUNK_LAYOUTS)
def test_short_conv_chunk_causal_definition_and_streaming(chunks):
    T = sum(chunks)
    x, w, tail0 = make_conv(2, T, 6, 3, dtype=torch.float64)
    y, new_tail = short_conv_chunk_causal(x, w, chunks, tail0)
    torch.testing.assert_close(y, conv_chunk_reference(x, w, chunks, tail0), rtol=1e-12, atol=1e-12)
    tail, ys, a = tail0, [], 0
    for c in chunks:
        yc, tail = short_conv_chunk_causal(x[:, a : a + c], w, [c], tail)
        ys.append(yc)
        a += c
    torch.testing.assert_close(torch.cat(ys, 1), y, rtol=1e-12, atol=1e-12)
    assert torch.equal(tail, new_tail)
    assert torch.equal(new_tail, torch.cat([tail0, x], 1)[:, -3:])


@pytest.mark.parametrize("chunks", CHUNK_LAYOUTS)
def test_short_conv_no_cross_chunk_is_per_chunk_bidirectional(chunks):
    T = sum(chunks)
    x, w, tail = make_conv(1, T, 3, 4, dtype=torch.float64)
    y, _ = short_conv_chunk_causal(x, w, chunks, tail, cross_chunk=False)
    ref = torch.cat([short_conv_bidirectional(c, w) for c in x.split(chunks, 1)], 1)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [1, 5, 7])
def test_short_conv_chunk_causal_limits(T):
    x, w, _ = make_conv(2, T, 6, 3)
    one, _ = short_conv_chunk_causal(x, w, [T])
    torch.testing.assert_close(one, short_conv_bidirectional(x, w), rtol=1e-6, atol=1e-6)
    unit, _ = short_conv_chunk_causal(x, w, [1] * T)
    torch.testing.assert_close(unit, short_conv_causal(x, w)[0], rtol=1e-6, atol=1e-6)


def test_short_conv_keeps_dtype_and_gradients():
    x, w, tail = make_conv(1, 5, 3, 2)
    y, t = short_conv_chunk_causal(x.bfloat16(), w, [2, 3], tail.bfloat16())
    assert y.dtype == torch.bfloat16 and t.dtype == torch.bfloat16
    assert torch.equal(t, x.bfloat16()[:, -3:])
    w = w.clone().requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    short_conv_chunk_causal(xg, w, [2, 3], tail)[0].square().sum().backward()
    assert w.grad is not None and xg.grad is not None and w.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------------


def test_bad_shapes_raise_value_error():
    x = make_main(1, 2, 3, 5, 4)
    bad = dict(x, k=x["k"][..., :3])
    with pytest.raises(ValueError, match=r"k must have shape \[B, H, T, S, D\].*\(1, 2, 3, 5, 4\).*\(1, 2, 3, 5, 3\)"):
        gdn_scan(**bad)
    with pytest.raises(ValueError, match=r"q must have shape \[B, H, T, S, D\] \(5 dims\)"):
        gdn_naive(**dict(x, q=x["q"][0]))
    with pytest.raises(ValueError, match=r"beta must have shape \[B, H, T, S\]"):
        gdn_scan(**dict(x, beta=x["beta"][..., :1]))
    with pytest.raises(ValueError, match=r"gamma must have shape \[B, H, T\]"):
        gdn_naive(**dict(x, gamma=x["gamma"][..., None]))
    with pytest.raises(ValueError, match=r"s_kv must have shape \[B, H, D, D\]"):
        gdn_scan(**dict(x, s_kv=x["s_kv"][:, :1]))
    with pytest.raises(ValueError, match=r"s_z must have shape \[B, H, D\]"):
        gdn_chunk_step(**dict(x, s_z=x["s_z"][..., None]))
    main = {n: x[n] for n in MAIN_TENSORS}
    with pytest.raises(ValueError, match=r"chunks \[1, 1\] sum to 2, expected T = 3"):
        gdn_chunk_causal(**main, chunks=[1, 1])
    with pytest.raises(ValueError, match=r"chunks must be a non-empty list of positive ints"):
        gdn_chunk_causal(**main, chunks=[3, 0])
    with pytest.raises(ValueError, match=r"impl must be one of"):
        gdn_bidirectional(**main, impl="fast")
    c = make_cam(1, 2, 3, 5, 4)
    with pytest.raises(ValueError, match=r"v must have shape"):
        cam_delta_scan(**dict(c, v=c["v"][:, :, :2]))
    with pytest.raises(ValueError, match=r"s must have shape \[B, H, D, D\]"):
        cam_delta_naive(**dict(c, s=c["s"][..., :2]))
    with pytest.raises(ValueError, match=r"chunks \[2\] sum to 2, expected T = 3"):
        cam_delta_chunk_causal(**{n: c[n] for n in CAM_TENSORS}, chunks=[2])
    with pytest.raises(ValueError, match=r"beta must have shape \[B, H, T, S\]"):
        cam_beta_discount(c["beta"][..., :2], c["k"], c["k"])
    with pytest.raises(ValueError, match=r"k_after must have shape"):
        cam_beta_discount(c["beta"], c["k"], c["k"][..., :2])
    xc, w, tail = make_conv(1, 4, 3, 2)
    with pytest.raises(ValueError, match=r"x must have shape \[B, T, S, C\]"):
        short_conv_causal(xc[0], w)
    with pytest.raises(ValueError, match=r"weight must have shape \[C, 1, K\] with C = 2"):
        short_conv_bidirectional(xc, w[:1])
    with pytest.raises(ValueError, match=r"tail must have shape \[B, K-1, S, C\]"):
        short_conv_chunk_causal(xc, w, [4], tail[:, :2])
    with pytest.raises(ValueError, match=r"chunks \[3\] sum to 3, expected T = 4"):
        short_conv_chunk_causal(xc, w, [3])


@pytest.mark.parametrize("S, D", [(3, 4), (10, 12)])
def test_single_frame_fast_path_matches_naive(S, D):
    """The direct one-frame streaming update (the hot path of 1-latent chunks) against the naive frame loop."""
    g = torch.Generator().manual_seed(3)
    B, H = 2, 2
    q, k, v, q_rot, k_rot = (torch.relu(torch.randn(B, H, 1, S, D, generator=g)) * 0.3 for _ in range(5))
    beta = torch.rand(B, H, 1, S, generator=g)
    gamma = torch.rand(B, H, 1, generator=g) * 0.5 + 0.5
    s_kv, s_z, s = torch.randn(B, H, D, D, generator=g), torch.randn(B, H, D, generator=g), torch.randn(B, H, D, D,
                                                                                                      generator=g)
    fast = gdn.gdn_chunk_step(q, k, v, q_rot, k_rot, beta, gamma, s_kv=s_kv, s_z=s_z)
    num, den, s_kv2, s_z2 = gdn.gdn_naive(q, k, v, q_rot, k_rot, beta, gamma, s_kv=s_kv, s_z=s_z)
    torch.testing.assert_close(fast[0], num / (den[..., None] + 1e-8), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast[1], s_kv2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast[2], s_z2, rtol=1e-5, atol=1e-6)
    out, s2 = gdn.cam_delta_chunk_step(q, k, v, beta, gamma, s=s)
    ref, s_ref = gdn.cam_delta_naive(q, k, v, beta, gamma, s=s)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s2, s_ref, rtol=1e-5, atol=1e-6)


def test_gdn_gates_per_token_beta_and_per_frame_decay():
    """beta is each token's sigmoid; gamma is one decay per frame, from the mean logit of the frame's tokens."""
    g = torch.Generator().manual_seed(3)
    b, t, s, h = 2, 3, 5, 4
    beta_logit, decay_logit = torch.randn(b, t * s, h, generator=g), torch.randn(b, t * s, h, generator=g)
    a_log, dt_bias = torch.randn(h, generator=g), torch.randn(h, generator=g)
    beta, gamma = gdn.gdn_gates(beta_logit, decay_logit, a_log, dt_bias, t)
    assert beta.shape == (b, h, t, s) and gamma.shape == (b, h, t)
    for w, head, f in ((0, 0, 0), (1, 3, 2), (1, 2, 1)):
        tokens = slice(f * s, (f + 1) * s)
        torch.testing.assert_close(beta[w, head, f], torch.sigmoid(beta_logit[w, tokens, head]))
        mean = decay_logit[w, tokens, head].mean()
        want = torch.exp(-a_log[head].exp() * torch.log1p(torch.exp(mean + dt_bias[head])))
        torch.testing.assert_close(gamma[w, head, f], want)
