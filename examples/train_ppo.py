"""Train PPO on PointNav from Python, then evaluate it next to the random agent and the goal-seeker.

    python examples/train_ppo.py [--steps 20000] [--episodes 10] [--out runs/examples/ppo]

The same as `sanawm train-ppo ... && sanawm eval-policy --baselines` (see agents/ppo.py); minutes of CPU for a
visible improvement, about 20 for a clear one.
"""

import argparse

from agents.common import make_env, print_table
from agents.ppo import PPOAgent, TrainArgs, train
from agents.rollout import evaluate
from agents.scripted import GoalSeeker, RandomAgent

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--steps", type=int, default=20_000)
p.add_argument("--num-envs", type=int, default=8)
p.add_argument("--episodes", type=int, default=10)
p.add_argument("--episode-steps", type=int, default=150, help="episode limit")
p.add_argument("--scene-seeds", default="16", help="scene pool: N scenes (0..N-1)")
p.add_argument("--out", default="runs/examples/ppo")
a = p.parse_args()

cfg = train(TrainArgs(steps=a.steps, num_envs=a.num_envs, n_steps=min(128, max(16, a.steps // a.num_envs)),
                      batch_size=64, max_episode_steps=a.episode_steps, scene_seeds=a.scene_seeds, out=a.out,
                      progress=False))
agent = PPOAgent.load(f"{a.out}/policy.zip")                   # policy.zip + config.json
env = make_env(**cfg["env_kwargs"])                            # the training env's arguments
rows = [evaluate(env, agent, episodes=a.episodes, seed=10_000),
        evaluate(env, RandomAgent(seed=0, actions=agent.actions), episodes=a.episodes, seed=10_000),
        evaluate(env, GoalSeeker(), episodes=a.episodes, seed=10_000)]
print_table(rows, ["agent", "success", "spl", "soft_spl", "reward", "steps"])
env.close()
