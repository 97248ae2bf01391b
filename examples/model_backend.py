"""The same agents on the world-model backend: swap backend="oracle" for backend="model".

    python examples/model_backend.py [--model micro|tiny|path] [--steps 12] [--out runs/examples]

Until the embedded `tiny` model ships, `micro` (a seeded random model, 32x32 frames) shows the plumbing: the
model generates the frames, while poses, collisions and the task's measures still come from the scene, so the
goal-seeker's numbers match the oracle's. The side-by-side video shows model | oracle along the same poses.
"""

import argparse

import numpy as np

from agents.common import key_string_actions, make_env, write_media
from agents.rollout import psnr, run_episode
from agents.scripted import ActionReplay, GoalSeeker

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--model", default="micro")
p.add_argument("--size", type=int, default=32, help="the model's frame size (micro 32, tiny 64)")
p.add_argument("--steps", type=int, default=12)
p.add_argument("--out", default="runs/examples")
a = p.parse_args()

runs = {}
for backend in ("model", "oracle"):
    kw = {"model": a.model} if backend == "model" else {}
    env = make_env(task="pointnav", backend=backend, size=a.size, scene_seeds=2, **kw)
    actions = key_string_actions(f"w+right-{4 * a.steps}", env.unwrapped.frames_per_step)
    runs[backend] = run_episode(env, ActionReplay(actions), seed=0, record=True)
    goal = run_episode(env, GoalSeeker(), seed=0, max_steps=4 * a.steps)
    print(f"{backend:>6}: goal-seeker SPL {goal.measures['spl']:.2f} after {goal.steps} steps")
    env.close()
m, o = runs["model"].frames, runs["oracle"].frames
print(f"same poses: {np.allclose(runs['model'].poses, runs['oracle'].poses)}; "
      f"model vs oracle PSNR {np.mean(psnr(m[1:], o[1:])):.1f} dB (the random micro model is not trained)")
print("->", write_media(a.out, "model_vs_oracle", np.concatenate([m, o], axis=2))["video"])
