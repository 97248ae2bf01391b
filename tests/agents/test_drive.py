"""`sanawm drive` headless (SDL dummy driver, scripted key events) and `sanawm rollout --replay` of its log."""

import json

import numpy as np
import pytest

from agents.cli import main as cli
from agents.drive import DriveSession, parse_script, resolve_bindings
from sanawm_env.scenes.media import read_video

pytest.importorskip("pygame")

# reset (Enter), fork (B), back to the fork (M), record on/off (V), pause / single step (P, N), HUD (H), Shift
SCRIPT = "v,w*6,b,d+left*4,h,m,left shift+w*3,return,p,n,n,p,s*3,v"


def test_drive_log_replays_frame_for_frame(tmp_path):
    out = tmp_path / "drive"
    summary_args = ["drive", "--task", "pointnav", "--size", "32", "--frames-per-step", "2", "--scene-seeds", "2",
                    "--seed", "5", "--out", str(out), "--frames-npy", "--script", SCRIPT, "--max-frames", "50"]
    cli(summary_args)
    (log_path,) = out.glob("drive_*.json")
    log = json.loads(log_path.read_text())
    kinds = [e["type"] for e in log["events"]]
    assert kinds == ["reset", "record-start", "fork", "goto-fork", "reset", "record-stop"]
    steps = 6 + 4 + 3 + 2 + 3  # n, n while paused
    assert len(log["actions"]) == len(log["poses"]) == steps and log["seed"] == 5
    assert log["actions"][10] == [0.0, 0.0, 0.5, 0.0, 0.0, 0.0]  # Shift halves the speed
    recorded = np.load(out / log_path.name.replace(".json", "_frames.npy"))
    assert len(recorded) == log["frames"] == 1 + 2 * steps + 2  # start, K per step, the fork frame, the new episode
    video = read_video(out / log["video"])
    assert video.shape == (len(recorded), 32, 32, 3)

    cli(["rollout", "--replay", str(log_path), "--out", str(tmp_path / "replay"), "--frames-npy", "--no-progress"])
    replayed = np.load(tmp_path / "replay" / "rollout_frames.npy")
    assert np.array_equal(replayed, recorded)
    poses = np.load(out / log_path.name.replace(".json", "_poses.npy"))
    assert poses.shape == (len(recorded), 4, 4)
    assert np.array_equal(np.load(tmp_path / "replay" / "rollout_poses.npy"), poses)
    assert json.loads((tmp_path / "replay" / "rollout.json").read_text())["poses_match"] is True
    assert read_video(tmp_path / "replay" / "rollout.mp4").shape == video.shape


def test_max_frames_ends_a_free_running_session(tmp_path):
    from agents.drive import DriveArgs, drive

    args = DriveArgs(size=32, frames_per_step=1, scene_seeds="2", out=str(tmp_path), script="w*1000",
                     max_frames=12, record=True, keymap="sana-wm")
    summary = drive(args)
    assert 12 <= summary["frames_shown"] <= 13 and summary["recordings"]


def test_session_fork_and_back_restore_the_world():
    s = DriveSession({"task": "freeroam", "size": 32, "frames_per_step": 1, "scene_seeds": 2})
    s.reset(seed=0)
    s.fork()
    first = s.step(np.array([0, 0, 1, 0, 0.5, 0], np.float32))
    s.step(np.array([1, 0, 0, 0, 0, 0], np.float32))
    (back,) = s.goto_fork()
    again = s.step(np.array([0, 0, 1, 0, 0.5, 0], np.float32))
    assert np.array_equal(first[0], again[0]) and back.shape == (32, 32, 3)
    s.close()


def test_bindings_and_script_parsing():
    moves, commands = resolve_bindings("sana-wm", overrides=["fork=f", "forward=up"])
    assert moves["up"] == (2, 1.0) and "w" not in moves and commands["f"] == "fork"
    with pytest.raises(ValueError, match="bound twice"):
        resolve_bindings("ours", overrides=["fork=w"])
    with pytest.raises(ValueError, match="unknown control"):
        resolve_bindings("ours", overrides=["jump=j"])
    assert parse_script("w*3,b,_*2,w+d*1,enter") == [(("w",), 3), (("b",), 0), ((), 2), (("w", "d"), 1),
                                                      (("return",), 0)]


def test_model_backend_session_forks_and_replays_exactly(tmp_path):
    out = tmp_path / "drive"
    cli(["drive", "--backend", "model", "--model", "micro", "--size", "32", "--scene-seeds", "2", "--out", str(out),
         "--frames-npy", "--script", "v,w*2,b,d*2,m,w*2,v"])
    (log_path,) = out.glob("drive_*.json")
    cli(["rollout", "--replay", str(log_path), "--out", str(tmp_path / "replay"), "--frames-npy", "--no-progress"])
    recorded = np.load(out / log_path.name.replace(".json", "_frames.npy"))
    assert len(recorded) == 1 + 4 * 6 + 1  # micro's chunk is 4 frames; the fork frame once more
    assert np.array_equal(np.load(tmp_path / "replay" / "rollout_frames.npy"), recorded)
