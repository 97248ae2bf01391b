"""Fidelity of the world model against the ground-truth oracle renderer, on held-out scenes.

    python benchmarks/fidelity.py [--checkpoint tiny|micro|PATH] [--episodes 16] [--device cpu] [--long-steps 1000]
        [--out benchmarks/results]

Every episode starts from the oracle's view of its start pose (rendered like the training data: 90 degrees
horizontal FOV, 2x supersampling), and the model is driven with the same metric poses as the oracle, so the
oracle's frames are what the model should have drawn. Scenes have seeds >= --seed (100000), which training never saw.

1. Horizon: `--episodes` keyboard-like walks (half indoor, half outdoor), batched through one generator. At
   horizons of 1, 4, 8, 16, 32 steps, PSNR and SSIM of the step's K frames against the oracle's, next to the
   baseline that repeats the start frame (what a model that ignores the camera would score). PSNR pools the MSE of
   all episodes' frames of a step, so one episode that stands still cannot make a mean infinite.
2. Direction: yaw-only and pitch-only turns, both signs. Per step, the global shift between consecutive last frames
   by phase correlation; the share of steps where the model's shift has the oracle's sign (dx for yaw, dy for
   pitch). This is the cheapest check that the camera conditioning is wired the right way round. Next to it, the
   same measure on the VAE's round trip of the oracle's whole moving clip (encode, decode: no DiT), the ceiling a
   model that reproduces the VAE's latents of the true video can reach.
   Forward: straight walks at walking speed, and the same paths walked backward. Per step, the zoom between
   consecutive last frames (`zoom_scale`: walls come closer, so the image grows); the share of steps with the
   oracle's sign, and the model's mean zoom as a share of the oracle's (a model can agree in sign and barely
   move). Why: the issue asks that walking forward brings walls closer, and a turn check cannot see it.
3. Long rollout: `--long-steps` steps of one walk; per-frame std and mean of model and oracle frames, to catch
   drift into grey, saturated, constant or NaN frames that short horizons do not show.
4. Bars: PASS/FAIL lines against the targets; reported, never asserted.

Prints tables and writes `<out>/fidelity.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agents.common import resize_rgb
from model.generator import WEIGHTS, StreamingGenerator
from model.train.common import to_unit
from model.train.evaluate import psnr, ssim
from sanawm_env.scenes import RenderConfig, Renderer, Scene, SceneBatch, intrinsics_from_fov, make_scene, pose
from sanawm_env.scenes.geometry import SceneGeometry
from sanawm_env.scenes.trajectories import WalkConfig, free_run, keyboard_walk, open_heading, rotation

HORIZONS = (1, 4, 8, 16, 32)      # steps after the start frame
GAIN_HORIZONS = (4, 32)           # the PSNR-gain bar averages the horizons in this closed range
FOV = 90.0                        # degrees, as the env default and the exported training data
SUPERSAMPLE = 2                   # as the exported training data
FAMILIES = ("indoor", "outdoor")
# A right turn (positive yaw) moves the image content left (dx < 0); looking up (positive pitch) moves it down.
# Walking forward brings what is ahead closer: the image grows about its centre (log zoom > 0).
EXPECTED_SIGN = {"yaw": -1, "pitch": 1, "forward": 1}
BARS = {"psnr_gain_db": 2.0, "direction_agreement": 0.9, "std_ratio": (0.5, 2.0)}
ZOOM_STEP = 0.01                  # resolution of zoom_scale's log-scale search; smaller oracle zooms are not counted


# ----------------------------------------------------------------------------------------------------------------------
# Episodes


@dataclass
class Episodes:
    """B episodes: each one's scene and the poses of its start frame plus `steps` chunks of K raw frames."""

    scenes: list[Scene]
    c2w: np.ndarray          # (B, 1 + steps * K, 4, 4) float64 camera-to-world
    labels: list[dict]       # per episode: family, scene seed, trajectory

    @property
    def steps_frames(self) -> int:
        return self.c2w.shape[1] - 1


@lru_cache(maxsize=32)
def scene_and_geometry(family: str, seed: int) -> tuple[Scene, SceneGeometry]:
    """Scenes take a second or two to build; the sections share them."""
    scene = make_scene(family, seed)
    return scene, SceneGeometry(scene)


def start_pose(geom: SceneGeometry, rng: np.random.Generator, pitch: float = 0.0) -> np.ndarray:
    """A free spot facing open space, as the exported clips start."""
    position = geom.sample_free_position(rng)
    return pose(position, yaw=open_heading(geom, position, rng), pitch=pitch)


def walk_episodes(n: int, seed: int, frames: int, stream: int = 0) -> Episodes:
    """n keyboard-like walks of `frames` poses in scenes seed, seed + 1, ... alternating indoor and outdoor.

    `stream` picks the random starts and key presses, so sections that share scenes do not share walks.
    """
    scenes, c2w, labels = [], [], []
    for i in range(n):
        family = FAMILIES[i % 2]
        scene, geom = scene_and_geometry(family, seed + i)
        rng = np.random.default_rng([seed, stream, i])
        c2w.append(keyboard_walk(geom, start_pose(geom, rng), frames, rng))
        scenes.append(scene)
        labels.append({"family": family, "scene_seed": seed + i, "trajectory": "walk"})
    return Episodes(scenes, np.stack(c2w), labels)


def rotation_episodes(axis: str, n_scenes: int, seed: int, frames: int, deg_per_frame: float) -> Episodes:
    """Turns in place about `axis`, both signs in each of n_scenes scenes. Pitch sweeps symmetrically about level."""
    scenes, c2w, labels = [], [], []
    total = math.radians(deg_per_frame) * (frames - 1)
    if axis == "pitch" and total > math.radians(120.0):
        raise ValueError(f"a pitch sweep of {math.degrees(total):.0f} degrees would look past straight up or down; "
                         "use fewer --direction-steps or a smaller --pitch-deg")
    for j in range(n_scenes):
        family = FAMILIES[j % 2]
        scene, geom = scene_and_geometry(family, seed + j)
        rng = np.random.default_rng([seed, 100, j])
        for sign in (1, -1):
            start = start_pose(geom, rng, pitch=-sign * total / 2 if axis == "pitch" else 0.0)
            c2w.append(rotation(start, frames, total=sign * total, axis=axis))
            scenes.append(scene)
            labels.append({"family": family, "scene_seed": seed + j, "trajectory": axis, "sign": sign})
    return Episodes(scenes, np.stack(c2w), labels)


def forward_episodes(n_scenes: int, seed: int, frames: int, metres_per_frame: float) -> Episodes:
    """A straight level walk in each of n_scenes scenes (sign 1), and the same path walked backward (sign -1).

    The start is a free spot facing open space with room for the whole walk and a metre more, so neither direction
    meets a wall (a first pick without that room is drawn again, up to 100 times).
    """
    scenes, c2w, labels = [], [], []
    length = metres_per_frame * (frames - 1)
    for j in range(n_scenes):
        family = FAMILIES[j % 2]
        scene, geom = scene_and_geometry(family, seed + j)
        rng = np.random.default_rng([seed, 200, j])
        for _ in range(100):
            position = geom.sample_free_position(rng)
            yaw = open_heading(geom, position, rng)
            if free_run(geom, position, yaw) >= length + 1.0:
                break
        else:
            raise ValueError(f"no free straight run of {length + 1.0:.1f} m in {family} scene {seed + j}; "
                             "use fewer --direction-steps or a lower --forward-speed")
        ahead = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        path = np.stack([pose(position + i * metres_per_frame * ahead, yaw=yaw) for i in range(frames)])
        for sign in (1, -1):
            c2w.append(path if sign == 1 else path[::-1].copy())
            scenes.append(scene)
            labels.append({"family": family, "scene_seed": seed + j, "trajectory": "forward", "sign": sign})
    return Episodes(scenes, np.stack(c2w), labels)


# ----------------------------------------------------------------------------------------------------------------------
# Oracle and model


class Oracle:
    """Ground-truth frames of a set of episodes: one Renderer over their SceneBatch, rendered in bounded batches."""

    def __init__(self, episodes: Episodes, hw: tuple[int, int], device: str = "cpu", compile: bool = False,
                 batch: int = 256):
        unique, slot = [], {}
        for s in episodes.scenes:
            if id(s) not in slot:
                slot[id(s)] = len(unique)
                unique.append(s)
        self.scene_index = np.array([slot[id(s)] for s in episodes.scenes])     # (B,)
        self.hw = hw
        self.k = intrinsics_from_fov(hw[1], hw[0], FOV)                          # (4,) pixels
        self.renderer = Renderer(SceneBatch.stack(unique, device),
                                 RenderConfig(hw[0], hw[1], supersample=SUPERSAMPLE, compile=compile), device=device)
        self.batch = batch

    def render(self, c2w: np.ndarray) -> np.ndarray:
        """c2w (B, F, 4, 4), row b in episode b's scene -> uint8 (B, F, H, W, 3) on the host."""
        b, f = c2w.shape[:2]
        flat = torch.from_numpy(np.ascontiguousarray(c2w).reshape(b * f, 4, 4))   # (B*F, 4, 4)
        scene = torch.from_numpy(np.repeat(self.scene_index, f))
        out = [self.renderer.render(flat[i:i + self.batch], self.k, scene[i:i + self.batch]).rgb.cpu()
               for i in range(0, b * f, self.batch)]
        return torch.cat(out).reshape(b, f, *self.hw, 3).numpy()


def load_generator(a: argparse.Namespace, batch: int) -> StreamingGenerator:
    """One generator per section: its batch size is fixed when it is built. --no-upscaler: the model's own size."""
    kw = {"upscaler": None} if a.no_upscaler else {}
    return StreamingGenerator.from_pretrained(a.checkpoint, device=a.device, batch_size=batch, **kw)


def model_rollout(gen: StreamingGenerator, first: np.ndarray, c2w: np.ndarray, seed: int,
                  desc: str) -> Iterator[tuple[torch.Tensor, bool]]:
    """Drive the model from first frames (B, H, W, 3) along c2w (B, 1 + S*K, 4, 4).

    Yields, per step, the step's frames uint8 (B, K, H, W, 3) on the CPU and whether its latents were all finite.
    """
    k = gen.frames_per_step
    b, n = c2w.shape[:2]
    k_px = intrinsics_from_fov(gen.frame_hw[1], gen.frame_hw[0], FOV)
    state = gen.reset(torch.from_numpy(first), k_px.expand(b, 4), seed=seed, c2w0=torch.from_numpy(c2w[:, 0]))
    for s in tqdm(range((n - 1) // k), desc=desc, leave=False):
        chunk = torch.from_numpy(np.ascontiguousarray(c2w[:, 1 + s * k:1 + (s + 1) * k]))   # (B, K, 4, 4)
        frames, latents = gen.step(state, chunk, return_latents=True)
        yield frames.cpu(), bool(torch.isfinite(latents).all())


# ----------------------------------------------------------------------------------------------------------------------
# Metrics


def _grey(x: torch.Tensor) -> torch.Tensor:
    """uint8 or float (H, W, 3) or (H, W) -> float64 (H, W)."""
    x = x.double()
    return x.mean(dim=-1) if x.dim() == 3 else x


def phase_shift(a, b) -> tuple[int, int]:
    """The integer (dy, dx) with b ~ a shifted by (dy, dx) (torch.roll convention), by phase correlation.

    a, b: (H, W, 3) RGB or (H, W) grey, numpy or torch. Mean removed and a Hann window applied, so image borders do
    not masquerade as a zero shift.
    """
    a, b = _grey(torch.as_tensor(a)), _grey(torch.as_tensor(b))
    h, w = a.shape
    win = torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None] * \
        torch.hann_window(w, periodic=False, dtype=torch.float64)[None, :]     # (H, W)
    fa = torch.fft.fft2((a - a.mean()) * win)
    fb = torch.fft.fft2((b - b.mean()) * win)
    cross = fb * fa.conj()
    r = torch.fft.ifft2(cross / cross.abs().clamp_min(1e-12)).real           # (H, W), peak at the shift
    i = int(r.argmax())
    dy, dx = divmod(i, w)
    return (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx)


def zoom_scale(a, b, max_log: float = 0.25, crop: float = 0.6) -> float:
    """The log scale s with b ~ a zoomed by exp(s) about the image centre (s > 0: b shows a's centre larger).

    a, b: (H, W, 3) RGB or (H, W) grey. A search over s in steps of ZOOM_STEP within +-max_log: a is resampled at
    each scale and compared with b over the central `crop` of the frame (borders leave the view as it zooms) by
    normalised cross-correlation, which ignores a change of brightness.
    """
    a, b = _grey(torch.as_tensor(a)), _grey(torch.as_tensor(b))
    h, w = a.shape
    m = round(max_log / ZOOM_STEP)
    scales = torch.arange(-m, m + 1, dtype=torch.float64) * ZOOM_STEP         # (n,) log scales, exactly 0 at m
    n = len(scales)
    ys = torch.linspace(-crop, crop, max(2, round(h * crop)), dtype=torch.float64)
    xs = torch.linspace(-crop, crop, max(2, round(w * crop)), dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)                                          # (h', w', 2) centre of the frame
    zoomed = torch.nn.functional.grid_sample(
        a[None, None].expand(n, 1, h, w), grid[None] * torch.exp(-scales)[:, None, None, None],
        align_corners=False)[:, 0]                                            # (n, h', w'): a at x / exp(s)
    ref = torch.nn.functional.grid_sample(b[None, None], grid[None], align_corners=False)[0, 0]   # (h', w')
    zoomed = zoomed - zoomed.mean(dim=(1, 2), keepdim=True)
    ref = ref - ref.mean()
    ncc = (zoomed * ref).sum((1, 2)) / (zoomed.flatten(1).norm(dim=1) * ref.norm()).clamp_min(1e-12)
    return float(scales[int(ncc.argmax())])


def motion(axis: str, a, b) -> float:
    """The image motion from a to b that a camera move along `axis` makes: dx for yaw, dy for pitch (pixels), log
    zoom for forward."""
    if axis == "forward":
        return zoom_scale(a, b)
    return phase_shift(a, b)[1 if axis == "yaw" else 0]


def _moved(oracle_motion: float) -> bool:
    """The oracle's image moved: pixel shifts are whole numbers and zooms multiples of ZOOM_STEP, so anything off 0."""
    return abs(oracle_motion) > ZOOM_STEP / 2


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def frame_stats(frames) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (..., H, W, 3) -> per-frame std and mean (...,) in uint8 units."""
    x = torch.as_tensor(frames).double().flatten(-3)                          # (..., H*W*3)
    return x.std(dim=-1, correction=0).numpy(), x.mean(dim=-1).numpy()


def horizon_row(horizon: int, k: int, model: torch.Tensor, oracle: torch.Tensor, start: torch.Tensor) -> dict:
    """One horizon: model (B, K, H, W, 3) and the repeated start frame (B, H, W, 3) against the oracle's frames."""
    repeat = start[:, None].expand_as(oracle)                                 # (B, K, H, W, 3)
    row = {"horizon": horizon, "frames_ahead": horizon * k,
           "model_psnr": psnr(model, oracle), "model_ssim": ssim(model, oracle),
           "repeat_psnr": psnr(repeat, oracle), "repeat_ssim": ssim(repeat, oracle)}
    row["psnr_gain_db"] = row["model_psnr"] - row["repeat_psnr"]
    return row


def mean_gain(rows: list[dict]) -> float | None:
    """Mean PSNR gain over the horizons in GAIN_HORIZONS that were run."""
    lo, hi = GAIN_HORIZONS
    gains = [r["psnr_gain_db"] for r in rows if lo <= r["horizon"] <= hi]
    return float(np.mean(gains)) if gains else None


# ----------------------------------------------------------------------------------------------------------------------
# Sections


def run_horizon(a: argparse.Namespace, hw: tuple[int, int], k: int) -> dict:
    """Section 1: PSNR / SSIM against the oracle at fixed horizons, next to the repeat-start baseline."""
    horizons = [h for h in HORIZONS if h <= a.steps]
    eps = walk_episodes(a.episodes, a.seed, 1 + a.steps * k)
    score_hw = (a.score_size, a.score_size) if a.score_size else hw
    idx = np.concatenate([[0]] + [np.arange(1 + (h - 1) * k, 1 + h * k) for h in horizons])  # start + horizon frames
    truth = torch.from_numpy(Oracle(eps, score_hw, a.device, a.compile).render(eps.c2w[:, idx]))
    # truth: (B, 1 + len(horizons) * K, h, w, 3) at the scoring size
    start = truth[:, 0]                                                       # (B, h, w, 3)
    first = (start.numpy() if score_hw == hw else
             Oracle(eps, hw, a.device, a.compile).render(eps.c2w[:, :1])[:, 0])   # (B, H, W, 3) the model's start
    gen = load_generator(a, len(eps.scenes))
    rows = []
    for s, (frames, _) in enumerate(model_rollout(gen, first, eps.c2w, a.seed, "horizon"), start=1):
        if s in horizons:
            j = 1 + horizons.index(s) * k
            scored = torch.from_numpy(resize_rgb(frames.numpy(), score_hw))     # (B, K, h, w, 3)
            rows.append(horizon_row(s, k, scored, truth[:, j:j + k], start))
    return {"episodes": eps.labels, "rows": rows, "mean_gain_db": mean_gain(rows), "score_hw": list(score_hw)}


def direction_rows(eps: Episodes, model_last: list[torch.Tensor], oracle_last: torch.Tensor, axis: str) -> list[dict]:
    """Per episode, the motion of consecutive last frames; model_last[s] and oracle_last[:, s] are (B, H, W, 3).
    Steps where the oracle's own image does not move are not counted."""
    rows = []
    for e, label in enumerate(eps.labels):
        m = [motion(axis, model_last[s - 1][e], model_last[s][e]) for s in range(1, len(model_last))]
        o = [motion(axis, oracle_last[e, s - 1], oracle_last[e, s]) for s in range(1, len(model_last))]
        counted = [(mi, oi) for mi, oi in zip(m, o) if _moved(oi)]
        rows.append({**label, "axis": axis, "model_shift": m, "oracle_shift": o, "counted": len(counted),
                     "agree": sum(_sign(mi) == _sign(oi) for mi, oi in counted),
                     "oracle_expected": sum(_sign(oi) == EXPECTED_SIGN[axis] * label["sign"] for oi in o)})
    return rows


def run_direction(a: argparse.Namespace, hw: tuple[int, int], k: int) -> dict:
    """Section 2: does the generated image move the way the camera turns (yaw, pitch) and walks (forward)?"""
    out = {}
    frames = 1 + a.direction_steps * k
    walk = WalkConfig()
    metres = walk.speed / walk.fps * a.forward_speed
    for axis, per_frame in (("yaw", a.yaw_deg), ("pitch", a.pitch_deg), ("forward", metres)):
        eps = (forward_episodes(a.direction_scenes, a.seed, frames, per_frame) if axis == "forward" else
               rotation_episodes(axis, a.direction_scenes, a.seed, frames, per_frame))
        oracle = Oracle(eps, hw, a.device, a.compile)
        clip = torch.from_numpy(oracle.render(eps.c2w))                       # (B, 1 + S*K, H, W, 3)
        oracle_last = clip[:, ::k]                                            # (B, 1 + S, H, W, 3): start + step ends
        gen = load_generator(a, len(eps.scenes))
        ceiling = direction_rows(eps, vae_round_trip(gen, clip)[::k], oracle_last, axis)
        model_last = [oracle_last[:, 0]] + [f[:, -1] for f, _ in model_rollout(
            gen, oracle_last[:, 0].numpy(), eps.c2w, a.seed, f"direction {axis}")]
        rows = direction_rows(eps, model_last, oracle_last, axis)
        counted = sum(r["counted"] for r in rows)
        out[axis] = {"per_frame": per_frame, "unit": "m" if axis == "forward" else "deg", "rows": rows,
                     "counted": counted,
                     "agreement": sum(r["agree"] for r in rows) / counted if counted else None,
                     "vae_ceiling": sum(r["agree"] for r in ceiling) / counted if counted else None,
                     "motion_ratio": motion_ratio(rows), "vae_motion_ratio": motion_ratio(ceiling),
                     "oracle_expected": sum(r["oracle_expected"] for r in rows) / sum(len(r["oracle_shift"])
                                                                                      for r in rows)}
    return out


def motion_ratio(rows: list[dict]) -> float | None:
    """How far the model's image moves the oracle's way, as a share of how far the oracle's moves: the sum over
    counted steps of model motion x sign(oracle motion), over the sum of |oracle motion|. 1: as far; 0: still."""
    pairs = [(m, o) for r in rows for m, o in zip(r["model_shift"], r["oracle_shift"]) if _moved(o)]
    total = sum(abs(o) for _, o in pairs)
    return float(sum(m * _sign(o) for m, o in pairs) / total) if total else None


def vae_round_trip(gen: StreamingGenerator, clip: torch.Tensor) -> list[torch.Tensor]:
    """The generator's VAE encodes and decodes whole clips (B, F, H, W, 3) uint8 -> per frame (B, H, W, 3) uint8;
    at the model's size, through the generator's upscaler where it has one."""
    with torch.no_grad():
        rec = gen.vae.decode(gen.vae.encode(gen.to_model_hw(to_unit(clip.to(gen.device)))))   # (B, 3, F, h, w)
    return list(gen.to_frames(rec).cpu().unbind(1))                                 # F x (B, H, W, 3)


def run_long(a: argparse.Namespace, hw: tuple[int, int], k: int) -> dict:
    """Section 3: per-frame std and mean over one long walk, model against oracle."""
    eps = walk_episodes(1, a.seed, 1 + a.long_steps * k, stream=1)
    eps.labels[0]["trajectory"] = "walk (long)"
    oracle = Oracle(eps, hw, a.device, a.compile)
    o_std, o_mean = [], []
    for i in tqdm(range(0, eps.steps_frames + 1, oracle.batch), desc="long oracle", leave=False):
        s, m = frame_stats(oracle.render(eps.c2w[:, i:i + oracle.batch]))     # (1, <=batch)
        o_std.append(s[0])
        o_mean.append(m[0])
    o_std, o_mean = np.concatenate(o_std), np.concatenate(o_mean)            # (1 + L*K,)
    first = oracle.render(eps.c2w[:, :1])[:, 0]                               # (1, H, W, 3)
    gen = load_generator(a, 1)
    m_std, m_mean, finite = [], [], True
    for frames, ok in model_rollout(gen, first, eps.c2w, a.seed, "long rollout"):
        s, m = frame_stats(frames[0])                                         # (K,)
        m_std.append(s)
        m_mean.append(m)
        finite &= ok
    m_std, m_mean = np.concatenate(m_std), np.concatenate(m_mean)            # (L*K,)
    ratio = m_std / np.maximum(o_std[1:], 1.0)                                # floor: a flat oracle view
    quarter = ratio[-max(1, len(ratio) // 4):]
    return {"episode": eps.labels[0], "steps": a.long_steps, "frames": int(len(ratio)),
            "std_ratio_mean": float(ratio.mean()), "std_ratio_last_quarter": float(quarter.mean()),
            "std_ratio_min": float(ratio.min()), "std_ratio_max": float(ratio.max()),
            "mean_diff": float((m_mean - o_mean[1:]).mean()), "model_std_mean": float(m_std.mean()),
            "oracle_std_mean": float(o_std[1:].mean()), "nan": not finite,
            "constant_frames": int((m_std == 0).sum())}


def vae_heldout_psnr(checkpoint: str, hw: tuple[int, int] | None = None) -> dict | None:
    """The VAE's held-out PSNR as recorded (a json beside it or safetensors metadata); never computed. The json's
    `metrics_by_size["HxW"]` (a measurement at the model's frame size) comes before `metrics` (at training)."""
    if checkpoint == "micro":
        return None
    dit = WEIGHTS / "tiny_dit.safetensors" if checkpoint == "tiny" else Path(checkpoint)
    vae = next((p for p in (dit.with_name(dit.stem.replace("_dit", "") + "_vae.safetensors"),
                            dit.with_name("vae.safetensors")) if p.exists()), None)
    if vae is None:
        return None
    for js in (vae.with_suffix(".json"), vae.with_name("vae.json")):
        if js.exists():
            rec = json.loads(js.read_text())
            sized = rec.get("metrics_by_size", {}).get(f"{hw[0]}x{hw[1]}", {}) if hw else {}
            value = sized.get("psnr", rec.get("metrics", {}).get("psnr"))
            if value is not None:
                return {"psnr": float(value), "source": str(js) + (f" at {hw[0]}x{hw[1]}" if "psnr" in sized else "")}
    from safetensors import safe_open

    with safe_open(str(vae), framework="pt") as f:
        meta = f.metadata() or {}
    for key in ("psnr", "heldout_psnr", "val_psnr"):
        if key in meta:
            return {"psnr": float(meta[key]), "source": f"{vae} metadata[{key!r}]"}
    return None


def bars(result: dict) -> list[dict]:
    """PASS/FAIL against the targets. A missing value (nothing run) fails."""
    lo, hi = BARS["std_ratio"]
    gain = result["horizon"]["mean_gain_db"]
    long = result["long"]
    out = [{"bar": "PSNR gain over repeat-start, horizons 4-32 (dB)", "value": gain,
            "target": f">= {BARS['psnr_gain_db']}", "pass": gain is not None and gain >= BARS["psnr_gain_db"]}]
    for axis in ("yaw", "pitch", "forward"):
        v = result["direction"][axis]["agreement"]
        out.append({"bar": f"direction agreement, {axis}", "value": v, "target": f">= {BARS['direction_agreement']}",
                    "pass": v is not None and v >= BARS["direction_agreement"]})
    ok = all(lo <= long[key] <= hi for key in ("std_ratio_mean", "std_ratio_last_quarter"))
    out.append({"bar": "long-rollout frame std / oracle (mean, last quarter)",
                "value": [long["std_ratio_mean"], long["std_ratio_last_quarter"]], "target": f"in [{lo}, {hi}]",
                "pass": ok and not long["nan"] and long["constant_frames"] == 0})
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Report


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return " / ".join(_fmt(x) for x in v)
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_report(r: dict) -> None:
    h = r["horizon"]
    (hh, ww), k = r["frame_hw"], r["frames_per_step"]
    sh, sw = h.get("score_hw", (hh, ww))
    scored = "" if (sh, sw) == (hh, ww) else f", horizons scored at {sh}x{sw}"
    print(f"\nfidelity of {r['checkpoint']} vs oracle ({hh}x{ww}{scored}, K={k}, {r['device']}), "
          f"{len(h['episodes'])} held-out walks from scene seed {r['args']['seed']}")
    print(f"{'horizon':>7} {'frames':>6} {'model PSNR':>10} {'model SSIM':>10} {'repeat PSNR':>11} "
          f"{'repeat SSIM':>11} {'gain dB':>8}")
    for x in h["rows"]:
        print(f"{x['horizon']:>7} {x['frames_ahead']:>6} {x['model_psnr']:>10.2f} {x['model_ssim']:>10.3f} "
              f"{x['repeat_psnr']:>11.2f} {x['repeat_ssim']:>11.3f} {x['psnr_gain_db']:>8.2f}")
    print(f"mean gain over horizons {GAIN_HORIZONS[0]}-{GAIN_HORIZONS[1]}: {_fmt(h['mean_gain_db'])} dB")
    print(f"\n{'direction':<9} {'per frame':>10} {'steps':>6} {'agreement':>10} {'VAE ceiling':>12} "
          f"{'motion ratio':>13} {'VAE ratio':>10} {'oracle as expected':>19}")
    for axis, d in r["direction"].items():
        print(f"{axis:<9} {d['per_frame']:>6.3f} {d['unit']:<3} {d['counted']:>6} {_fmt(d['agreement']):>10} "
              f"{_fmt(d['vae_ceiling']):>12} {_fmt(d['motion_ratio']):>13} {_fmt(d['vae_motion_ratio']):>10} "
              f"{_fmt(d['oracle_expected']):>19}")
    lg = r["long"]
    print(f"\nlong rollout: {lg['steps']} steps ({lg['frames']} frames), {lg['episode']['family']} scene "
          f"{lg['episode']['scene_seed']}")
    print(f"std ratio model/oracle: mean {lg['std_ratio_mean']:.3f}, last quarter {lg['std_ratio_last_quarter']:.3f}, "
          f"min {lg['std_ratio_min']:.3f}, max {lg['std_ratio_max']:.3f}; mean intensity model - oracle "
          f"{lg['mean_diff']:+.2f}; NaN {lg['nan']}; constant frames {lg['constant_frames']}")
    if r["vae"] is not None:
        print(f"VAE held-out PSNR (recorded at training): {r['vae']['psnr']:.2f} dB ({r['vae']['source']})")
    print()
    for b in r["bars"]:
        print(f"{'PASS' if b['pass'] else 'FAIL'}  {b['bar']}: {_fmt(b['value'])} (target {b['target']})")


# ----------------------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="tiny", help="'tiny' (shipped), 'micro' (random, tests) or a DiT path")
    p.add_argument("--episodes", type=int, default=16, help="horizon episodes, half indoor and half outdoor")
    p.add_argument("--steps", type=int, default=32, help="steps per horizon episode; horizons beyond it are dropped")
    p.add_argument("--direction-scenes", type=int, default=4, help="scenes for the yaw and pitch turns (x2 signs)")
    p.add_argument("--direction-steps", type=int, default=6, help="steps per turn")
    p.add_argument("--yaw-deg", type=float, default=2.5, help="yaw per raw frame, degrees")
    p.add_argument("--pitch-deg", type=float, default=1.5, help="pitch per raw frame, degrees")
    p.add_argument("--forward-speed", type=float, default=1.0,
                   help="forward walks at this share of the keyboard walk's full speed (1 m/s at 16 fps)")
    p.add_argument("--long-steps", type=int, default=1000)
    p.add_argument("--score-size", type=int, default=0,
                   help="score the horizons at NxN (model frames resized) instead of the model's frame size")
    p.add_argument("--no-upscaler", action="store_true",
                   help="leave out the checkpoint's upscaler (model/upscale.py): frames at the model's own size")
    p.add_argument("--seed", type=int, default=100000, help="first scene seed (held out: training used < 100000)")
    p.add_argument("--device", default="cpu", help="model and oracle device")
    p.add_argument("--compile", action="store_true", help="fused oracle renderer (torch.compile)")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    if min(a.episodes, a.steps, a.direction_scenes, a.direction_steps, a.long_steps) < 1:
        p.error("--episodes, --steps, --direction-scenes, --direction-steps and --long-steps must be >= 1")
    if not a.forward_speed > 0:
        p.error(f"--forward-speed must be > 0, got {a.forward_speed}")
    if a.score_size < 0:
        p.error(f"--score-size must be 0 (the model's size) or a positive frame size, got {a.score_size}")
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    probe = load_generator(a, 1)                                              # fails early on a missing checkpoint
    hw, k, model_hw = probe.frame_hw, probe.frames_per_step, probe.model_hw
    device = str(probe.device) + (f" ({torch.cuda.get_device_name(probe.device)})" if probe.device.type == "cuda"
                                  else "")
    del probe
    with torch.no_grad():
        result = {"benchmark": "fidelity", "args": vars(a), "checkpoint": a.checkpoint, "device": device,
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                  "frame_hw": list(hw), "model_hw": list(model_hw), "frames_per_step": k, "fov": FOV,
                  "supersample": SUPERSAMPLE,
                  "horizon": run_horizon(a, hw, k), "direction": run_direction(a, hw, k), "long": run_long(a, hw, k),
                  "vae": vae_heldout_psnr(a.checkpoint, model_hw)}
    result["bars"] = bars(result)
    print_report(result)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(result, indent=1, default=_json_default))
    print(f"wrote {out / 'fidelity.json'}")
    return result


def _json_default(x):
    """numpy scalars (shift components, counts) as plain numbers."""
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


if __name__ == "__main__":
    main()
