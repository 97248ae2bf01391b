"""Random agent vs goal-seeker on PointNav: success, SPL and soft SPL over the same episodes (oracle backend).

    python examples/scripted_agents.py [--episodes 10] [--size 64]
"""

import argparse

from agents.common import NavActionSet, make_env, print_table
from agents.rollout import evaluate
from agents.scripted import GoalSeeker, RandomAgent

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--episodes", type=int, default=10)
p.add_argument("--size", type=int, default=64)
p.add_argument("--max-steps", type=int, default=200, help="episode limit")
a = p.parse_args()

env = make_env(task="pointnav", size=a.size, frames_per_step=1, scene_seeds=4, max_episode_steps=a.max_steps)
rows = [evaluate(env, GoalSeeker(), episodes=a.episodes),                          # the SPL upper bound
        evaluate(env, RandomAgent(seed=0, actions=NavActionSet()), episodes=a.episodes)]  # forward / left / right
print_table(rows, ["agent", "success", "spl", "soft_spl", "reward", "steps"])
env.close()
