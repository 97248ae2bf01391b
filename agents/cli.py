"""The `sanawm` command: drive a world, roll out headless, train and evaluate PPO, export data, benchmark.

    sanawm drive           keyboard driving in a pygame window (record, fork, replayable logs)
    sanawm rollout         headless rollouts from actions, key strings, trajectories or drive logs -> mp4
    sanawm train-ppo       PPO on SanaWM/PointNav-v0 (SB3) -> policy.zip, progress.csv, learning_curve.png
    sanawm eval-policy     success / SPL of a policy (and the random and goal-seeker baselines) -> eval.json
    sanawm export-dataset  rendered clips + RealEstate10K camera files for training
    sanawm bench           run the benchmark scripts in benchmarks/ and print their tables
    sanawm demo            the `make demo` job: a headless oracle rollout per scene family

`sanawm <command> --help` lists every option with an example.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = ("render_throughput", "env_throughput", "model_forward", "step_latency")
BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"

EXAMPLES = {
    "drive": "sanawm drive --task pointnav --scene indoor --seed 0 --scale 4",
    "rollout": 'sanawm rollout --keys "w-16,a-8,wd-8" --out runs/rollout',
    "train-ppo": "sanawm train-ppo --steps 200000 --minutes 20 --num-envs 8 --size 64 --out runs/ppo",
    "eval-policy": "sanawm eval-policy --policy runs/ppo/policy.zip --episodes 50 --baselines",
    "export-dataset": "sanawm export-dataset --out data/clips --clips 64 --frames 32 --size 128",
    "bench": "sanawm bench env_throughput --size 64 --steps 6 --nums 1,8",
    "demo": "sanawm demo --out demo_out",
}


def _sub(subparsers, name: str, help: str, doc: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help, description=doc.strip(),
                                 epilog=f"example:\n  {EXAMPLES[name]}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from . import drive, ppo, rollout

    parser = argparse.ArgumentParser(prog="sanawm", description=__doc__.strip().split("\n\n")[0],
                                     epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    drive.build_parser(_sub(sub, "drive", "drive a world with the keyboard", drive.__doc__))
    rollout.build_parser(_sub(sub, "rollout", "headless rollout to mp4 / contact sheet / poses", rollout.__doc__))
    ppo.build_train_parser(_sub(sub, "train-ppo", "train PPO on PointNav", ppo.__doc__))
    ppo.build_eval_parser(_sub(sub, "eval-policy", "evaluate a trained policy (success, SPL)", ppo.__doc__))
    p = _sub(sub, "export-dataset", "export rendered clips + camera files (sanawm_env.scenes.export)",
             "Rendered clips (mp4 or PNG) plus RealEstate10K-format camera files, for training the world model.\n\n")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the options of python -m sanawm_env.scenes.export "
                                                         "(--out is required; see `sanawm export-dataset --out X -h`)")
    p = _sub(sub, "bench", "run the benchmark scripts and print their tables",
             "Run the scripts of benchmarks/ (each prints a table and writes JSON under benchmarks/results/).\n\n")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {list(BENCHMARKS)})")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p = _sub(sub, "demo", "the make-demo job: an oracle rollout per scene family", "The `make demo` job.\n\n")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of python -m agents.demo (--out, --frames, "
                                                         "--size, --seed)")
    return parser


def bench(names: list[str], passthrough: list[str]) -> int:
    """Run benchmark scripts one after the other with `passthrough` options; returns the number that failed."""
    if not BENCH_DIR.is_dir():
        raise SystemExit(f"no benchmarks/ folder at {BENCH_DIR}: the benchmarks ship with the source checkout")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    failed = []
    for name in names or BENCHMARKS:
        cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), *passthrough]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd, cwd=BENCH_DIR.parent)
        print(f"== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return len(failed)


def _delegate(command: str, argv: list[str]) -> int:
    """`sanawm export-dataset` -> sanawm_env.scenes.export.main, `sanawm demo` -> agents.demo.main."""
    if {"-h", "--help"} & set(argv):
        print(f"sanawm {command}: the options below (shown with the module's own name).\nexample:\n  "
              f"{EXAMPLES[command]}\n")
    if command == "export-dataset":
        from sanawm_env.scenes.export import main as run
    else:
        from .demo import main as run
    run(argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["export-dataset"], ["demo"]):  # thin wrappers: their own parsers take every option
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    if argv[:1] == ["bench"]:  # options after the names go to the scripts
        known, rest = parser.parse_known_args(argv)
        if known.list:
            print("\n".join(BENCHMARKS))
            return 0
        return min(bench(known.names, rest), 1)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .common import from_namespace

    try:
        if args.command == "drive":
            from .drive import DriveArgs, drive

            drive(from_namespace(DriveArgs, args))
        elif args.command == "rollout":
            from .rollout import RolloutArgs, run

            run(from_namespace(RolloutArgs, args))
        elif args.command == "train-ppo":
            from .ppo import TrainArgs, train

            train(from_namespace(TrainArgs, args))
        elif args.command == "eval-policy":
            from .ppo import EvalArgs, eval_policy

            eval_policy(from_namespace(EvalArgs, args))
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"sanawm {args.command}: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
