"""Shared pieces of the agents and the `sanawm` commands: argument dataclasses, env construction, key strings and
keymaps, discrete navigation action sets, observation resizing and media writing.

agents/ uses sanawm_env like any user would: envs are built with `SanaWMEnv(task=..., **kwargs)` (the registered
ids' entry point, without gymnasium's TimeLimit wrapper, so `get_state` / `set_state` snapshots carry the step
count and truncation with them), and nothing here reaches into private attributes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sanawm_env import MAX_EPISODE_STEPS
from sanawm_env.actions import KEYBOARD

TASK_NAMES = {"freeroam": "FreeRoam", "pointnav": "PointNav", "imagenav": "ImageNav", "explore": "Explore"}


# ---------------------------------------------------------------------- Args dataclasses -> argparse


def arg(default: Any = None, help: str = "", *, flag: str | None = None, choices=None, metavar: str | None = None,
        append: bool = False):
    """A dataclass field that `add_dataclass_args` turns into a command-line option (with this help text)."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "append": append}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(tp):
    """The scalar type of an annotation (`int | None` -> int); bool stays bool."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return _base_type(typing.get_args(tp)[0])
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    """One `--kebab-name` option per field of the dataclass `cls` (bools become --x / --no-x)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        name = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = meta.get("help", "")
        tp = _base_type(hints[f.name])
        if tp is bool:
            parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
            continue
        kw = dict(dest=f.name, type=tp, default=default, help=help_text + (f" (default: {default})"
                                                                             if default not in (None, [], "") else ""))
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("append"):
            kw["action"] = "append"
            kw["default"] = None
        parser.add_argument(name, **kw)


def from_namespace(cls, ns: argparse.Namespace):
    """Build the dataclass `cls` from parsed options (fields only; derived fields are left to __post_init__)."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    for f in dataclasses.fields(cls):
        if f.metadata.get("append") and values.get(f.name) is None:
            values[f.name] = []
    return cls(**values)


def make_parser(prog: str, doc: str, example: str) -> argparse.ArgumentParser:
    """A parser whose description is the module docstring `doc` and whose epilog shows a usage example."""
    return argparse.ArgumentParser(prog=prog, description=doc.strip(), epilog=f"example:\n  {example}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


# ---------------------------------------------------------------------- env construction


def parse_scene_seeds(text: str | int | None) -> int | tuple[int, ...] | None:
    """"16" -> a pool of 16 scenes (range(16)); "100-115" -> that inclusive range; "1,5,9" -> those; "" -> None."""
    if text is None or isinstance(text, int):
        return text
    text = str(text).strip()
    if not text or text.lower() == "none":
        return None
    if re.fullmatch(r"\d+", text):
        return int(text)
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if b < a:
            raise ValueError(f"scene seed range {text!r} must run upward (a-b with a <= b)")
        return tuple(range(a, b + 1))
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"scene seeds must be N (a pool of N), A-B (a range) or a comma list, got {text!r}") from None


@dataclass
class EnvArgs:
    """The world: which task, backend, scene and frame size (shared by every command that makes an env)."""

    task: str = arg("freeroam", "task: freeroam, pointnav, imagenav or explore",
                    choices=("freeroam", "pointnav", "imagenav", "explore"))
    backend: str = arg("oracle", "oracle (ray-cast ground truth) or model (the world model)",
                       choices=("oracle", "model"))
    model: str = arg("tiny", "model backend: tiny (embedded), micro (random, 32x32, for tests) or a checkpoint path")
    scene: str = arg("indoor", "scene family: indoor, outdoor or mixed", choices=("indoor", "outdoor", "mixed"))
    size: int = arg(64, "frame size in pixels (square); the model backend needs the model's size (tiny 64, micro 32)")
    seed: int = arg(0, "episode seed (scene, start and goal)")
    scene_seeds: str = arg("", "scene pool: N (scenes 0..N-1), A-B or a comma list; empty: any scene",
                           metavar="SEEDS")
    frames_per_step: int = arg(4, "raw frames per step K (oracle; the model's chunk fixes it)")
    max_episode_steps: int = arg(0, f"truncate episodes after this many steps (0: {MAX_EPISODE_STEPS} for goal "
                                    f"tasks, none for freeroam)")
    device: str = arg("cpu", "torch device of the backend")
    compile: bool = arg(False, "torch.compile the oracle's ray caster and, on CPU, the model's step (slow first step)")

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `SanaWMEnv` (JSON-serialisable; what logs and policy configs store)."""
        kw: dict[str, Any] = {"task": self.task, "backend": self.backend, "scene": self.scene, "size": self.size,
                              "frames_per_step": self.frames_per_step, "device": self.device}
        if self.backend == "model":
            kw["model"] = self.model
        seeds = parse_scene_seeds(self.scene_seeds)
        if seeds is not None:
            kw["scene_seeds"] = seeds if isinstance(seeds, int) else list(seeds)
        steps = self.max_episode_steps or (None if self.task in ("freeroam", "explore") else MAX_EPISODE_STEPS)
        if steps:
            kw["max_episode_steps"] = int(steps)
        if self.compile:
            kw["compile"] = True
        return kw


def make_env(**kwargs):
    """A `SanaWMEnv` from keyword arguments (`task` plus any SanaWMEnv / task option); lists become tuples."""
    from sanawm_env.env import SanaWMEnv

    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    task = kw.pop("task", "freeroam")
    return SanaWMEnv(task=task, **kw)


def episode_of(env):
    """The current `Episode` (scene, geometry, start, goal) of a SanaWM env, from its public `get_state()` snapshot."""
    return env.unwrapped.get_state().episode


# ---------------------------------------------------------------------- keymaps and key strings

# Named driving controls -> (action component, sign); see sanawm_env.actions for the axes.
CONTROLS: dict[str, tuple[int, float]] = {
    "forward": (2, 1.0), "back": (2, -1.0), "left": (0, -1.0), "right": (0, 1.0),
    "up": (1, -1.0), "down": (1, 1.0), "pitch_up": (3, 1.0), "pitch_down": (3, -1.0),
    "yaw_left": (4, -1.0), "yaw_right": (4, 1.0), "roll_left": (5, -1.0), "roll_right": (5, 1.0),
}

# Key name -> control, per keymap. "ours" is sanawm_env.actions.KEYBOARD (WASD translate, arrows yaw/pitch,
# Space/C up/down, Q/E roll). "sana-wm" is the published SANA-WM action strings: w/s forward/back, a/d yaw, i/k
# pitch, j/l strafe (sana_wm_architecture.md section 4.3); it has no vertical or roll keys.
_CONTROL_OF = {v: k for k, v in CONTROLS.items()}
KEYMAPS: dict[str, dict[str, str]] = {
    "ours": {key: _CONTROL_OF[tuple(spec)] for key, spec in KEYBOARD.items()},
    "sana-wm": {"w": "forward", "s": "back", "a": "yaw_left", "d": "yaw_right", "i": "pitch_up", "k": "pitch_down",
                "j": "left", "l": "right"},
}


def keymap_bindings(keymap: str = "ours", overrides: dict[str, str] | None = None) -> dict[str, tuple[int, float]]:
    """Key name -> (axis, sign) of a keymap, with `overrides` {control: key} rebinding controls to other keys."""
    if keymap not in KEYMAPS:
        raise ValueError(f"keymap must be one of {sorted(KEYMAPS)}, got {keymap!r}")
    by_control = {c: k for k, c in KEYMAPS[keymap].items()}
    for control, key in (overrides or {}).items():
        if control not in CONTROLS:
            raise ValueError(f"unknown control {control!r} to bind; controls are {sorted(CONTROLS)}")
        by_control[control] = key
    return {k: CONTROLS[c] for c, k in by_control.items()}


def keys_action(keys, bindings: dict[str, tuple[int, float]], strength: float = 1.0) -> np.ndarray:
    """(6,) float32 action of held key names: each adds its sign on its axis, clipped to [-1, 1]."""
    a = np.zeros(6, dtype=np.float32)
    for k in keys:
        if k not in bindings:
            raise ValueError(f"key {k!r} is not bound; bound keys: {sorted(bindings)}")
        axis, sign = bindings[k]
        a[axis] += sign * strength
    return np.clip(a, -1.0, 1.0)


@dataclass
class KeySegment:
    keys: tuple[str, ...]  # held key names ("" segment = no key)
    frames: int            # raw video frames the keys are held
    steps: int             # env steps: ceil(frames / frames_per_step)


def parse_key_string(text: str, frames_per_step: int, keymap: str = "ours") -> list[KeySegment]:
    """Parse a SANA-WM style action string: comma-separated `<keys>-<frames>` segments, e.g. "w-16,a-8,wd-4".

    `<keys>` is one key name ("w", "right", "space"), a run of one-letter keys ("wd" holds w and d) or key names
    joined by "+" ("w+left"); "_" or "none" holds nothing. Each segment lasts `<frames>` raw frames, i.e.
    ceil(frames / frames_per_step) env steps.
    """
    bindings = keymap_bindings(keymap)
    out = []
    for raw in text.split(","):
        seg = raw.strip()
        if not seg:
            continue
        m = re.fullmatch(r"([A-Za-z_+]*)-(\d+)", seg)
        if not m:
            raise ValueError(f"bad key segment {seg!r}: expected <keys>-<frames> such as 'w-16' or 'w+left-8'")
        keys_text, frames = m.group(1).lower(), int(m.group(2))
        if frames < 1:
            raise ValueError(f"key segment {seg!r} must last at least 1 frame")
        if keys_text in ("", "_", "none"):
            keys: tuple[str, ...] = ()
        elif keys_text in bindings:  # one named key ("right", "space") or one letter
            keys = (keys_text,)
        elif "+" in keys_text:
            keys = tuple(k for k in keys_text.split("+") if k)
        else:
            keys = tuple(keys_text)
        for k in keys:
            if k not in bindings:
                raise ValueError(f"key {k!r} in segment {seg!r} is not in the {keymap!r} keymap; its keys are "
                                 f"{sorted(bindings)}")
        out.append(KeySegment(keys, frames, -(-frames // frames_per_step)))
    if not out:
        raise ValueError(f"the key string {text!r} holds no segment; expected e.g. 'w-16,a-8'")
    return out


def key_string_actions(text: str, frames_per_step: int, keymap: str = "ours") -> np.ndarray:
    """(T, 6) float32 env actions of a key string (see `parse_key_string`)."""
    bindings = keymap_bindings(keymap)
    rows = [np.tile(keys_action(s.keys, bindings), (s.steps, 1)) for s in parse_key_string(text, frames_per_step,
                                                                                               keymap)]
    return np.concatenate(rows).astype(np.float32)


# ---------------------------------------------------------------------- discrete navigation actions

NAV_ACTIONS = ("stop", "forward", "left", "right", "look_up", "look_down", "strafe_left", "strafe_right")
_NAV_VECTORS = {"stop": None, "forward": (2, 1.0), "left": (4, -1.0), "right": (4, 1.0), "look_up": (3, 1.0),
                "look_down": (3, -1.0), "strafe_left": (0, -1.0), "strafe_right": (0, 1.0)}


class NavActionSet:
    """A small discrete action set over the continuous env: each action is one full-scale step on one axis.

    "forward" moves `max_translation`, "left"/"right" turn `max_rotation`; "stop" asks the env to end the episode
    (`request_stop`, habitat's STOP). The env's max_translation / max_rotation are the step sizes, so the same
    policy works on any backend.
    """

    def __init__(self, names=("forward", "left", "right")):
        names = tuple(names.split(",") if isinstance(names, str) else names)
        bad = [n for n in names if n not in _NAV_VECTORS]
        if bad or not names or len(set(names)) != len(names):
            raise ValueError(f"action names must be distinct names from {NAV_ACTIONS}, got {list(names)}")
        self.names = names
        self.table = np.zeros((len(names), 6), dtype=np.float32)
        for i, n in enumerate(names):
            if _NAV_VECTORS[n] is not None:
                axis, sign = _NAV_VECTORS[n]
                self.table[i, axis] = sign

    @property
    def n(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def continuous(self, env, action) -> np.ndarray:
        """The (6,) continuous action of discrete `action`; for "stop" it also calls env.request_stop()."""
        i = int(action)
        if not 0 <= i < self.n:
            raise ValueError(f"discrete action must be in [0, {self.n}) ({', '.join(self.names)}), got {action}")
        if self.names[i] == "stop":
            env.unwrapped.request_stop()
        return self.table[i].copy()


# ---------------------------------------------------------------------- images and media


def resize_rgb(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., h, w, 3) uint8 (area average down, bilinear up); unchanged when equal."""
    img = np.asarray(img)
    if tuple(img.shape[-3:-1]) == tuple(hw):
        return img
    import torch
    import torch.nn.functional as F

    lead = img.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(img.reshape(-1, *img.shape[-3:]))).permute(0, 3, 1, 2).float()
    down = hw[0] < img.shape[-3]
    y = F.interpolate(x, size=tuple(hw), mode="area" if down else "bilinear", align_corners=None if down else False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy().reshape(*lead, *hw, 3)


def load_image(path: str | Path, hw: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """An RGB image centre-cropped to the aspect of `hw` and resized; returns (image, (sx, sy, ox, oy)): the
    map x' = sx * (x - ox) from original pixels to the new ones, for carrying intrinsics along."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    th, tw = hw
    if w * th > h * tw:  # too wide: crop the sides
        cw, ch = h * tw / th, h
    else:
        cw, ch = w, w * th / tw
    ox, oy = (w - cw) / 2.0, (h - ch) / 2.0
    im = im.crop((ox, oy, ox + cw, oy + ch)).resize((tw, th), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8), (tw / cw, th / ch, ox, oy)


def load_intrinsics(path: str | Path) -> np.ndarray:
    """(4,) fx, fy, cx, cy from an .npy/.json of shape (4,), (3, 3), (F, 4) or (F, 3, 3) (the first is used)."""
    path = Path(path)
    k = np.asarray(json.loads(path.read_text()) if path.suffix == ".json" else np.load(path), dtype=np.float64)
    if k.ndim == 3 or (k.ndim == 2 and k.shape[1] == 4):
        k = k[0]
    if k.shape == (3, 3):
        k = np.array([k[0, 0], k[1, 1], k[0, 2], k[1, 2]])
    if k.shape != (4,) or not np.isfinite(k).all() or k[0] <= 0 or k[1] <= 0:
        raise ValueError(f"intrinsics in {path} must be fx, fy, cx, cy (4,), a 3x3 matrix, or per-frame stacks of "
                         f"those, with positive focal lengths; got shape {k.shape}")
    return k


def write_media(out: str | Path, stem: str, frames: np.ndarray, fps: int = 16, sheet: bool = True) -> dict[str, str]:
    """Write frames (T, H, W, 3) as `<stem>.mp4` (or a PNG folder without imageio-ffmpeg) and a contact sheet."""
    from sanawm_env.scenes.media import contact_sheet, have_video, save_png, write_frames_png, write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    paths = {}
    if have_video():
        paths["video"] = str(write_video(out / f"{stem}.mp4", frames, fps=fps))
    else:
        paths["video"] = str(write_frames_png(out / stem, frames))
    if sheet:
        paths["sheet"] = str(save_png(out / f"{stem}_sheet.png", contact_sheet(frames, cols=8, max_frames=16)))
    return paths


def print_table(rows: list[dict[str, Any]], columns: list[str], file=None) -> None:
    """Print rows as a Markdown table (floats with 3 decimals)."""
    file = file or sys.stdout

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    print("| " + " | ".join(columns) + " |", file=file)
    print("|" + "|".join("---" for _ in columns) + "|", file=file)
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |", file=file)


def wrap_angle(a: float) -> float:
    return math.remainder(a, 2.0 * math.pi)
