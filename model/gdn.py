"""Frame-wise Gated DeltaNet ops: the recurrences behind SANA-WM's linear-attention blocks (§2, §4.1).

Pure tensor functions (no parameters, no config): the layers own projections, norms, gates and caches and call these.
Why each piece exists:

- One frame is one recurrent step: all S tokens of frame t update the state jointly (rank-S delta rule) under one
  shared decay gamma_t and per-token strengths beta_t. With K_t, V_t, Q_t the D x S matrices of frame t:
      s_kv <- gamma_t s_kv;  s_kv <- s_kv + ((V_t - s_kv K_rot,t) * beta_t) K_rot,t^T      (value x key)
      s_z  <- gamma_t s_z;   s_z  <- s_z + K_t ((1 - s_z^T K_t) * beta_t)^T                 (target 1)
      num_t = s_kv Q_rot,t;  den_t = s_z^T Q_t                                             (inclusive read-out)
  RoPE only touches the numerator stream (q_rot, k_rot); the denominator uses the unrotated q, k.
- `gdn_naive` is the executable spec (a plain fp32 frame loop). `gdn_scan` is the training form: the recurrence is
  affine in the state, s_t = s_{t-1} W_t + U_t with W_t = gamma_t (I - K diag(beta) K^T), so every W_t, U_t is built
  at once in batched matmuls, the only sequential work is one small D x D product per frame, and all frames are read
  out in one batched matmul. Both are differentiable; they agree to float32 rounding.
- A sequential D x D loop (one `baddbmm` per frame and stream) is used to combine the W_t rather than a parallel
  prefix: the prefix form costs log2(C) times the D^3 work and, on CPU, no fewer op launches; the build and read-out
  (O(D^2 S) per frame, S >> D) dominate either way.
- Bidirectional = forward inclusive scan + backward exclusive scan, defined by flip-and-shift (K, V, K_rot, beta
  flipped and shifted one frame with pad 0; gamma with pad 1; Q, Q_rot only flipped). Flip-and-shift turns the
  backward scan into b_t = b_{t+1} W_{t+1} + U_{t+1}, b_{T-1} = 0, i.e. the SAME W_t, U_t run in reverse, so the
  scan path builds the transitions once, runs both directions and reads out the summed states once. The naive path
  (impl="naive") runs the literal flip-and-shift through `gdn_naive`.
- Chunk-causal (training teacher and streaming): forward scan global across chunks and seeded with the carried state;
  backward scan confined to each chunk (reset at chunk ends). The streaming step is one chunk with the carried state.
- The camera branch (§4.1 step 6) is the numerator stream alone (no denominator), with beta discounted by the UCPE
  key inflation (`cam_beta_discount`) and the same gamma.
- The K-only short convolution along frames (FLA ShortConvolution semantics) in causal, bidirectional and
  chunk-causal forms, with an explicit tail of pre-conv frames for streaming.

Dtypes: low-precision inputs are upcast; the recurrences run and return in float32 (float64 inputs stay float64,
which the tests use). The short conv computes in float32 (float64 kept) and returns x's dtype; its tail is stored
in x's dtype, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "gdn_naive",
    "gdn_scan",
    "gdn_bidirectional",
    "gdn_chunk_causal",
    "gdn_chunk_step",
    "cam_delta_naive",
    "cam_delta_scan",
    "cam_delta_bidirectional",
    "cam_delta_chunk_causal",
    "cam_delta_chunk_step",
    "cam_beta_discount",
    "short_conv_causal",
    "short_conv_bidirectional",
    "short_conv_chunk_causal",
]

_IMPLS = ("scan", "naive")


# ---------------------------------------------------------------------------------------------------------------------
# validation and small helpers
# ---------------------------------------------------------------------------------------------------------------------


def _shape_error(fn: str, name: str, expected: str, want: tuple, got: tuple) -> ValueError:
    return ValueError(f"{fn}: {name} must have shape {expected} = {tuple(want)}, got {tuple(got)}")


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_qkv(fn: str, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> tuple[int, int, int, int, int]:
    """All of `tensors` must be [B, H, T, S, D] with the same shape and T, S, D >= 1; returns (B, H, T, S, D)."""
    first = tensors[0]
    if not isinstance(first, torch.Tensor) or first.ndim != 5:
        got = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        raise ValueError(f"{fn}: {names[0]} must have shape [B, H, T, S, D] (5 dims), got {got}")
    for name, t in zip(names[1:], tensors[1:]):
        if tuple(t.shape) != tuple(first.shape):
            raise _shape_error(fn, name, f"[B, H, T, S, D] like {names[0]}", first.shape, t.shape)
    B, H, T, S, D = first.shape
    if min(T, S, D) < 1:
        raise ValueError(f"{fn}: {names[0]} [B, H, T, S, D] needs T, S, D >= 1, got {tuple(first.shape)}")
    return B, H, T, S, D


def _check_gates(fn: str, beta: torch.Tensor, gamma: torch.Tensor, B: int, H: int, T: int, S: int) -> None:
    if tuple(beta.shape) != (B, H, T, S):
        raise _shape_error(fn, "beta", "[B, H, T, S]", (B, H, T, S), beta.shape)
    if tuple(gamma.shape) != (B, H, T):
        raise _shape_error(fn, "gamma", "[B, H, T]", (B, H, T), gamma.shape)


def _check_state(fn: str, name: str, s: torch.Tensor | None, want: tuple, expected: str) -> None:
    if s is not None and tuple(s.shape) != want:
        raise _shape_error(fn, name, expected, want, s.shape)


def _check_impl(fn: str, impl: str) -> None:
    if impl not in _IMPLS:
        raise ValueError(f"{fn}: impl must be one of {_IMPLS}, got {impl!r}")


def _check_chunks(fn: str, chunks: Sequence[int], T: int) -> list[int]:
    chunks = list(chunks)
    if not chunks or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in chunks):
        raise ValueError(f"{fn}: chunks must be a non-empty list of positive ints (frames per chunk), got {chunks}")
    if sum(chunks) != T:
        raise ValueError(f"{fn}: chunks {chunks} sum to {sum(chunks)}, expected T = {T} frames")
    return chunks


def _flip_shift(x: torch.Tensor, pad: float) -> torch.Tensor:
    """Reverse dim 2 (frames) and shift right by one frame: [x0, x1, x2] -> [pad, x2, x1]."""
    head = torch.full_like(x[:, :, :1], pad)
    return torch.cat([head, x[:, :, 1:].flip(2)], dim=2)


def _backward_resets(chunks: Sequence[int]) -> list[bool]:
    """reset[t]: frame t is the last frame of its chunk, so its exclusive backward state is zero."""
    reset = []
    for c in chunks:
        reset += [False] * (c - 1) + [True]
    return reset


# ---------------------------------------------------------------------------------------------------------------------
# scan building blocks (private)
# ---------------------------------------------------------------------------------------------------------------------


def _delta_transitions(
    k: torch.Tensor, v: torch.Tensor | None, beta: torch.Tensor, gamma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame affine maps s -> s W + U of the delta rule, for all frames at once.

    k: [B, H, T, S, D], v: [B, H, T, S, D] or None (target 1, the denominator stream), beta: [B, H, T, S],
    gamma: [B, H, T].
    Returns W: [B, H, T, D, D] = gamma (I - K diag(beta) K^T) and U: [B, H, T, D, D] = V diag(beta) K^T
    (value x key), or for v None U: [B, H, T, 1, D] = (K beta)^T.
    """
    # gamma is folded into the key weights and the identity added in place on the fresh matmul output (autograd-safe:
    # matmul's backward does not read its output), saving two full passes over [T, D, D] memory.
    w = (k * (-beta * gamma.unsqueeze(-1)).unsqueeze(-1)).transpose(-1, -2) @ k  # [B, H, T, D, D] = -g K b K^T
    w.diagonal(dim1=-2, dim2=-1).add_(gamma.unsqueeze(-1))  # + g I
    if v is None:
        u = beta.unsqueeze(-2) @ k  # [B, H, T, 1, S] @ [B, H, T, S, D] -> [B, H, T, 1, D]
    else:
        u = (v * beta.unsqueeze(-1)).transpose(-1, -2) @ k  # [B, H, T, D(value), D(key)]
    return w, u


def _scan_forward(w: torch.Tensor, u: torch.Tensor, s0: torch.Tensor | None) -> list[torch.Tensor]:
    """Inclusive states s_t = s_{t-1} w_t + u_t for every frame.

    w: [B, H, T, D, D], u: [B, H, T, R, D], s0: [B, H, R, D] or None (zeros).
    Returns T tensors [B*H, R, D].
    """
    B, H, T, R, D = u.shape
    u = u.reshape(B * H, T, R, D)
    w = w.reshape(B * H, T, D, D)  # a view whenever B, H are mergeable (always for our builders)
    s = None if s0 is None else s0.reshape(B * H, R, D)
    out = []
    for t in range(T):
        s = u[:, t] if s is None else torch.baddbmm(u[:, t], s, w[:, t])  # [B*H, R, D]
        out.append(s)
    return out


def _scan_backward(w: torch.Tensor, u: torch.Tensor, reset: Sequence[bool]) -> list[torch.Tensor | None]:
    """Exclusive backward states b_t = b_{t+1} w_{t+1} + u_{t+1}, zero (None) where reset[t].

    This is the forward recurrence on flip-and-shifted inputs, flipped back, confined to chunks by the resets.
    w: [B, H, T, D, D], u: [B, H, T, R, D]. Returns T entries [B*H, R, D] or None for a zero state.
    """
    B, H, T, R, D = u.shape
    u = u.reshape(B * H, T, R, D)
    w = w.reshape(B * H, T, D, D)
    out: list[torch.Tensor | None] = [None] * T
    b = None
    for t in range(T - 1, -1, -1):
        if reset[t]:
            b = None
        else:
            b = u[:, t + 1] if b is None else torch.baddbmm(u[:, t + 1], b, w[:, t + 1])
        out[t] = b
    return out


def _combine(fwd: list[torch.Tensor], bwd: list[torch.Tensor | None] | None, B: int, H: int) -> torch.Tensor:
    """Sum forward and backward per-frame states and stack them: T x [B*H, R, D] -> [B, H, T, R, D]."""
    if bwd is not None:
        fwd = [f if b is None else f + b for f, b in zip(fwd, bwd)]
    st = torch.stack(fwd, dim=1)  # [B*H, T, R, D]
    return st.view(B, H, *st.shape[1:])


def _gdn_states(q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z, reset):
    """Scan-form core shared by all main-branch entry points (inputs already validated and upcast).

    reset None: forward only. Otherwise the backward exclusive scan with the given per-frame resets is added to the
    states before the read-out (read-out is linear in the state).
    Returns num [B, H, T, S, D], den [B, H, T, S], final forward s_kv [B, H, D, D], s_z [B, H, D].
    """
    B, H = q.shape[:2]
    w_kv, u_kv = _delta_transitions(k_rot, v, beta, gamma)  # [B, H, T, D, D] x2
    w_z, u_z = _delta_transitions(k, None, beta, gamma)  # [B, H, T, D, D], [B, H, T, 1, D]
    # s_z is carried as the row s_z^T: s_z^T <- s_z^T W_z^T + U_z^T
    w_z = w_z.transpose(-1, -2)
    s_z0 = None if s_z is None else s_z.unsqueeze(-2)  # [B, H, 1, D]
    f_kv = _scan_forward(w_kv, u_kv, s_kv)
    f_z = _scan_forward(w_z, u_z, s_z0)
    b_kv = b_z = None
    if reset is not None and not all(reset):
        b_kv = _scan_backward(w_kv, u_kv, reset)
        b_z = _scan_backward(w_z, u_z, reset)
    st_kv = _combine(f_kv, b_kv, B, H)  # [B, H, T, D, D]
    st_z = _combine(f_z, b_z, B, H)  # [B, H, T, 1, D]
    num = q_rot @ st_kv.transpose(-1, -2)  # [B, H, T, S, D]
    den = (q @ st_z.transpose(-1, -2)).squeeze(-1)  # [B, H, T, S]
    D = q.shape[-1]
    return num, den, f_kv[-1].view(B, H, D, D), f_z[-1].view(B, H, D)


def _cam_states(q, k, v, beta, gamma, s, reset):
    """Scan-form core of the camera branch; same conventions as `_gdn_states`. Returns out [B, H, T, S, D], s."""
    B, H = q.shape[:2]
    w, u = _delta_transitions(k, v, beta, gamma)  # [B, H, T, D, D] x2
    f = _scan_forward(w, u, s)
    b = _scan_backward(w, u, reset) if reset is not None and not all(reset) else None
    st = _combine(f, b, B, H)  # [B, H, T, D, D]
    D = q.shape[-1]
    return q @ st.transpose(-1, -2), f[-1].view(B, H, D, D)


# ---------------------------------------------------------------------------------------------------------------------
# main branch
# ---------------------------------------------------------------------------------------------------------------------


def _prep_main(fn, q, k, v, q_rot, k_rot, beta, gamma, s_kv=None, s_z=None):
    B, H, T, S, D = _check_qkv(fn, ("q", "k", "v", "q_rot", "k_rot"), (q, k, v, q_rot, k_rot))
    _check_gates(fn, beta, gamma, B, H, T, S)
    _check_state(fn, "s_kv", s_kv, (B, H, D, D), "[B, H, D, D]")
    _check_state(fn, "s_z", s_z, (B, H, D), "[B, H, D]")
    dt = _compute_dtype(q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z)
    return tuple(None if t is None else t.to(dt) for t in (q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z))


def gdn_naive(q, k, v, q_rot, k_rot, beta, gamma, s_kv=None, s_z=None):
    """Executable spec of the frame-wise GDN recurrence: a plain frame loop, forward, inclusive read-out.

    Args:
        q, k, v, q_rot, k_rot: [B, H, T, S, D] (T frames = recurrent steps, S tokens per frame).
        beta: [B, H, T, S] per-token update strength in (0, 1) (already sigmoid-ed).
        gamma: [B, H, T] per-frame decay in (0, 1].
        s_kv: [B, H, D, D] (value x key) initial state, zeros if None.
        s_z: [B, H, D] initial denominator state, zeros if None.

    Returns:
        num: [B, H, T, S, D], den: [B, H, T, S], and the states after the last frame s_kv: [B, H, D, D],
        s_z: [B, H, D]; float32 (float64 if any input is float64).
    """
    args = _prep_main("gdn_naive", q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z)
    q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z = args
    B, H, T, S, D = q.shape
    if s_kv is None:
        s_kv = q.new_zeros(B, H, D, D)
    if s_z is None:
        s_z = q.new_zeros(B, H, D)
    s_z = s_z.unsqueeze(-1)  # [B, H, D, 1]
    nums, dens = [], []
    for t in range(T):
        # D x S views of frame t: columns are tokens
        Qt, Kt, Vt = q[:, :, t].mT, k[:, :, t].mT, v[:, :, t].mT  # [B, H, D, S]
        Qr, Kr = q_rot[:, :, t].mT, k_rot[:, :, t].mT  # [B, H, D, S]
        bt = beta[:, :, t].unsqueeze(-2)  # [B, H, 1, S]
        gt = gamma[:, :, t, None, None]  # [B, H, 1, 1]
        s_kv = gt * s_kv
        s_kv = s_kv + ((Vt - s_kv @ Kr) * bt) @ Kr.mT
        s_z = gt * s_z
        s_z = s_z + Kt @ ((1.0 - s_z.mT @ Kt) * bt).mT
        nums.append((s_kv @ Qr).mT)  # [B, H, S, D]
        dens.append((s_z.mT @ Qt).squeeze(-2))  # [B, H, S]
    return torch.stack(nums, dim=2), torch.stack(dens, dim=2), s_kv, s_z.squeeze(-1)


def gdn_scan(q, k, v, q_rot, k_rot, beta, gamma, s_kv=None, s_z=None):
    """Training form of `gdn_naive` (same arguments and results): parallel transition build + D x D scan.

    Args:
        q, k, v, q_rot, k_rot: [B, H, T, S, D].
        beta: [B, H, T, S]; gamma: [B, H, T].
        s_kv: [B, H, D, D] (value x key) or None; s_z: [B, H, D] or None.

    Returns:
        num: [B, H, T, S, D], den: [B, H, T, S], s_kv: [B, H, D, D], s_z: [B, H, D] (after the last frame).
    """
    args = _prep_main("gdn_scan", q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z)
    return _gdn_states(*args, reset=None)


def _main_backward_naive(q, k, v, q_rot, k_rot, beta, gamma):
    """Literal backward exclusive scan of one segment: flip-and-shift, forward naive scan, flip back."""
    num, den, _, _ = gdn_naive(
        q.flip(2),
        _flip_shift(k, 0.0),
        _flip_shift(v, 0.0),
        q_rot.flip(2),
        _flip_shift(k_rot, 0.0),
        _flip_shift(beta, 0.0),
        _flip_shift(gamma, 1.0),
    )
    return num.flip(2), den.flip(2)


def gdn_chunk_causal(q, k, v, q_rot, k_rot, beta, gamma, chunks, s_kv=None, s_z=None, eps=1e-8, impl="scan"):
    """Chunk-causal GDN: forward scan global across chunks (seeded by the state), backward scan inside each chunk.

    Frame t of chunk [a, b) sees frames <= t through the forward state (all earlier chunks plus the carried state)
    and frames t+1 .. b-1 through the backward exclusive scan.

    Args:
        q, k, v, q_rot, k_rot: [B, H, T, S, D].
        beta: [B, H, T, S]; gamma: [B, H, T].
        chunks: frames per chunk, summing to T (e.g. [1, 3, 3]).
        s_kv: [B, H, D, D] or None; s_z: [B, H, D] or None: forward state before frame 0 (zeros if None).
        eps: added to the denominator.
        impl: "scan" (training/inference form) or "naive" (literal frame loops with flip-and-shift).

    Returns:
        out: [B, H, T, S, D] = (num_f + num_b) / (den_f + den_b + eps), and the forward state after the last frame
        s_kv: [B, H, D, D], s_z: [B, H, D].
    """
    fn = "gdn_chunk_causal"
    _check_impl(fn, impl)
    q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z = _prep_main(fn, q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z)
    chunks = _check_chunks(fn, chunks, q.shape[2])
    if impl == "scan":
        num, den, s_kv, s_z = _gdn_states(q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z, _backward_resets(chunks))
    else:
        num, den, s_kv, s_z = gdn_naive(q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z)
        nb, db = [], []
        for seg in zip(*(x.split(chunks, dim=2) for x in (q, k, v, q_rot, k_rot, beta, gamma))):
            n, d = _main_backward_naive(*seg)
            nb.append(n)
            db.append(d)
        num = num + torch.cat(nb, dim=2)
        den = den + torch.cat(db, dim=2)
    return num / (den + eps).unsqueeze(-1), s_kv, s_z


def gdn_bidirectional(q, k, v, q_rot, k_rot, beta, gamma, eps=1e-8, impl="scan"):
    """Bidirectional GDN (the released bidirectional model): forward inclusive + backward exclusive scans.

    The backward scan is the forward recurrence on flip-and-shifted inputs (K, V, K_rot, beta flipped and shifted by
    one frame with pad 0, gamma with pad 1, Q and Q_rot only flipped), flipped back.

    Args:
        q, k, v, q_rot, k_rot: [B, H, T, S, D].
        beta: [B, H, T, S]; gamma: [B, H, T].
        eps: added to the denominator.
        impl: "scan" or "naive".

    Returns:
        out: [B, H, T, S, D] = (num_f + num_b) / (den_f + den_b + eps).
    """
    fn = "gdn_bidirectional"
    _check_impl(fn, impl)
    B, H, T, S, D = _check_qkv(fn, ("q", "k", "v", "q_rot", "k_rot"), (q, k, v, q_rot, k_rot))
    return gdn_chunk_causal(q, k, v, q_rot, k_rot, beta, gamma, [T], eps=eps, impl=impl)[0]


def gdn_chunk_step(q, k, v, q_rot, k_rot, beta, gamma, s_kv=None, s_z=None, eps=1e-8, impl="scan"):
    """Streaming step: `gdn_chunk_causal` on exactly one chunk (all T frames of the inputs) with the carried state.

    Only the chunk's own per-frame states are materialised ([B, H, T_chunk, D, D], needed for the batched read-out);
    the backward scan starts from zero at the chunk's last frame.

    Args:
        q, k, v, q_rot, k_rot: [B, H, T, S, D] (one chunk); beta: [B, H, T, S]; gamma: [B, H, T].
        s_kv: [B, H, D, D] or None; s_z: [B, H, D] or None: the state carried from the previous chunk.

    Returns:
        out: [B, H, T, S, D], and the forward state after the chunk s_kv: [B, H, D, D], s_z: [B, H, D].
    """
    _check_qkv("gdn_chunk_step", ("q", "k", "v", "q_rot", "k_rot"), (q, k, v, q_rot, k_rot))
    if q.shape[2] == 1 and impl == "scan":  # one frame: no backward part; the direct update is cheapest
        return _gdn_one_frame(*_prep_main("gdn_chunk_step", q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z), eps=eps)
    return gdn_chunk_causal(q, k, v, q_rot, k_rot, beta, gamma, [q.shape[2]], s_kv, s_z, eps=eps, impl=impl)


def _gdn_one_frame(q, k, v, q_rot, k_rot, beta, gamma, s_kv, s_z, eps):
    """A single-frame streaming step, written directly (the streaming hot path of 1-latent chunks).

    Same maths as `gdn_naive` for T = 1: decay, one rank-S delta update of each stream, inclusive read-out.
    q, k, v, q_rot, k_rot: [B, H, 1, S, D] -> out [B, H, 1, S, D], s_kv [B, H, D, D], s_z [B, H, D].
    """
    B, H, _, S, D = q.shape
    q, k, v, q_rot, k_rot, beta = (t[:, :, 0] for t in (q, k, v, q_rot, k_rot, beta))  # [B, H, S, .]
    g = gamma[:, :, 0, None, None]                                                     # [B, H, 1, 1]
    s_kv = g * (s_kv if s_kv is not None else q.new_zeros(B, H, D, D))
    s_z = g[..., 0] * (s_z if s_z is not None else q.new_zeros(B, H, D))
    err = (v - k_rot @ s_kv.transpose(-1, -2)) * beta[..., None]                        # [B, H, S, D]
    s_kv = s_kv + err.transpose(-1, -2) @ k_rot                                         # [B, H, D, D]
    err_z = (1.0 - (k @ s_z[..., None])[..., 0]) * beta                                 # [B, H, S]
    s_z = s_z + (err_z[..., None, :] @ k)[..., 0, :]                                    # [B, H, D]
    num = q_rot @ s_kv.transpose(-1, -2)                                                # [B, H, S, D]
    den = (q @ s_z[..., None])[..., 0]                                                  # [B, H, S]
    return (num / (den[..., None] + eps))[:, :, None], s_kv, s_z


# ---------------------------------------------------------------------------------------------------------------------
# camera branch: single-path (numerator-only) delta rule
# ---------------------------------------------------------------------------------------------------------------------


def _prep_cam(fn, q, k, v, beta, gamma, s=None):
    B, H, T, S, D = _check_qkv(fn, ("q", "k", "v"), (q, k, v))
    _check_gates(fn, beta, gamma, B, H, T, S)
    _check_state(fn, "s", s, (B, H, D, D), "[B, H, D, D]")
    dt = _compute_dtype(q, k, v, beta, gamma, s)
    return tuple(None if t is None else t.to(dt) for t in (q, k, v, beta, gamma, s))


def cam_delta_naive(q, k, v, beta, gamma, s=None):
    """Executable spec of the camera-branch delta rule (no denominator), forward, inclusive read-out.

    Per frame: s <- gamma_t s; s <- s + ((V_t - s K_t) * beta_t) K_t^T; out_t = s Q_t (D x S matrices of frame t).

    Args:
        q, k, v: [B, H, T, S, D] (UCPE-transformed q', k', v').
        beta: [B, H, T, S] (discounted, see `cam_beta_discount`); gamma: [B, H, T] (shared with the main branch).
        s: [B, H, D, D] (value x key) initial state, zeros if None.

    Returns:
        out: [B, H, T, S, D], s: [B, H, D, D] after the last frame.
    """
    q, k, v, beta, gamma, s = _prep_cam("cam_delta_naive", q, k, v, beta, gamma, s)
    B, H, T, S, D = q.shape
    if s is None:
        s = q.new_zeros(B, H, D, D)
    outs = []
    for t in range(T):
        Qt, Kt, Vt = q[:, :, t].mT, k[:, :, t].mT, v[:, :, t].mT  # [B, H, D, S]
        s = gamma[:, :, t, None, None] * s
        s = s + ((Vt - s @ Kt) * beta[:, :, t].unsqueeze(-2)) @ Kt.mT
        outs.append((s @ Qt).mT)  # [B, H, S, D]
    return torch.stack(outs, dim=2), s


def cam_delta_scan(q, k, v, beta, gamma, s=None):
    """Training form of `cam_delta_naive` (same arguments and results): parallel transition build + D x D scan."""
    args = _prep_cam("cam_delta_scan", q, k, v, beta, gamma, s)
    return _cam_states(*args, reset=None)


def cam_delta_chunk_causal(q, k, v, beta, gamma, chunks, s=None, impl="scan"):
    """Chunk-causal camera delta rule: forward global (seeded by s) + backward exclusive inside each chunk, summed.

    Args:
        q, k, v: [B, H, T, S, D]; beta: [B, H, T, S]; gamma: [B, H, T].
        chunks: frames per chunk, summing to T.
        s: [B, H, D, D] or None: forward state before frame 0.
        impl: "scan" or "naive".

    Returns:
        out: [B, H, T, S, D] = out_f + out_b, and the forward state after the last frame s: [B, H, D, D].
    """
    fn = "cam_delta_chunk_causal"
    _check_impl(fn, impl)
    q, k, v, beta, gamma, s = _prep_cam(fn, q, k, v, beta, gamma, s)
    chunks = _check_chunks(fn, chunks, q.shape[2])
    if impl == "scan":
        return _cam_states(q, k, v, beta, gamma, s, _backward_resets(chunks))
    out, s = cam_delta_naive(q, k, v, beta, gamma, s)
    ob = []
    for qc, kc, vc, bc, gc in zip(*(x.split(chunks, dim=2) for x in (q, k, v, beta, gamma))):
        o, _ = cam_delta_naive(qc.flip(2), _flip_shift(kc, 0.0), _flip_shift(vc, 0.0), _flip_shift(bc, 0.0),
                               _flip_shift(gc, 1.0))
        ob.append(o.flip(2))
    return out + torch.cat(ob, dim=2), s


def cam_delta_bidirectional(q, k, v, beta, gamma, impl="scan"):
    """Bidirectional camera delta rule: forward inclusive + flip-and-shift backward exclusive, summed (no division).

    Args:
        q, k, v: [B, H, T, S, D]; beta: [B, H, T, S]; gamma: [B, H, T]; impl: "scan" or "naive".

    Returns:
        out: [B, H, T, S, D].
    """
    fn = "cam_delta_bidirectional"
    _check_impl(fn, impl)
    _check_qkv(fn, ("q", "k", "v"), (q, k, v))
    return cam_delta_chunk_causal(q, k, v, beta, gamma, [q.shape[2]], impl=impl)[0]


def cam_delta_chunk_step(q, k, v, beta, gamma, s=None, impl="scan"):
    """Streaming step of the camera branch: `cam_delta_chunk_causal` on one chunk with the carried state.

    Args:
        q, k, v: [B, H, T, S, D] (one chunk); beta: [B, H, T, S]; gamma: [B, H, T]; s: [B, H, D, D] or None.

    Returns:
        out: [B, H, T, S, D], s: [B, H, D, D] after the chunk.
    """
    _check_qkv("cam_delta_chunk_step", ("q", "k", "v"), (q, k, v))
    if q.shape[2] == 1 and impl == "scan":  # one frame: no backward part; the direct update is cheapest
        q, k, v, beta, gamma, s = _prep_cam("cam_delta_chunk_step", q, k, v, beta, gamma, s)
        B, H, _, S, D = q.shape
        q, k, v, b = (t[:, :, 0] for t in (q, k, v, beta))                              # [B, H, S, .]
        s = gamma[:, :, 0, None, None] * (s if s is not None else q.new_zeros(B, H, D, D))
        s = s + ((v - k @ s.transpose(-1, -2)) * b[..., None]).transpose(-1, -2) @ k     # [B, H, D, D]
        return (q @ s.transpose(-1, -2))[:, :, None], s
    return cam_delta_chunk_causal(q, k, v, beta, gamma, [q.shape[2]], s, impl=impl)


def gdn_gates(beta_logit, decay_logit, A_log, dt_bias, frames: int):
    """The GDN gates of a call's tokens, in float32: beta = sigmoid(logit) per token, and one decay per frame,
    gamma = exp(-exp(A_log) softplus(mean over the frame's tokens of the decay logit + dt_bias)). The projection is
    linear, so the mean of the projected logits is the projection of the frame's mean input.

    Args:
        beta_logit, decay_logit: [B, T*S, H]; A_log, dt_bias: [H]; frames: T.

    Returns:
        beta: [B, H, T, S]; gamma: [B, H, T].
    """
    b, n, h = beta_logit.shape
    beta = torch.sigmoid(beta_logit.float()).view(b, frames, n // frames, h)
    a = decay_logit.float().view(b, frames, n // frames, h).mean(2)                      # (B, T, H)
    gamma = torch.exp(-torch.exp(A_log.float()) * torch.nn.functional.softplus(a + dt_bias.float()))
    return beta.permute(0, 3, 1, 2), gamma.transpose(1, 2)


def cam_beta_discount(beta, k_before, k_after, eps=1e-6):
    """Dynamic beta discount of the camera branch (§4.1 step 5): keep UCPE key inflation from over-writing the state.

    inflation^2 = ||k_after||^2 / ||k_before||^2 per token and head (norms over D, each clamped at `eps` as in the
    reference, so all-zero ReLU keys give a finite ratio); beta_cam = beta / clamp_min(mean over the frame's S tokens
    of inflation^2, 1).

    Args:
        beta: [B, H, T, S]; k_before: [B, H, T, S, D] (after ReLU and key scale); k_after: [B, H, T, S, D] (after UCPE).

    Returns:
        beta_cam: [B, H, T, S], float32 (float64 kept).
    """
    fn = "cam_beta_discount"
    B, H, T, S, D = _check_qkv(fn, ("k_before", "k_after"), (k_before, k_after))
    if tuple(beta.shape) != (B, H, T, S):
        raise _shape_error(fn, "beta", "[B, H, T, S]", (B, H, T, S), beta.shape)
    dt = _compute_dtype(beta, k_before, k_after)
    n_before = torch.linalg.vector_norm(k_before.to(dt), dim=-1).clamp_min(eps)  # [B, H, T, S]
    n_after = torch.linalg.vector_norm(k_after.to(dt), dim=-1).clamp_min(eps)  # [B, H, T, S]
    frame_inflation = ((n_after / n_before) ** 2).mean(dim=-1, keepdim=True)  # [B, H, T, 1]
    return beta.to(dt) / frame_inflation.clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------------------------
# K-only short convolution along frames
# ---------------------------------------------------------------------------------------------------------------------


def _check_conv(fn: str, x: torch.Tensor, weight: torch.Tensor, tail: torch.Tensor | None) -> int:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must have shape [B, T, S, C] (4 dims), got {got}")
    B, T, S, C = x.shape
    if T < 1:
        raise ValueError(f"{fn}: x [B, T, S, C] needs T >= 1, got {tuple(x.shape)}")
    if weight.ndim != 3 or weight.shape[0] != C or weight.shape[1] != 1 or weight.shape[2] < 1:
        raise ValueError(f"{fn}: weight must have shape [C, 1, K] with C = {C}, got {tuple(weight.shape)}")
    K = weight.shape[2]
    _check_state(fn, "tail", tail, (B, K - 1, S, C), "[B, K-1, S, C]")
    return K


def _conv_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _taps(weight: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """[C, 1, K] -> [K, C]; row i multiplies x[t - (K-1-i)] in the causal pass."""
    return weight[:, 0, :].to(dt).mT


def _add_tap(y: torch.Tensor, tap: torch.Tensor, xs: torch.Tensor, valid: list[bool]) -> torch.Tensor:
    """y + tap * xs on the frames where valid[t] (xs: [B, T, S, C] shifted input, tap: [C])."""
    if not any(valid):
        return y
    if all(valid):
        return y + tap * xs
    # frames selected by slicing, not a host-built mask tensor: no host-to-device copy (CUDA-graph safe)
    xs = torch.cat([xs[:, t:t + 1] if v else torch.zeros_like(xs[:, t:t + 1]) for t, v in enumerate(valid)], 1)
    return y + tap * xs


def short_conv_causal(x, weight, tail=None):
    """Depthwise causal conv along frames, per spatial token (FLA ShortConvolution, no bias, no activation).

    y[t] = sum_j weight[:, 0, K-1-j] * x[t-j], j = 0..K-1, with x before the stream start taken from `tail`
    (zeros if None).

    Args:
        x: [B, T, S, C]; weight: [C, 1, K]; tail: [B, K-1, S, C] pre-conv frames preceding x, or None.

    Returns:
        y: [B, T, S, C] in x's dtype; new_tail: [B, K-1, S, C] = the last K-1 frames of (tail ++ x).
    """
    K = _check_conv("short_conv_causal", x, weight, tail)
    B, T, S, C = x.shape
    if tail is None:
        tail = x.new_zeros(B, K - 1, S, C)
    xx = torch.cat([tail.to(x.dtype), x], dim=1)  # [B, K-1+T, S, C]
    dt = _conv_dtype(x)
    w = _taps(weight, dt)  # [K, C]
    xf = xx.to(dt)
    y = sum(w[i] * xf[:, i : i + T] for i in range(K))  # [B, T, S, C]
    return y.to(x.dtype), xx[:, T:]


def short_conv_bidirectional(x, weight):
    """Non-causal short conv of the bidirectional blocks: causal(x) + flip(causal(flip(x))) - w_last * x.

    That is a symmetric (2K-1)-tap filter y[t] = sum_{j=-(K-1)}^{K-1} weight[:, 0, K-1-|j|] * x[t+j], zero padded.

    Args:
        x: [B, T, S, C]; weight: [C, 1, K].

    Returns:
        y: [B, T, S, C] in x's dtype.
    """
    _check_conv("short_conv_bidirectional", x, weight, None)
    return short_conv_chunk_causal(x, weight, [x.shape[1]], cross_chunk=False)[0]


def short_conv_chunk_causal(x, weight, chunks, tail=None, cross_chunk=True):
    """Chunk-causal short conv: forward causal pass + backward pass isolated inside each chunk - w_last * x.

    With cross_chunk=True (main branch) the forward pass runs across chunks, seeded by `tail`; streaming one chunk at
    a time with the returned tail equals one call over all chunks. With cross_chunk=False (camera branch in
    streaming) the forward pass also restarts with zero context at every chunk, so each chunk is the bidirectional
    conv of itself and `tail` is not read.

    Args:
        x: [B, T, S, C]; weight: [C, 1, K]; chunks: frames per chunk, summing to T;
        tail: [B, K-1, S, C] pre-conv frames preceding x, or None (zeros).

    Returns:
        y: [B, T, S, C] in x's dtype; new_tail: [B, K-1, S, C] = the last K-1 frames of (tail ++ x).
    """
    fn = "short_conv_chunk_causal"
    K = _check_conv(fn, x, weight, tail)
    B, T, S, C = x.shape
    chunks = _check_chunks(fn, chunks, T)
    start, end = [], []
    a = 0
    for c in chunks:
        start += [a] * c
        end += [a + c] * c
        a += c
    if tail is None:
        tail = x.new_zeros(B, K - 1, S, C)
    tail = tail.to(x.dtype)
    dt = _conv_dtype(x)
    w = _taps(weight, dt)  # [K, C]
    ctx = tail.to(dt) if cross_chunk else torch.zeros_like(tail, dtype=dt)
    xx = torch.cat([ctx, x.to(dt), x.new_zeros(B, K - 1, S, C, dtype=dt)], dim=1)  # [B, K-1+T+K-1, S, C]
    o = K - 1  # xx[:, o + t] = x[t]
    y = w[K - 1] * xx[:, o : o + T]  # centre tap, counted once
    for j in range(1, K):
        tap = w[K - 1 - j]  # multiplies x[t-j] (forward) and x[t+j] (backward)
        back = xx[:, o + j : o + j + T]  # x[t+j], zero past the end
        y = _add_tap(y, tap, back, [t + j < end[t] for t in range(T)])
        fwd = xx[:, o - j : o - j + T]  # x[t-j], tail / zeros before the start
        y = _add_tap(y, tap, fwd, [True] * T if cross_chunk else [t - j >= start[t] for t in range(T)])
    new_tail = torch.cat([tail, x], dim=1)[:, T:]  # [B, K-1, S, C]
    return y.to(x.dtype), new_tail
