"""benchmarks/camera_probe.py end to end on the random micro model: both probes run and report what they claim."""

import json
import math

from bench_loader import load_benchmark


def test_camera_probe_on_micro(tmp_path, capsys):
    probe = load_benchmark("camera_probe")
    probe.main(["--checkpoint", "micro", "--walks", "2", "--latents", "3", "--turns", "1", "--steps", "3",
                "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "camera_probe.json").read_text())
    rows = {r["camera"]: r for r in saved["teacher_forced"]}
    assert set(rows) == {"true poses", "another walk's poses", "camera never moves"}
    assert all(math.isfinite(r["x0_loss"]) and math.isfinite(r["flow_loss"]) for r in rows.values())
    # a random model still reads its camera input: changing the poses changes the loss
    assert rows["true poses"]["x0_loss"] != rows["camera never moves"]["x0_loss"]
    turns = saved["free_generation"]
    assert [t["sign"] for t in turns] == [1, -1]
    for t in turns:
        assert len(t["oracle"]) == len(t["streaming"]) == len(t["full_forward"]) == 2
        assert all(s * t["sign"] < 0 for s in t["oracle"])      # a right turn moves the oracle's image left
    grid = saved["latent_grid"]
    assert [t["sign"] for t in grid] == [1, -1]
    for t in grid:
        assert len(t["oracle"]) == len(t["vae_round_trip"]) == len(t["warped_latent"]) == 3
        assert all(s * t["sign"] < 0 for s in t["oracle"])
    out = capsys.readouterr().out
    assert "teacher forcing" in out and "the latent grid" in out
