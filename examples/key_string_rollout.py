"""Drive with a SANA-WM style key string (`<keys>-<frames>,...`) in either keymap and save the video.

    python examples/key_string_rollout.py ["w-32,w+right-16,s-8"] [--keymap ours|sana-wm] [--out runs/examples]

Our keymap: W/S forward/back, A/D strafe, arrows yaw/pitch. SANA-WM's: W/S forward/back, A/D yaw, I/K pitch, J/L
strafe. A segment holds its keys for <frames> raw frames = ceil(frames / K) env steps.
"""

import argparse

from agents.common import key_string_actions, make_env, write_media
from agents.rollout import run_episode
from agents.scripted import ActionReplay

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("keys", nargs="?", default="w-32,w+right-16,s-8")
p.add_argument("--keymap", default="ours", choices=("ours", "sana-wm"))
p.add_argument("--size", type=int, default=96)
p.add_argument("--out", default="runs/examples")
a = p.parse_args()

env = make_env(task="freeroam", size=a.size, scene="outdoor")
actions = key_string_actions(a.keys, env.unwrapped.frames_per_step, a.keymap)  # (T, 6)
result = run_episode(env, ActionReplay(actions), seed=1, record=True)
paths = write_media(a.out, "key_string", result.frames)
print(f"{len(actions)} steps, {len(result.frames)} frames, {result.measures['path_length']:.2f} m -> {paths['video']}")
env.close()
