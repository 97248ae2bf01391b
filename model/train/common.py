"""Shared training plumbing: dataclass -> argparse, counter-based seeding, resumable state, torchrun DDP, CSV logs.

What is notable, and why:
- Every entry script has one `@dataclass Args` whose attribute docstrings become the `--help` text, so the config,
  its documentation and the CLI cannot drift apart (`parse_args`).
- Randomness is counter-based: each step draws from generators seeded by (seed, step, rank) (`step_generator`), so
  a resumed run replays exactly the data and noise an uninterrupted one would, and no RNG stream has to be saved
  per rank. The LR is a pure function of the step (`cosine_lr`), so there is no scheduler object to restore.
- `last.pt` holds plain tensors, dicts, lists and numbers only: `torch.load(weights_only=True)` reads it, and it is
  written atomically (temp file + rename), so a kill mid-write never leaves a corrupt checkpoint.
- SIGTERM and the first Ctrl-C only raise a flag (`StopFlag`); the loop finishes its step, writes `last.pt` and
  stops. Under DDP the flag is all-reduced each step so every rank stops at the same step.
- DDP is torch.distributed with an explicit gradient all-reduce after backward (`allreduce_grads`) instead of the
  DistributedDataParallel wrapper: it is deterministic, needs no `find_unused_parameters` for the unused
  checkpoint-layout parameters (raymap embedder, GDN gates of softmax blocks), and allows several forwards per step
  (few-step pre-rolls, rollouts). Parameters are broadcast from rank 0 at start, so ranks start and stay identical.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import hashlib
import inspect
import math
import os
import signal
import textwrap
import time
import types
import typing
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from ..camera import resize_crop_intrinsics

# ----------------------------------------------------------------------------------------------------------------------
# Config: dataclass -> argparse


@dataclass(kw_only=True)
class RunArgs:
    """The run plumbing every trainer shares (its own Args subclass this and add the model's fields)."""

    weight_decay: float = 0.01
    """AdamW weight decay on matrices"""
    grad_clip: float = 1.0
    """clip the global gradient norm (0 = off)"""
    ckpt_every: int = 500
    """write last.pt every this many steps"""
    log_every: int = 20
    """train.csv interval in steps"""
    seed: int = 0
    """seed of the initialisation and of the per-step draws"""
    device: str = "auto"
    """cuda, cpu or auto"""
    threads: int = 0
    """torch CPU threads (0 = torch default)"""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)"""
    data_on_device: bool = True
    """keep the training data on the GPU, so batches are cut there"""
    resume: bool = False
    """continue from out/last.pt"""
    ddp: bool = False
    """join a torchrun job (gloo on CPU, nccl on CUDA); --batch is per process"""
    progress: bool = True
    """tqdm progress bar"""


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right under each field), read from its source and
    its bases' (a subclass's docstring wins)."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_tuple(kind):
    def parse(text: str):
        parts = [p for p in text.replace(" ", "").split(",") if p]
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse


def parse_args(cls, argv: list[str] | None = None, prog: str | None = None):
    """Build an argparse parser from a dataclass's fields (`--snake-case` names, docstrings as help) and parse.

    Supported field types: int, float, str, bool (`--x` / `--no-x`), `X | None` and `tuple[X, ...]` (comma-separated).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    doc = inspect.getdoc(cls) or ""
    module_doc = inspect.getdoc(inspect.getmodule(cls)) or ""
    parser = argparse.ArgumentParser(prog=prog, description=module_doc or doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    own = set(getattr(cls, "__annotations__", {}))
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):   # the class's own fields first
        tp = hints[f.name]
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in args if a is not type(None))           # X | None -> X
            args = typing.get_args(tp)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        help_text = docs.get(f.name, "").replace("%", "%%")
        if not required and tp is not bool:  # BooleanOptionalAction adds its own default
            help_text += " (default: %(default)s)"
        name = "--" + f.name.replace("_", "-")
        if tp is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(tp) is tuple:
            parser.add_argument(name, type=_parse_tuple(args[0]), default=default, required=required,
                                help=help_text, metavar=f"{args[0].__name__},...")
        else:
            parser.add_argument(name, type=tp, default=default, required=required, help=help_text)
    ns = parser.parse_args(argv)
    return cls(**vars(ns))


def args_dict(args) -> dict:
    """A dataclass as a plain dict (tuples as lists) for JSON sidecars and `last.pt`."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(args).items()}


# ----------------------------------------------------------------------------------------------------------------------
# Seeding and schedules


def seed_everything(seed: int) -> None:
    """Seed the global torch RNG (model init); step randomness uses `step_generator` instead."""
    torch.manual_seed(seed)


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0,
                   device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by (seed, step, rank, stream): the same draws whether or not the run was resumed."""
    key = hashlib.blake2b(f"{seed}/{step}/{rank}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(key, "little") & (2**63 - 1))


def cosine_lr(step: int, base: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `min_ratio * base` at `total` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at `lr` times its own "lr_scale" (1 unless given)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Devices, precision, images


def resolve_device(name: str, dist: Dist | None = None) -> torch.device:
    """"cuda" / "cpu" / "auto"; under DDP on CUDA each rank takes its LOCAL_RANK device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if dist is not None and dist.world > 1:
            return torch.device("cuda", dist.local_rank)
    return torch.device(name)


def setup_threads(threads: int, device: torch.device) -> None:
    """CPU threads (0 = leave torch's default); fast matmul paths on CUDA."""
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False  # tiny convs; keep algorithm choice deterministic


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op on CPU (fp32 there, so CPU runs are exactly reproducible)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_unit(frames_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, F, H, W, 3) -> float (B, 3, F, H, W) in [-1, 1]."""
    return frames_u8.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, F, H, W) in [-1, 1] -> uint8 (B, F, H, W, 3), rounded as the generator does."""
    return x.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


def fit_frames(frames: np.ndarray | torch.Tensor, intrinsics: np.ndarray | torch.Tensor | None,
               hw: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 (F, H, W, 3) frames and (F, 4) pixel intrinsics -> resized (aspect kept) and centre-cropped to hw.

    hw None or equal to the frame size returns the inputs unchanged (as tensors). Intrinsics follow
    `model.camera.resize_crop_intrinsics`, the published preprocessing.
    """
    frames = torch.as_tensor(frames)
    k = None if intrinsics is None else torch.as_tensor(intrinsics, dtype=torch.float64)
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    src = tuple(frames.shape[1:3])
    if hw is None or tuple(hw) == src:
        return frames, k
    dh, dw = hw
    s = max(dh / src[0], dw / src[1])
    rh, rw = max(dh, int(round(src[0] * s))), max(dw, int(round(src[1] * s)))
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (rh - dh) // 2, (rw - dw) // 2
    x = x[:, :, top:top + dh, left:left + dw].round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.contiguous(), None if k is None else resize_crop_intrinsics(k, src, (dh, dw))


# ----------------------------------------------------------------------------------------------------------------------
# Distributed


@dataclass
class Dist:
    """This process's place in the job. world == 1 means single-process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_ddp(enabled: bool, device_name: str) -> Dist:
    """Join the torchrun job when `enabled` (gloo on CPU, nccl on CUDA); else a single-process Dist."""
    if not enabled:
        return Dist()
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"--ddp expects to be launched by torchrun (env {missing} not set); e.g. "
                           "`torchrun --nproc_per_node=2 -m model.train.dit_train ... --ddp`")
    dist = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(dist.local_rank)
    tdist.init_process_group("nccl" if cuda else "gloo")
    return dist


def teardown_ddp(dist: Dist) -> None:
    if dist.active and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def broadcast_module(module: nn.Module, dist: Dist) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if dist.active:
        for t in module.state_dict().values():
            tdist.broadcast(t, src=0)


def allreduce_grads(params: list[nn.Parameter], dist: Dist) -> None:
    """Average gradients over ranks through one flat buffer. Parameters without a gradient are skipped; every rank
    runs the same code path, so the set is the same on all ranks."""
    if not dist.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat.div_(dist.world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def allreduce_mean(values: dict[str, float], dist: Dist, device: torch.device) -> dict[str, float]:
    """Mean of scalar metrics over ranks (for logging)."""
    if not dist.active or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return dict(zip(keys, (t / dist.world).tolist()))


def any_rank(flag: bool, dist: Dist, device: torch.device) -> bool:
    """True on every rank if it is True on any rank."""
    if not dist.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


# ----------------------------------------------------------------------------------------------------------------------
# Stopping, checkpoints, EMA


class StopFlag:
    """Turns SIGTERM and the first SIGINT into a flag the loop polls; a second SIGINT interrupts at once.

    Use as a context manager; the previous handlers come back on exit.
    """

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def save_state(path: str | Path, state: dict) -> Path:
    """torch.save to a temp file then rename: `path` is always a complete checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | Path) -> dict:
    """A `last.pt` written by `save_state`, read with weights_only=True (plain tensors and containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: expected a training state at {path}, found none")
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resume_args(saved: dict, args, keys: tuple[str, ...]) -> None:
    """Refuse to resume a run whose shape-defining arguments changed."""
    now = args_dict(args)
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in keys if saved.get(k) != now[k]]
    if diff:
        raise ValueError("--resume: the run was started with different arguments: " + "; ".join(diff))


@torch.no_grad()
def ema_update_(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema <- ema + (1 - d)(model - ema), with d = min(decay, (1 + step) / (10 + step)) (fast early tracking)."""
    d = min(decay, (1 + step) / (10 + step))
    e_params = [p for p in ema.parameters()]
    m_params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e_params, m_params, 1.0 - d)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def state_hash(module_or_sd: nn.Module | dict) -> str:
    """sha256 over a state_dict's names and bytes: equal hashes mean bit-identical weights."""
    sd = module_or_sd.state_dict() if isinstance(module_or_sd, nn.Module) else module_or_sd
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Logging


class CSVLog:
    """Append-only CSV with a fixed header; on resume, rows past the resumed step are dropped (they will be redone).
    A no-op on ranks other than 0."""

    def __init__(self, path: str | Path, fields: list[str], enabled: bool = True, resume_step: int | None = None):
        self.path, self.fields, self.enabled = Path(path), list(fields), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r.get("step", 0))) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a CSVLog as floats (empty cells dropped)."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]


class Throughput:
    """Samples per second over the last logging interval."""

    def __init__(self):
        self.t, self.n = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.n += n

    def rate(self) -> float:
        now = time.perf_counter()
        r = self.n / max(now - self.t, 1e-9)
        self.t, self.n = now, 0
        return r

