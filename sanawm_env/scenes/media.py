"""Writing frames: PNG images, contact sheets, and mp4 (imageio-ffmpeg, the `video` extra) or PNG folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write one (H, W, 3) uint8 image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def contact_sheet(frames: np.ndarray, cols: int = 8, pad: int = 2, max_frames: int = 32) -> np.ndarray:
    """Tile up to `max_frames` evenly spaced frames (T, H, W, 3) into one image, `cols` per row."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    t = frames.shape[0]
    pick = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    frames = frames[pick]
    cols = min(cols, len(frames))
    rows = -(-len(frames) // cols)
    h, w = frames.shape[1:3]
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for n, f in enumerate(frames):
        r, c = divmod(n, cols)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = f
    return sheet


def have_video() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def write_video(path: str | Path, frames: np.ndarray, fps: int = 16) -> Path:
    """Write (T, H, W, 3) uint8 frames as an H.264 mp4 (lossless-ish quality); needs the `video` extra."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    # macro_block_size=1 keeps odd sizes; yuv444p avoids chroma blur on 64-128 px frames.
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=None, macro_block_size=1,
                            output_params=["-crf", "12", "-pix_fmt", "yuv444p"], ffmpeg_log_level="error") as w:
        for f in frames:
            w.append_data(f)
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Decode an mp4 back to (T, H, W, 3) uint8."""
    import imageio.v2 as imageio

    return np.stack(list(imageio.mimread(path, memtest=False)))


def write_frames_png(folder: str | Path, frames: np.ndarray) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        save_png(folder / f"{i:05d}.png", f)
    return folder
