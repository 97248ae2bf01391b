"""Every script in examples/ runs end to end with a tiny budget (in-process, outputs in a temporary folder)."""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUDGETS = {
    "quickstart.py": ["3"],
    "scripted_agents.py": ["--episodes", "1", "--size", "32", "--max-steps", "15"],
    "goal_seeker_video.py": ["--size", "32", "--max-steps", "8", "--out", "{out}"],
    "key_string_rollout.py": ["w-4,a+left-4", "--size", "32", "--out", "{out}"],
    "fork_and_branch.py": ["--steps", "2"],
    "train_ppo.py": ["--steps", "64", "--num-envs", "2", "--episodes", "1", "--episode-steps", "10",
                     "--scene-seeds", "1", "--out", "{out}/ppo"],
    "model_backend.py": ["--steps", "2", "--out", "{out}"],
}


def test_every_example_has_a_budget():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(BUDGETS)


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_example_runs(name, tmp_path, monkeypatch, capsys):
    argv = [a.format(out=tmp_path) for a in BUDGETS[name]]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert capsys.readouterr().out.strip()
