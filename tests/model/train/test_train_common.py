"""Training plumbing: dataclass CLI, counter-based seeding, LR schedule, CSV resume, hashes, frame fitting."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from model.config import get_config
from model.train.common import (
    CSVLog,
    RunArgs,
    cosine_lr,
    field_docs,
    fit_frames,
    parse_args,
    read_csv,
    state_hash,
    step_generator,
)
from model.train.dit_train import parse_seq_schedule, seq_at


@dataclass
class _Args:
    data: str
    """where the data is"""
    steps: int = 10
    """how many steps"""
    lr: float = 1e-3
    frames: tuple[int, ...] = (1, 5)
    """raw frames"""
    val: str | None = None
    amp: bool = True


def test_parse_args_types_defaults_and_docstrings(capsys):
    a = parse_args(_Args, ["--data", "x.json", "--steps", "7", "--frames", "1,5,9", "--no-amp", "--val", "v"])
    assert a == _Args(data="x.json", steps=7, lr=1e-3, frames=(1, 5, 9), val="v", amp=False)
    assert parse_args(_Args, ["--data", "d"]) == _Args(data="d")
    assert field_docs(_Args) == {"data": "where the data is", "steps": "how many steps", "frames": "raw frames"}
    with pytest.raises(SystemExit):
        parse_args(_Args, ["--help"])
    assert "how many steps (default: 10)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # required field missing
        parse_args(_Args, [])


@dataclass
class _Sub(RunArgs):
    data: str
    """the data"""


def test_parse_args_reads_inherited_fields_and_their_docs(capsys):
    a = parse_args(_Sub, ["--data", "d", "--threads", "2", "--no-progress"])
    assert (a.data, a.threads, a.progress, a.seed, a.log_every) == ("d", 2, False, 0, 20)
    docs = field_docs(_Sub)
    assert docs["data"] == "the data"
    assert docs["grad_clip"].startswith("clip the global gradient norm")             # inherited
    with pytest.raises(SystemExit):
        parse_args(_Sub, ["--help"])
    out = capsys.readouterr().out
    assert "tqdm progress bar" in out and out.index("--data") < out.index("--grad-clip")   # own fields first


def test_step_generator_is_a_function_of_seed_step_rank():
    def draw(*key):
        return torch.rand(4, generator=step_generator(*key))

    assert torch.equal(draw(0, 5, 0), draw(0, 5, 0))
    assert not torch.equal(draw(0, 5, 0), draw(0, 6, 0))
    assert not torch.equal(draw(0, 5, 0), draw(0, 5, 1))
    assert not torch.equal(draw(0, 5, 0), draw(1, 5, 0))


def test_cosine_lr_warmup_peak_and_floor():
    lrs = [cosine_lr(s, 1.0, 10, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert cosine_lr(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)


def test_csv_log_drops_rows_past_the_resumed_step(tmp_path):
    path = tmp_path / "m.csv"
    log = CSVLog(path, ["step", "loss"])
    for s in range(1, 6):
        log.write({"step": s, "loss": 1.0 / s})
    CSVLog(path, ["step", "loss"], resume_step=3).write({"step": 4, "loss": 9.0})
    rows = read_csv(path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == 9.0
    CSVLog(tmp_path / "off.csv", ["step"], enabled=False).write({"step": 1})
    assert not (tmp_path / "off.csv").exists()


def test_state_hash_sees_one_bit():
    m = torch.nn.Linear(3, 2)
    h = state_hash(m)
    with torch.no_grad():
        m.weight.view(-1)[0] = torch.nextafter(m.weight.view(-1)[0], torch.tensor(10.0))
    assert state_hash(m) != h and len(h) == 64


def test_fit_frames_resizes_crops_and_moves_intrinsics():
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    k = np.array([[32.0, 32.0, 31.5, 23.5]] * 2)
    same, k_same = fit_frames(frames, k, (48, 64))
    assert torch.equal(same, torch.from_numpy(frames)) and torch.equal(k_same, torch.from_numpy(k))
    out, k2 = fit_frames(frames, k, (32, 32))                # resize to 32 x 43, then crop 5 px on the left
    assert out.shape == (2, 32, 32, 3) and out.dtype == torch.uint8
    want = torch.tensor([32 * 43 / 64, 32 * 32 / 48, 31.5 * 43 / 64 - 5, 23.5 * 32 / 48], dtype=torch.float64)
    assert torch.allclose(k2[0], want)
    with pytest.raises(ValueError, match="uint8"):
        fit_frames(frames.astype(np.float32), k, (32, 32))


def test_seq_schedule_parse_and_lookup():
    cfg = get_config("tiny")
    sched = parse_seq_schedule("2:5,4:15:8,8:30", cfg, 16)
    assert sched == [(2, 5, 16), (4, 15, 8), (8, 30, 16)]
    assert [seq_at(sched, s) for s in (0, 4, 5, 14, 15, 29, 99)] == [(2, 16), (2, 16), (4, 8), (4, 8), (8, 16),
                                                                      (8, 16), (8, 16)]
    for bad in ("2-5", "1:5", "4:10,2:5", ""):
        with pytest.raises(ValueError):
            parse_seq_schedule(bad, cfg, 16)
    with pytest.raises(ValueError, match="1 \\+ 3k"):  # published preset: chunks of 3 latents
        parse_seq_schedule("3:10", get_config("sana-wm-1600m-720p"), 1)
