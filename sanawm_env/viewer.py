"""A pygame window for people: the env's frames scaled up, a HUD, and a keyboard driver.

    python -m sanawm_env.viewer --task PointNav --scene indoor --size 128 --seed 0

Keys (actions.KEYBOARD): WASD translate, arrows yaw / pitch, Space / C up / down, Q / E roll; held keys add up, so
W + right walks forward while turning. Shift halves the speed, Enter starts a new episode, P pauses, H toggles the
HUD, Esc or closing the window quits. Each step's K frames are played at the video frame rate, so driving is real
time. pygame is imported lazily (the `play` extra); without it the window raises DependencyNotInstalled.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import numpy as np
from gymnasium.error import DependencyNotInstalled

from .actions import KEYBOARD, key_code, keyboard_action


@dataclass
class ViewerConfig:
    scale: int = 0            # window pixels per frame pixel; 0 picks one that makes the window about 512 px
    target: int = 512         # window size (longer side) when scale is 0
    font_size: int = 16
    hud: bool = True


def import_pygame():
    """pygame, or DependencyNotInstalled with the install command."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as e:
        raise DependencyNotInstalled('pygame is not installed; run `pip install "sanawm[play]"` (or '
                                     '`pip install pygame`) to open a window') from e
    return pygame


class Viewer:
    """A window showing (H, W, 3) uint8 frames scaled up, with optional HUD lines; opened on the first show()."""

    def __init__(self, title: str = "sanawm", cfg: ViewerConfig | None = None):
        self.title = title
        self.cfg = cfg or ViewerConfig()
        self.hud_on = self.cfg.hud
        self._pg = None
        self._screen = None
        self._font = None
        self.is_open = False
        self.quit_requested = False

    def _open(self, h: int, w: int) -> None:
        pg = import_pygame()
        pg.display.init()
        pg.font.init()
        scale = self.cfg.scale or max(1, self.cfg.target // max(h, w))
        self._size = (w * scale, h * scale)
        self._screen = pg.display.set_mode(self._size)
        pg.display.set_caption(self.title)
        self._font = pg.font.Font(None, self.cfg.font_size)
        self._pg = pg
        self.is_open = True

    def show(self, frame: np.ndarray, hud: list[str] | None = None) -> None:
        """Draw one frame (H, W, 3) uint8 and the HUD lines, and pump the window's events."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
        if not self.is_open:
            self._open(frame.shape[0], frame.shape[1])
        pg = self._pg
        surf = pg.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))  # (W, H, 3)
        self._screen.blit(pg.transform.scale(surf, self._size), (0, 0))
        if hud and self.hud_on:
            y = 4
            for line in hud:
                text = self._font.render(line, True, (255, 255, 255), (0, 0, 0))
                self._screen.blit(text, (4, y))
                y += text.get_height() + 1
        pg.display.flip()
        pg.event.pump()

    def events(self) -> list:
        """Pending pygame events (quit requests are remembered in `quit_requested`)."""
        if not self.is_open:
            return []
        out = self._pg.event.get()
        if any(e.type == self._pg.QUIT for e in out):
            self.quit_requested = True
        return out

    def pressed(self) -> set[str]:
        """Names of the held keys among the driving keys (actions.KEYBOARD) plus "shift"."""
        if not self.is_open:
            return set()
        pg = self._pg
        state = pg.key.get_pressed()
        held = {name for name in KEYBOARD if state[key_code(name)]}
        if state[pg.K_LSHIFT] or state[pg.K_RSHIFT]:
            held.add("shift")
        return held

    def close(self) -> None:
        """Close the window; safe to call more than once."""
        if self.is_open:
            self._pg.display.quit()
            self.is_open = False


def drive(env, seed: int | None = None, max_steps: int | None = None, viewer: Viewer | None = None) -> int:
    """Drive a SanaWM env (continuous actions) with the keyboard until Esc / window close; returns the steps taken.

    Works with any env whose action is the (6,) camera delta and whose info carries "frames" (K, H, W, 3).
    """
    pg = import_pygame()
    viewer = viewer or Viewer(title="sanawm (WASD, arrows, Space/C, Q/E; Enter reset, P pause, H HUD, Esc quit)")
    fps = int(env.metadata.get("render_fps", 4)) * int(getattr(env.unwrapped, "frames_per_step", 1))
    clock = pg.time.Clock()
    obs, info = env.reset(seed=seed)
    viewer.show(obs["rgb"], ["Enter: new episode"])
    steps, paused, ret = 0, False, 0.0
    while not viewer.quit_requested and (max_steps is None or steps < max_steps):
        for e in viewer.events():
            if e.type == pg.KEYDOWN and e.key == pg.K_ESCAPE:
                viewer.quit_requested = True
            elif e.type == pg.KEYDOWN and e.key == pg.K_RETURN:
                obs, info = env.reset()
                ret = 0.0
            elif e.type == pg.KEYDOWN and e.key == pg.K_p:
                paused = not paused
            elif e.type == pg.KEYDOWN and e.key == pg.K_h:
                viewer.hud_on = not viewer.hud_on
        if viewer.quit_requested:
            break
        if paused:
            viewer.show(obs["rgb"], ["paused (P)"])
            clock.tick(10)
            continue
        held = viewer.pressed()
        action = keyboard_action(held - {"shift"}, strength=0.5 if "shift" in held else 1.0)
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        ret += reward
        hud = [f"step {steps}  {info.get('step_ms', 0.0):.1f} ms/step  return {ret:.2f}",
               "pos ({:.2f}, {:.2f}, {:.2f}) m".format(*np.asarray(info["pose"])[:3, 3])]
        hud += [f"{k} {info[k]:.2f}" for k in ("distance_to_goal", "success", "spl", "coverage") if k in info]
        if info.get("collided"):
            hud.append("collided")
        for frame in info.get("frames", [obs["rgb"]]):
            viewer.show(frame, hud)
            clock.tick(fps)
        if terminated or truncated:
            obs, info = env.reset()
            ret = 0.0
    viewer.close()
    return steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Drive a SanaWM world with the keyboard.")
    p.add_argument("--task", default="FreeRoam", help="FreeRoam, PointNav, ImageNav or Explore")
    p.add_argument("--scene", default="indoor", help="indoor, outdoor or mixed")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--backend", default="oracle")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the oracle's ray caster and, on CPU, the model's step (first step compiles)")
    a = p.parse_args(argv)
    import gymnasium as gym

    import sanawm_env  # noqa: F401  (registers the ids)

    env = gym.make(f"SanaWM/{a.task}-v0", scene=a.scene, size=a.size, backend=a.backend, compile=a.compile)
    try:
        drive(env, seed=a.seed)
    finally:
        env.close()


if __name__ == "__main__":
    main()
