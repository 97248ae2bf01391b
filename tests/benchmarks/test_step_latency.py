"""benchmarks/step_latency.py: the CPU rows, and other checkpoints timed in the same rounds (`--against`)."""

from bench_loader import load_benchmark

step_latency = load_benchmark("step_latency")


def test_against_times_another_checkpoint_traced_in_the_same_rounds():
    out = step_latency.bench_cpu_modes("micro", n=4, rounds=2, compile=False, against=("micro",))
    rows = {r["row"]: r for r in out["rows"]}
    assert {"eager", "trace"} <= set(rows) and "compile" not in rows
    assert ("trace_one_pass" in rows) != ("trace_two_pass" in rows)             # the schedule it does not run
    other = rows["trace micro"]
    assert other["trace"] and other["preset"] == "micro" and other["steps"] == 4 and other["batch"] == 1
    assert other["p50_ms"] > 0 and other["threads"] == rows["trace"]["threads"]


def test_labels_name_presets_and_checkpoint_files():
    assert step_latency._label("tiny") == "tiny"
    assert step_latency._label("runs/s19/stage14.safetensors") == "stage14"
