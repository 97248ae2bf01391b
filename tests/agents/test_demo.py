"""`make demo`'s main job, on a tiny budget: per family, the world model next to the oracle for the same keys (video,
contact sheets, per-frame PSNR), then the oracle walk."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from agents.demo import main


def test_demo_writes_model_vs_oracle_and_oracle_media(tmp_path):
    main(["--out", str(tmp_path), "--model", "micro", "--keys", "w-8", "--frames", "6", "--size", "24", "--seed", "3"])
    for family in ("indoor", "outdoor"):
        summary = json.loads((tmp_path / f"model_{family}.json").read_text())
        assert summary["env_kwargs"]["backend"] == "model" and summary["frames"] == 1 + 8
        cmp = summary["compare_oracle"]
        assert len(cmp["psnr"]) == 9 and cmp["mean_psnr"] is not None
        side = np.asarray(Image.open(tmp_path / f"model_{family}_vs_oracle_sheet.png"))
        assert side.ndim == 3 and side.std() > 5
        sheet = np.asarray(Image.open(tmp_path / f"oracle_{family}_sheet.png"))
        assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.std() > 5
        poses = np.load(tmp_path / f"oracle_{family}_poses.npy")
        assert poses.shape == (6, 4, 4)
        assert (tmp_path / f"oracle_{family}.mp4").exists() or Path(tmp_path / f"oracle_{family}").is_dir()
