"""Fork a world and try two futures from the same instant (get_state / set_state), then compare them.

    python examples/fork_and_branch.py [--steps 8] [--backend oracle|model] [--model micro]
"""

import argparse

import numpy as np

from agents.common import make_env

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--steps", type=int, default=8)
p.add_argument("--backend", default="oracle", choices=("oracle", "model"))
p.add_argument("--model", default="micro", help="model backend: micro (random, 32x32) or tiny once it ships")
a = p.parse_args()

kw = {"backend": "model", "model": a.model, "size": 32} if a.backend == "model" else {"size": 64}
env = make_env(task="pointnav", scene_seeds=2, **kw)
obs, info = env.reset(seed=0)
fork = env.unwrapped.get_state()                       # a snapshot: scene, pose, caches, measures
outcomes, first = {}, {}
for name, turn in (("left", -1.0), ("right", 1.0)):
    env.unwrapped.set_state(fork)                      # back to the same instant
    for _ in range(a.steps):
        obs, reward, terminated, truncated, info = env.step(np.array([0, 0, 1, 0, turn * 0.5, 0], np.float32))
        first.setdefault(name, obs["rgb"])
        if terminated or truncated:
            break
    outcomes[name] = info["distance_to_goal"]
    print(f"branch {name:>5}: geodesic to goal {info['distance_to_goal']:.2f} m after {a.steps} steps")
best = min(outcomes, key=outcomes.get)
env.unwrapped.set_state(fork)                          # forks replay exactly: the left branch's first frame again
again = env.step(np.array([0, 0, 1, 0, -0.5, 0], np.float32))[0]["rgb"]
print(f"best branch: {best}; replayed from the fork, identical: {np.array_equal(again, first['left'])}")
env.close()
