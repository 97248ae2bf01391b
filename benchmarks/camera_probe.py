"""Does the world model use its camera input? Two probes on held-out scenes, to tell a training problem from a bug.

    python benchmarks/camera_probe.py [--checkpoint tiny] [--walks 16] [--turns 2]

1. Teacher forcing: oracle walks (held-out scene seeds) encoded by the model's own VAE, then the DiT's few-step x0
   loss and flow loss with clean history, (a) with the true poses, (b) with the poses of another walk, (c) with a
   camera that never moves. A model that reads its camera scores (a) clearly below (b) and (c).
2. Free generation: yaw turns in place from an oracle start frame, generated (a) by the streaming generator and (b) by
   the trainer's full chunk-causal forward (`model.train.evaluate.rollout`: no caches, no window). Per step, the
   horizontal image shift between consecutive last frames (phase correlation), next to the oracle's. If (a) and (b)
   agree, the caches are not the cause of whatever the shifts show.
3. The latent grid: for the same turns, the image shift from the start frame to each step's view (phase correlation,
   cumulative), (a) in the oracle, (b) decoded from the VAE's own latent of the turned view, (c) decoded from the start
   latent warped by the rotation (model/warp.py: bilinear in the latent grid). If (b) follows (a) and (c) moves in
   whole latent pixels, sub-pixel motion is in what the VAE encodes, and the warp conditioning can only hint at it.

Prints a table and writes benchmarks/results/camera_probe.json. Random draws are seeded; the run is deterministic.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fidelity as fid  # noqa: E402  (the fidelity benchmark's episodes, oracle and phase correlation)

from model.generator import StreamingGenerator  # noqa: E402
from model.train.common import to_uint8, to_unit  # noqa: E402
from model.train.dit_train import Args as DitArgs  # noqa: E402
from model.train.dit_train import Draws, loss_flow, loss_x0  # noqa: E402
from model.train.evaluate import LatentBatch, rollout  # noqa: E402
from model.train.latents import camera_conditioning, relative_poses  # noqa: E402
from model.warp import warp_latents  # noqa: E402


def conditioning(gen: StreamingGenerator, c2w: np.ndarray, num_latents: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera inputs of episodes c2w (B, F, 4, 4), relative to each episode's first frame, as training builds them."""
    rel = torch.stack([relative_poses(torch.from_numpy(c)) for c in c2w])             # (B, F, 4, 4)
    k_px = fid.intrinsics_from_fov(gen.frame_hw[1], gen.frame_hw[0], fid.FOV).expand(len(c2w), 4).float()
    return camera_conditioning(gen.cfg, rel, gen._k_lat(k_px), num_latents)


def encode(gen: StreamingGenerator, frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, F, H, W, 3) -> normalised latents (B, C, 1 + (F-1)/s, h, w), the first frame encoded alone."""
    return gen.vae.encode(to_unit(torch.from_numpy(frames)))


@torch.no_grad()
def teacher_forced(gen: StreamingGenerator, walks: int, latents: int, seed: int) -> list[dict]:
    """Section 1: x0 and flow losses with clean history under true, shuffled and frozen camera inputs."""
    s = gen.cfg.vae_temporal
    eps = fid.walk_episodes(walks, seed, 1 + s * (latents - 1))
    frames = fid.Oracle(eps, gen.frame_hw).render(eps.c2w)
    z = encode(gen, frames)
    cond, pl = conditioning(gen, eps.c2w, latents)
    perm = torch.roll(torch.arange(walks), 1)
    variants = {
        "true poses": (cond, pl),
        "another walk's poses": (cond[perm], pl[perm]),
        "camera never moves": (cond[:, :1].expand_as(cond).contiguous(), pl[:, :, :1].expand_as(pl).contiguous()),
    }
    args = DitArgs(latents="-", objective="x0", amp=False, teacher_forcing=1.0)
    rows = []
    for name, (c, p) in variants.items():
        b = LatentBatch(z, c, p)
        x0 = [float(loss_x0(gen.model, b, args, _draws(i), vae=gen.vae)) for i in range(3)]
        flow = [float(loss_flow(gen.model, b, args, _draws(i), gen.vae)) for i in range(3)]
        rows.append({"camera": name, "x0_loss": float(np.mean(x0)), "flow_loss": float(np.mean(flow))})
    return rows


def _draws(i: int) -> Draws:
    return Draws(torch.Generator().manual_seed(i), torch.Generator().manual_seed(1000 + i))


@torch.no_grad()
def free_generation(gen: StreamingGenerator, turns: int, steps: int, deg: float, seed: int) -> list[dict]:
    """Section 2: per yaw turn, last-frame shifts of streaming, full-forward and oracle."""
    k = gen.frames_per_step
    eps = fid.rotation_episodes("yaw", turns, seed, 1 + steps * k, deg)
    frames = fid.Oracle(eps, gen.frame_hw).render(eps.c2w)                            # (B, F, H, W, 3)
    first = frames[:, 0]
    stream = [f[:, -1] for f, _ in fid.model_rollout(gen, first, eps.c2w, seed, "stream")]
    cond, pl = conditioning(gen, eps.c2w, 1 + steps)
    z0 = gen.vae.encode(to_unit(torch.from_numpy(first)[:, None]))
    full = to_uint8(gen.vae.decode(rollout(gen.model, z0, cond, pl, torch.Generator().manual_seed(seed),
                                         vae=gen.vae).float()))
    oracle_last = torch.from_numpy(frames[:, k::k])                                   # (B, steps, H, W, 3)
    full_last = full[:, k::k]
    stream_last = torch.stack(stream, 1)

    def shifts(seq: torch.Tensor) -> list[int]:                                        # (steps, H, W, 3)
        return [fid.phase_shift(seq[s - 1], seq[s])[1] for s in range(1, seq.shape[0])]

    return [{**label, "oracle": shifts(oracle_last[e]), "streaming": shifts(stream_last[e]),
             "full_forward": shifts(full_last[e])} for e, label in enumerate(eps.labels)]


@torch.no_grad()
def latent_grid(gen: StreamingGenerator, turns: int, steps: int, deg: float, seed: int) -> list[dict]:
    """Section 3: cumulative shifts from the start frame: oracle, VAE round trip of each view, warped start latent."""
    k = gen.frames_per_step
    eps = fid.rotation_episodes("yaw", turns, seed, 1 + steps * k, deg)
    views = eps.c2w[:, ::k]                                                          # (B, 1 + steps, 4, 4)
    frames = fid.Oracle(eps, gen.frame_hw).render(views)                              # (B, 1 + steps, H, W, 3)
    b, n = frames.shape[:2]
    z = encode(gen, frames.reshape(b * n, 1, *frames.shape[2:]))                      # (B*n, C, 1, h, w) each alone
    k_px = fid.intrinsics_from_fov(gen.frame_hw[1], gen.frame_hw[0], fid.FOV).expand(b, 4).float()
    rel = torch.stack([relative_poses(torch.from_numpy(c)) for c in views]).float().reshape(b, n, 16)
    cond = torch.cat([rel, gen._k_lat(k_px)[:, None].expand(b, n, 4)], -1)            # (B, n, 20) at the views
    z0 = z.view(b, n, *z.shape[1:])[:, 0]                                             # (B, C, 1, h, w)
    warped = warp_latents(z0.expand(-1, -1, n, -1, -1), cond[:, :1].expand(-1, n, -1), cond)[:, :-1]
    round_trip = to_uint8(gen.vae.decode(z.float()))[:, 0].view(b, n, *frames.shape[2:])
    warp_dec = to_uint8(gen.vae.decode(warped.permute(0, 2, 1, 3, 4).reshape(b * n, -1, 1, *z.shape[3:])))
    warp_dec = warp_dec[:, 0].view(b, n, *frames.shape[2:])

    def shifts(seq) -> list[int]:
        return [fid.phase_shift(seq[0], seq[s])[1] for s in range(1, n)]

    return [{**label, "oracle": shifts(frames[e]), "vae_round_trip": shifts(round_trip[e]),
             "warped_latent": shifts(warp_dec[e])} for e, label in enumerate(eps.labels)]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="tiny", help="'tiny' (shipped), 'micro' (random, tests) or a DiT path")
    p.add_argument("--walks", type=int, default=16, help="held-out walks of section 1")
    p.add_argument("--latents", type=int, default=9, help="latents per walk (1 + s(T-1) raw frames)")
    p.add_argument("--turns", type=int, default=2, help="scenes of section 2 (x2 turn signs)")
    p.add_argument("--steps", type=int, default=6, help="steps per turn")
    p.add_argument("--yaw-deg", type=float, default=2.5, help="yaw per raw frame, degrees")
    p.add_argument("--seed", type=int, default=100000, help="first scene seed (held out: training used < 100000)")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    gen = StreamingGenerator.from_pretrained(a.checkpoint, batch_size=2 * a.turns)
    res = {"benchmark": "camera_probe", "checkpoint": a.checkpoint, "args": vars(a), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.machine(),
           "teacher_forced": teacher_forced(gen, a.walks, a.latents, a.seed),
           "free_generation": free_generation(gen, a.turns, a.steps, a.yaw_deg, a.seed),
           "latent_grid": latent_grid(gen, a.turns, a.steps, a.yaw_deg, a.seed)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "camera_probe.json").write_text(json.dumps(res, indent=1))

    print(f"\n1. teacher forcing, {a.walks} held-out walks of {a.latents} latents ({a.checkpoint})")
    print(f"{'camera input':<24} {'x0 loss':>8} {'flow loss':>10}")
    for r in res["teacher_forced"]:
        print(f"{r['camera']:<24} {r['x0_loss']:>8.4f} {r['flow_loss']:>10.4f}")
    print(f"\n2. free generation, yaw {a.yaw_deg} deg/frame: horizontal shift (px) between the last frames of "
          "consecutive steps")
    for r in res["free_generation"]:
        print(f"{r['family']:<8} seed {r['scene_seed']} sign {r['sign']:+d}: oracle {r['oracle']}  "
              f"streaming {r['streaming']}  full forward {r['full_forward']}")
    print(f"\n3. the latent grid: cumulative horizontal shift (px) from the start frame, one latent pixel = "
          f"{gen.cfg.vae_spatial} px")
    for r in res["latent_grid"]:
        print(f"{r['family']:<8} seed {r['scene_seed']} sign {r['sign']:+d}: oracle {r['oracle']}  "
              f"VAE round trip {r['vae_round_trip']}  warped start latent {r['warped_latent']}")
    return res


if __name__ == "__main__":
    main()
