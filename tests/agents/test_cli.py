"""The `sanawm` command: --help with an example on every subcommand, export-dataset and bench pass-through."""

import json

import pytest

from agents.cli import BENCHMARKS
from agents.cli import main as cli

SUBCOMMANDS = ["drive", "rollout", "train-ppo", "eval-policy", "export-dataset", "bench", "demo"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli([command, "--help"] if command != "export-dataset" else [command, "--out", "x", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and ("usage:" in text)


def test_top_level_help_lists_the_commands(capsys):
    assert cli([]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in SUBCOMMANDS)


def test_export_dataset_wraps_the_exporter(tmp_path):
    cli(["export-dataset", "--out", str(tmp_path), "--clips", "1", "--frames", "4", "--size", "16", "--families",
         "indoor", "--no-compile", "--supersample", "1"])
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index["clips"]) == 1


def test_bench_lists_and_passes_options_through(tmp_path, capsys):
    assert cli(["bench", "--list"]) == 0
    assert capsys.readouterr().out.split() == list(BENCHMARKS)
    with pytest.raises(SystemExit, match="unknown benchmark"):
        cli(["bench", "no_such_bench"])


def test_bench_runs_a_script_and_prints_its_table(tmp_path, capfd):
    rc = cli(["bench", "model_forward", "--presets", "micro", "--repeats", "1", "--out", str(tmp_path)])
    out = capfd.readouterr().out
    assert rc == 0 and "model_forward: ok" in out and "micro" in out  # the script's own table
    assert list(tmp_path.glob("*.json"))
