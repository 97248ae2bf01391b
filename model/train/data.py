"""Training data: RealEstate10K-format camera files and the clips they describe.

A camera file holds an identifier line, then one line per frame:
`timestamp_us fx fy cx cy k1 k2 <world-to-camera 3x4, row-major>`, with intrinsics normalised by
the image width and height. Our exporter (`sanawm_env.scenes.export`) writes exactly this, so real
footage with RealEstate10K cameras trains through the same reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class CameraTrack:
    """Per-frame cameras of one clip."""

    identifier: str
    timestamps_us: np.ndarray    # (F,) int64
    intrinsics: np.ndarray       # (F, 4) float64 fx, fy, cx, cy normalised by width / height
    w2c: np.ndarray              # (F, 3, 4) float64 world-to-camera, OpenCV axes

    def __len__(self) -> int:
        return len(self.timestamps_us)

    def c2w(self) -> np.ndarray:
        """(F, 4, 4) camera-to-world, the exact rigid inverse of `w2c`."""
        r, t = self.w2c[:, :, :3], self.w2c[:, :, 3]
        out = np.zeros((len(self), 4, 4))
        out[:, :3, :3] = r.transpose(0, 2, 1)
        out[:, :3, 3] = -np.einsum("fji,fj->fi", r, t)
        out[:, 3, 3] = 1.0
        return out

    def intrinsics_px(self, width: int, height: int) -> np.ndarray:
        """(F, 4) fx, fy, cx, cy in pixels of a width x height frame."""
        return self.intrinsics * np.array([width, height, width, height], dtype=np.float64)


def read_re10k(path: str | Path) -> CameraTrack:
    """Parse a RealEstate10K camera file; raises ValueError naming the line that is malformed."""
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: expected an identifier line and at least one camera line, got {len(lines)} lines")
    ts, k, m = [], [], []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if len(parts) != 19:
            raise ValueError(f"{path}:{n}: expected 19 numbers (timestamp, 4 intrinsics, 2 distortion, 12 pose), "
                             f"got {len(parts)}")
        try:
            ts.append(int(parts[0]))
            vals = [float(x) for x in parts[1:]]
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not a number ({e})") from None
        k.append(vals[0:4])
        m.append(vals[6:18])
    w2c = np.asarray(m, dtype=np.float64).reshape(-1, 3, 4)
    if not np.isfinite(w2c).all() or not np.isfinite(np.asarray(k)).all():
        raise ValueError(f"{path}: camera values must be finite")
    return CameraTrack(lines[0], np.asarray(ts, dtype=np.int64), np.asarray(k, dtype=np.float64), w2c)


def read_frames(path: str | Path) -> np.ndarray:
    """(F, H, W, 3) uint8 frames from an mp4 (needs the `video` extra) or a folder of PNGs."""
    path = Path(path)
    if path.is_dir():
        from PIL import Image

        files = sorted(path.glob("*.png"))
        if not files:
            raise ValueError(f"{path}: no PNG frames found")
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    import imageio.v2 as imageio

    return np.stack(list(imageio.mimread(path, memtest=False)))


@dataclass
class Clip:
    frames: np.ndarray           # (F, H, W, 3) uint8
    c2w: np.ndarray              # (F, 4, 4) float64
    intrinsics: np.ndarray       # (F, 4) pixels
    meta: dict


def load_index(index_path: str | Path) -> list[Clip]:
    """Every clip listed in an exporter's index.json, frames decoded and cameras in pixels."""
    index_path = Path(index_path)
    meta = json.loads(index_path.read_text())
    clips = []
    for e in meta["clips"]:
        frames = read_frames(index_path.parent / e["media"])
        cams = read_re10k(index_path.parent / e["cameras"])
        if len(cams) != len(frames):
            raise ValueError(f"{e['name']}: {len(frames)} frames but {len(cams)} camera lines")
        h, w = frames.shape[1:3]
        clips.append(Clip(frames, cams.c2w(), cams.intrinsics_px(w, h), e))
    return clips
