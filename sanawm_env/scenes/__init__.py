"""Procedural 3-D worlds and a batched torch ray caster: the ground truth and the oracle backend.

Imports neither `model` nor gymnasium.
"""

from .geometry import GeometryConfig, SceneGeometry
from .indoor import IndoorConfig, generate_indoor
from .outdoor import OutdoorConfig, generate_outdoor
from .poses import apply_local_delta, check_c2w, intrinsics_from_fov, pose
from .render import RenderConfig, Renderer, RenderOutput
from .scene import Scene, SceneBatch

FAMILIES = {"indoor": generate_indoor, "outdoor": generate_outdoor}


def make_scene(family: str, seed: int) -> Scene:
    """The scene of a family ("indoor" or "outdoor") for an integer seed."""
    if family not in FAMILIES:
        raise ValueError(f"scene family must be one of {sorted(FAMILIES)}, got {family!r}")
    return FAMILIES[family](int(seed))


__all__ = [
    "FAMILIES", "GeometryConfig", "IndoorConfig", "OutdoorConfig", "RenderConfig", "RenderOutput", "Renderer",
    "Scene", "SceneBatch", "SceneGeometry", "apply_local_delta", "check_c2w", "generate_indoor", "generate_outdoor",
    "intrinsics_from_fov", "make_scene", "pose",
]
