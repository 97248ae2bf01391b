"""PPO on SanaWM/PointNav-v0 with stable-baselines3: `sanawm train-ppo` and `sanawm eval-policy`.

    sanawm train-ppo --steps 200000 --minutes 20 --num-envs 8 --size 64 --backend oracle --out runs/ppo
    sanawm eval-policy --policy runs/ppo/policy.zip --episodes 50 --baselines --videos 3
    sanawm eval-policy --policy runs/ppo/policy.zip --episodes 50 --backend model --model tiny --size 64
    python -m agents.ppo --steps 256 --num-envs 2 --n-steps 32 --batch-size 64 --out /tmp/ppo   # a tiny CPU run

Training: N worlds in one `SanaWMVectorEnv` (one backend batch), seen by SB3 through `sanawm_env.sb3.SB3VecEnv`,
with a small discrete action set on top (`NavActionSet`: forward 0.25 m, turn left / right 30 degrees by default;
add `stop` with --actions to train habitat-style stopping). `MultiInputPolicy` reads both observation keys (a
NatureCNN on "rgb", the 2-vector "pointgoal"). Frames per step default to 1 while training: an observation is the
step's last frame, and the K frames in between change nothing but the video, so K = 1 renders 4x less.

Outputs in --out: `progress.csv` (SB3's CSV logger: rollout/ep_rew_mean, rollout/success_rate, rollout/spl_mean,
...), `learning_curve.png` (success rate, SPL and return against steps), `policy.zip` (the SB3 model) and
`config.json` beside it (env arguments and action names; eval-policy and `PPOAgent.load` read it).

Evaluation (`sanawm eval-policy`) runs the policy, and with --baselines the random agent (same action set) and the
goal-seeker (geodesic path, the SPL upper bound), on the same episodes (seeds --seed, --seed + 1, ...), prints a
table (success, SPL, soft SPL, mean reward, steps) and writes `eval.json` and mp4s of the first --videos episodes
of each agent (and, with --baselines, `learning_curve.png` with the baselines drawn in). --backend / --model /
--size swap the world under the same policy: frames of another size are resized to the policy's input.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    EnvArgs,
    NavActionSet,
    add_dataclass_args,
    arg,
    from_namespace,
    make_env,
    make_parser,
    print_table,
    resize_rgb,
)
from .rollout import evaluate
from .scripted import Agent, GoalSeeker, RandomAgent

CONFIG_NAME = "config.json"


def _sb3():
    try:
        import stable_baselines3 as sb3
    except ImportError as e:
        raise SystemExit('stable-baselines3 is not installed; run `pip install "sanawm[rl]"`') from e
    return sb3


def _have_rich() -> bool:
    """SB3's progress bar needs rich and tqdm."""
    try:
        import rich  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------- training pieces


def nav_vec_env(venv, actions: NavActionSet):
    """An SB3 VecEnv with Discrete(len(actions)) actions over a continuous SanaWM SB3VecEnv; "stop" calls the vector
    env's `request_stop` for the worlds that chose it."""
    from gymnasium import spaces
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class NavVecEnv(VecEnvWrapper):
        def __init__(self):
            super().__init__(venv, action_space=spaces.Discrete(actions.n))
            self.actions = actions
            self.stop = actions.index("stop") if "stop" in actions.names else None

        def reset(self):
            return self.venv.reset()

        def step_async(self, a):
            a = np.asarray(a).reshape(-1).astype(np.int64)
            if self.stop is not None and (a == self.stop).any():
                self.venv.env_method("request_stop", a == self.stop)
            self.venv.step_async(actions.table[a])

        def step_wait(self):
            return self.venv.step_wait()

    return NavVecEnv()


def callbacks(minutes: float, log_every: int = 100):
    """SB3 callbacks: SPL / soft SPL means of the last 100 episodes into the logger (rollout/spl_mean, ...), and a
    wall-clock budget that ends training after `minutes` (0: none)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Measures(BaseCallback):
        def __init__(self):
            super().__init__()
            self.buf = {k: deque(maxlen=log_every) for k in ("spl", "soft_spl", "success")}
            self.t0 = time.time()
            self.episodes = 0

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.episodes += 1
                    for k, b in self.buf.items():
                        if k in info:
                            b.append(float(info[k]))
            if minutes and time.time() - self.t0 > minutes * 60:
                print(f"time budget of {minutes} min reached at {self.num_timesteps} steps")
                return False
            return True

        def _on_rollout_end(self) -> None:
            for k in ("spl", "soft_spl"):
                if self.buf[k]:
                    self.logger.record(f"rollout/{k}_mean", float(np.mean(self.buf[k])))
            self.logger.record("rollout/episodes", self.episodes)
            self.logger.record("time/minutes", (time.time() - self.t0) / 60)

    return [Measures()]


def plot_learning_curve(csv_path: str | Path, png_path: str | Path, title: str = "PPO on SanaWM/PointNav-v0",
                        baselines: dict[str, dict[str, float]] | None = None, min_episodes: int = 20) -> Path:
    """Success rate, SPL and episode return against environment steps, from SB3's progress.csv (matplotlib Agg);
    `baselines` ({name: {"success": x, "spl": y}}) are drawn as dashed lines."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(Path(csv_path).open()))
    # Means over the last 100 episodes: skip the first points, taken over a handful of (mostly short) episodes.
    rows = [r for r in rows if float(r.get("rollout/episodes") or min_episodes) >= min_episodes] or rows

    def col(name):
        xs, ys = [], []
        for r in rows:
            if r.get(name) not in (None, "") and r.get("time/total_timesteps") not in (None, ""):
                xs.append(float(r["time/total_timesteps"]))
                ys.append(float(r[name]))
        return xs, ys

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (name, label) in zip(axes, (("rollout/success_rate", "success rate"), ("rollout/spl_mean", "SPL"),
                                        ("rollout/ep_rew_mean", "episode return"))):
        xs, ys = col(name)
        ax.plot(xs, ys, color="C0", label="PPO (last 100 episodes)")
        key = {"success rate": "success", "SPL": "spl", "episode return": "reward"}[label]
        for i, (bname, b) in enumerate((baselines or {}).items()):
            if key in b:
                ax.axhline(b[key], ls="--", color=f"C{i + 1}", label=bname)
        ax.set_xlabel("environment steps")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


# ---------------------------------------------------------------------- the PPO agent


class PPOAgent(Agent):
    """A trained policy as an agent: `PPOAgent.load("runs/ppo/policy.zip")`; resizes frames to the policy's input.

    Works with any SanaWM env of the policy's task (oracle or model backend, any frame size); discrete actions are
    mapped through the training action set (its step sizes are the env's max_translation / max_rotation, which
    `config.json` records and `make_eval_env` reuses).
    """

    name = "ppo"

    def __init__(self, model, actions: NavActionSet | None, deterministic: bool = True):
        self.model = model
        self.actions = actions
        self.deterministic = deterministic
        self.hw = None  # the policy's frame size (SB3 stores image spaces channel-first after VecTransposeImage)
        if hasattr(model.observation_space, "spaces") and "rgb" in model.observation_space.spaces:
            from stable_baselines3.common.preprocessing import is_image_space_channels_first

            space = model.observation_space["rgb"]
            self.hw = tuple(space.shape[1:3] if is_image_space_channels_first(space) else space.shape[:2])

    @classmethod
    def load(cls, path: str | Path, deterministic: bool = True, device: str = "cpu") -> PPOAgent:
        """Load `policy.zip` (and the `config.json` beside it)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no policy at {path} (train one with `sanawm train-ppo --out {path.parent}`)")
        model = _sb3().PPO.load(path, device=device)
        cfg = load_config(path)
        names = cfg.get("actions")
        return cls(model, NavActionSet(names) if names else None, deterministic)

    def act(self, obs, info):
        obs = dict(obs)
        if self.hw is not None and obs["rgb"].shape[:2] != self.hw:
            obs["rgb"] = resize_rgb(obs["rgb"], self.hw)
        a, _ = self.model.predict(obs, deterministic=self.deterministic)
        if self.actions is not None:
            return self.actions.continuous(self.env, int(np.asarray(a).reshape(())))
        return np.asarray(a, np.float32)


def load_config(policy_path: str | Path) -> dict[str, Any]:
    p = Path(policy_path).with_name(CONFIG_NAME)
    return json.loads(p.read_text()) if p.exists() else {}


# ---------------------------------------------------------------------- train-ppo


@dataclass
class TrainArgs(EnvArgs):
    """`sanawm train-ppo`: PPO on a SanaWM navigation task."""

    task: str = arg("pointnav", "task: pointnav (or imagenav)", choices=("pointnav", "imagenav"))
    size: int = arg(64, "frame size in pixels (square)")
    frames_per_step: int = arg(1, "raw frames per step K while training (1 renders least; the policy sees the last)")
    scene_seeds: str = arg("16", "scene pool: N (scenes 0..N-1), A-B or a comma list", metavar="SEEDS")
    max_episode_steps: int = arg(150, "truncate episodes after this many steps")
    max_geodesic: float = arg(5.0, "longest start-goal geodesic (m) of the training episodes (0: no limit)")
    success_radius: float = arg(0.2, "metres from the goal that count as reached (habitat: 0.2)")
    steps: int = arg(100_000, "environment steps to train for (summed over worlds)")
    minutes: float = arg(0.0, "stop after this many minutes of training (0: no limit)")
    num_envs: int = arg(8, "worlds stepped together (one vector env)")
    actions: str = arg("forward,left,right", "discrete action set, comma-separated names from: stop, forward, left, "
                                             "right, look_up, look_down, strafe_left, strafe_right")
    forward_m: float = arg(0.25, "metres per forward step")
    turn_deg: float = arg(30.0, "degrees per turn")
    n_steps: int = arg(128, "PPO rollout length per world")
    batch_size: int = arg(256, "PPO minibatch size")
    n_epochs: int = arg(4, "PPO epochs per update")
    lr: float = arg(3e-4, "learning rate")
    gamma: float = arg(0.99, "discount")
    ent_coef: float = arg(0.01, "entropy bonus")
    out: str = arg("runs/ppo", "output folder")
    progress: bool = arg(True, "progress bar")

    def env_kwargs(self) -> dict[str, Any]:
        kw = super().env_kwargs()
        kw["max_translation"] = self.forward_m
        kw["max_rotation"] = math.radians(self.turn_deg)
        kw["success_radius"] = self.success_radius
        if self.max_geodesic:
            kw["max_geodesic"] = self.max_geodesic
        if "stop" in self.actions.split(","):
            kw["success_on"] = "stop"
        return kw


def train(args: TrainArgs) -> dict[str, Any]:
    """Train, save policy.zip + config.json, write progress.csv and learning_curve.png; returns the config."""
    _sb3()
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure

    from sanawm_env.sb3 import SB3VecEnv
    from sanawm_env.vector import SanaWMVectorEnv

    if args.size < 36:
        raise SystemExit(f"--size must be at least 36 for SB3's NatureCNN image encoder, got {args.size}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    actions = NavActionSet(args.actions)
    kw = args.env_kwargs()
    venv_kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items() if k != "max_episode_steps"}
    venv = SanaWMVectorEnv(num_envs=args.num_envs, max_episode_steps=kw.get("max_episode_steps"), **venv_kw)
    env = nav_vec_env(SB3VecEnv(venv), actions)
    env.seed(args.seed)
    config = {"env_kwargs": kw, "actions": list(actions.names), "train": asdict(args), "policy": "policy.zip"}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    model = PPO("MultiInputPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                learning_rate=args.lr, gamma=args.gamma, ent_coef=args.ent_coef, seed=args.seed, device=args.device,
                verbose=0)
    model.set_logger(configure(str(out), ["csv", "stdout"] if not (args.progress and _have_rich()) else ["csv"]))
    t0 = time.time()
    model.learn(args.steps, callback=callbacks(args.minutes), progress_bar=args.progress and _have_rich())
    minutes = (time.time() - t0) / 60
    model.save(out / "policy.zip")
    env.close()
    config.update(steps_done=int(model.num_timesteps), minutes=round(minutes, 2))
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    png = None
    if (out / "progress.csv").stat().st_size > 0:
        png = plot_learning_curve(out / "progress.csv", out / "learning_curve.png")
    print(f"trained {model.num_timesteps} steps in {minutes:.1f} min -> {out / 'policy.zip'}"
          + (f", {png}" if png else ""))
    return config


# ---------------------------------------------------------------------- eval-policy


@dataclass
class EvalArgs:
    """`sanawm eval-policy`: success, SPL, soft SPL and reward of a trained policy (and baselines)."""

    policy: str = arg("runs/ppo/policy.zip", "the policy.zip written by train-ppo")
    episodes: int = arg(20, "episodes per agent")
    seed: int = arg(10_000, "seed of the first episode (episode i uses seed + i; training used low seeds)")
    backend: str = arg("", "override the training backend: oracle or model", choices=("", "oracle", "model"))
    model: str = arg("", "model backend: tiny, micro or a checkpoint path")
    size: int = arg(0, "override the frame size (the model backend needs the model's size); frames are resized to "
                       "the policy's input")
    frames_per_step: int = arg(4, "raw frames per step K of the evaluation videos (oracle)")
    scene_seeds: str = arg("", "override the scene pool (e.g. 100-115 for unseen scenes)", metavar="SEEDS")
    max_episode_steps: int = arg(0, "override the episode limit (0: the training one)")
    baselines: bool = arg(False, "also evaluate the random agent and the goal-seeker on the same episodes")
    stochastic: bool = arg(False, "sample the policy's actions instead of taking the most likely one")
    videos: int = arg(2, "write mp4s of the first N episodes of each agent")
    out: str = arg("", "output folder (default: <policy folder>/eval[_<backend>])")
    progress: bool = arg(True, "progress bars")


def make_eval_env(args: EvalArgs, config: dict[str, Any]):
    """The evaluation env: the policy's training env arguments with the overrides of `args`."""
    kw = dict(config.get("env_kwargs") or {"task": "pointnav", "size": 64})
    if args.backend:
        kw["backend"] = args.backend
    if kw.get("backend") == "model":
        kw["model"] = args.model or kw.get("model", "tiny")
    else:
        kw.pop("model", None)
    if args.size:
        kw["size"] = args.size
    kw["frames_per_step"] = args.frames_per_step
    if args.scene_seeds:
        from .common import parse_scene_seeds

        seeds = parse_scene_seeds(args.scene_seeds)
        kw["scene_seeds"] = seeds if isinstance(seeds, int) else list(seeds)
    if args.max_episode_steps:
        kw["max_episode_steps"] = args.max_episode_steps
    return make_env(**kw), kw


def eval_policy(args: EvalArgs) -> dict[str, Any]:
    """Evaluate; prints the table and writes eval.json (+ videos). Returns {"rows": [...], "env_kwargs": ...}."""
    agent = PPOAgent.load(args.policy, deterministic=not args.stochastic)
    config = load_config(args.policy)
    env, kw = make_eval_env(args, config)
    out = Path(args.out) if args.out else Path(args.policy).parent / ("eval" + (f"_{kw['backend']}"
                                                                               if args.backend else ""))
    agents: list[Agent] = [agent]
    if args.baselines:
        agents += [RandomAgent(seed=args.seed, actions=agent.actions), GoalSeeker()]
    rows = []
    for a in agents:
        t0 = time.time()
        row = evaluate(env, a, episodes=args.episodes, seed=args.seed, videos=args.videos, out=out,
                       progress=args.progress)
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
    env.close()
    result = {"policy": str(args.policy), "env_kwargs": kw, "episodes": args.episodes, "seed": args.seed,
              "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    csv_path = Path(args.policy).with_name("progress.csv")
    if args.baselines and csv_path.exists() and csv_path.stat().st_size > 0:  # the curve with the baselines drawn
        result["learning_curve"] = str(plot_learning_curve(csv_path, out / "learning_curve.png",
                                                           baselines={r["agent"]: r for r in rows[1:]}))
    print(f"{kw['task']} on the {kw['backend']} backend" + (f" ({kw['model']})" if kw.get("model") else "") +
          f", {kw['size']}px, {args.episodes} episodes from seed {args.seed}:")
    print_table(rows, ["agent", "success", "spl", "soft_spl", "reward", "steps", "collisions"])
    print(f"-> {out / 'eval.json'}")
    return result


# ---------------------------------------------------------------------- entry points


def build_train_parser(parser=None):
    parser = parser or make_parser("sanawm train-ppo", __doc__, "sanawm train-ppo --steps 200000 --minutes 20 "
                                                                "--num-envs 8 --size 64 --out runs/ppo")
    add_dataclass_args(parser, TrainArgs)
    return parser


def build_eval_parser(parser=None):
    parser = parser or make_parser("sanawm eval-policy", __doc__, "sanawm eval-policy --policy runs/ppo/policy.zip "
                                                                  "--episodes 50 --baselines")
    add_dataclass_args(parser, EvalArgs)
    return parser


def main(argv=None) -> dict[str, Any]:
    """`python -m agents.ppo` trains (same options as `sanawm train-ppo`)."""
    return train(from_namespace(TrainArgs, build_train_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
