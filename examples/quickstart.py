"""Quickstart: a PointNav episode in a procedural world with the oracle backend (runs on a laptop CPU).

    python examples/quickstart.py [steps]
"""

import sys

import gymnasium as gym
import numpy as np

import sanawm_env  # noqa: F401  (registers the SanaWM/... ids)

env = gym.make("SanaWM/PointNav-v0", size=64)
obs, info = env.reset(seed=0)
print(f"goal {obs['pointgoal'][0]:.2f} m away at {np.degrees(obs['pointgoal'][1]):.0f} deg, geodesic "
      f"{info['distance_to_goal']:.2f} m")
for t in range(int(sys.argv[1]) if len(sys.argv) > 1 else 40):  # turn toward the goal, walk when facing it
    turn = float(np.clip(obs["pointgoal"][1] / np.radians(10), -1, 1))
    obs, reward, terminated, truncated, info = env.step(np.array([0, 0, 1 - abs(turn), 0, turn, 0], np.float32))
    if t % 8 == 0 or terminated or truncated:
        print(f"step {t:2d}: reward {reward:+.3f}  geodesic {info['distance_to_goal']:5.2f} m  collided "
              f"{info['collided']!s:5}  {len(info['frames'])} frames in {info['step_ms']:.0f} ms")
    if terminated or truncated:
        break
print(f"success {info['success']:.0f}, SPL {info['spl']:.2f}, soft SPL {info['soft_spl']:.2f}")
env.close()
