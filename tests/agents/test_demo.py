"""`make demo`'s main job, on a tiny budget: it writes a video (or PNG frames) and a contact sheet per family."""

from pathlib import Path

import numpy as np
from PIL import Image

from agents.demo import main


def test_demo_writes_media_and_contact_sheets(tmp_path):
    main(["--out", str(tmp_path), "--frames", "6", "--size", "24", "--seed", "3"])
    for family in ("indoor", "outdoor"):
        sheet = np.asarray(Image.open(tmp_path / f"oracle_{family}_sheet.png"))
        assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.std() > 5
        poses = np.load(tmp_path / f"oracle_{family}_poses.npy")
        assert poses.shape == (6, 4, 4)
        assert (tmp_path / f"oracle_{family}.mp4").exists() or Path(tmp_path / f"oracle_{family}").is_dir()
