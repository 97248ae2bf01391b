"""Pose helpers for the scene layer: OpenCV camera-to-world 4x4 matrices in metres.

World axes: x right, y down (gravity), z forward; a camera at the identity pose looks along +z with
a level horizon. Positive yaw turns right (about +y), positive pitch looks up (about +x), positive
roll tilts the camera's right side down (about +z), all by the right-hand rule. Trajectories are
built in float64 so that long compositions (a 360-degree turn in many steps) close exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrix of the axis-angle vector w (3,), Rodrigues' formula."""
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        return np.eye(3)
    k = np.asarray(w, dtype=np.float64) / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(theta) * kx + (1.0 - math.cos(theta)) * (kx @ kx)


def pose(position, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """c2w (4, 4) float64 of a camera at `position` (x, y, z) with heading yaw, then pitch, then roll."""
    out = np.eye(4)
    out[:3, :3] = rot_y(yaw) @ rot_x(pitch) @ rot_z(roll)
    out[:3, 3] = position
    return out


def apply_local_delta(c2w: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Move a camera by (dx, dy, dz, dpitch, dyaw, droll) expressed in its own frame (metres, radians)."""
    d = np.eye(4)
    d[:3, :3] = so3_exp(np.asarray(delta[3:6], dtype=np.float64))
    d[:3, 3] = delta[:3]
    return np.asarray(c2w, dtype=np.float64) @ d


def heading(c2w: np.ndarray) -> float:
    """Yaw of the camera's forward axis projected on the floor (radians, 0 = +z, positive toward +x)."""
    f = np.asarray(c2w)[:3, 2]
    return math.atan2(f[0], f[2])


def intrinsics_from_fov(width: int, height: int, fov_deg: float = 90.0) -> torch.Tensor:
    """(fx, fy, cx, cy) in pixels for a horizontal field of view; square pixels, pixel centres at integers."""
    if not (0.0 < fov_deg < 180.0):
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
    return torch.tensor([f, f, (width - 1) / 2.0, (height - 1) / 2.0], dtype=torch.float32)


def check_c2w(c2w, name: str = "c2w") -> torch.Tensor:
    """Validate camera-to-world poses; returns a float32 tensor (B, 4, 4). Raises ValueError naming the problem."""
    t = torch.as_tensor(c2w)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or tuple(t.shape[1:]) != (4, 4):
        raise ValueError(f"{name} must have shape (B, 4, 4) or (4, 4), got {tuple(torch.as_tensor(c2w).shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} holds no poses (batch of 0)")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"{name} contains NaN or Inf values (pose indices {bad})")
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=t.dtype)
    if not torch.allclose(t[:, 3], bottom.expand_as(t[:, 3]), atol=1e-5):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {t[:, 3].tolist()}")
    r = t[:, :3, :3]
    err = (r @ r.transpose(1, 2) - torch.eye(3, dtype=t.dtype)).abs().amax(dim=(1, 2))
    det = torch.linalg.det(r)
    if (err > 1e-3).any() or (det < 0).any():
        raise ValueError(
            f"{name} rotation blocks must be orthonormal with det +1; worst |R R^T - I| = {err.max():.3g}, "
            f"min det = {det.min():.3g}")
    return t.to(torch.float32)
