"""One PointNav episode of the goal-seeker, written as an mp4 and a contact sheet with its poses.

    python examples/goal_seeker_video.py [--seed 0] [--size 128] [--out runs/examples]
"""

import argparse

import numpy as np

from agents.common import make_env, write_media
from agents.rollout import run_episode
from agents.scripted import GoalSeeker

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seed", type=int, default=0)
p.add_argument("--size", type=int, default=128)
p.add_argument("--scene", default="indoor")
p.add_argument("--max-steps", type=int, default=500)
p.add_argument("--out", default="runs/examples")
a = p.parse_args()

env = make_env(task="pointnav", size=a.size, scene=a.scene, max_episode_steps=a.max_steps)
result = run_episode(env, GoalSeeker(), seed=a.seed, record=True)   # frames: the reset frame + K per step
paths = write_media(a.out, f"goal_seeker_{a.scene}_{a.seed}", result.frames, fps=16)
np.save(f"{a.out}/goal_seeker_{a.scene}_{a.seed}_poses.npy", result.poses)
print(f"{result.steps} steps, success {result.measures['success']:.0f}, SPL {result.measures['spl']:.2f} -> "
      f"{paths['video']}, {paths['sheet']}")
env.close()
