"""`sanawm rollout`: key strings, action files, trajectories (exact and collision-honest), oracle comparison."""

import json

import numpy as np
import pytest

from agents.cli import main as cli
from agents.common import key_string_actions, make_env
from agents.rollout import anchor_trajectory, resolve_trajectory, run_episode
from agents.scripted import ActionReplay
from sanawm_env.scenes.media import read_video

WORLD = ["--size", "32", "--scene-seeds", "2", "--no-progress"]


def test_key_string_rollout_writes_an_mp4_of_the_right_length(tmp_path):
    cli(["rollout", "--keys", "w-8,a-4,w+right-4", "--frames-per-step", "2", "--out", str(tmp_path), *WORLD])
    steps = 4 + 2 + 2
    video = read_video(tmp_path / "rollout.mp4")
    assert video.shape == (1 + 2 * steps, 32, 32, 3)  # the reset frame, then K frames per step
    assert np.load(tmp_path / "rollout_poses.npy").shape == (1 + 2 * steps, 4, 4)
    assert np.load(tmp_path / "rollout_actions.npy").shape == (steps, 6)
    assert (tmp_path / "rollout_sheet.png").exists()
    assert json.loads((tmp_path / "rollout.json").read_text())["steps"] == steps


def test_actions_file_and_sana_wm_keymap_agree(tmp_path):
    np.save(tmp_path / "a.npy", key_string_actions("a-8", 4, keymap="sana-wm"))  # SANA-WM's a = turn left
    cli(["rollout", "--actions", str(tmp_path / "a.npy"), "--out", str(tmp_path), "--name", "npy", "--frames-npy",
         *WORLD])
    cli(["rollout", "--keys", "left-8", "--out", str(tmp_path), "--name", "keys", "--frames-npy", *WORLD])
    assert np.array_equal(np.load(tmp_path / "npy_frames.npy"), np.load(tmp_path / "keys_frames.npy"))


def test_trajectory_rollout_reproduces_the_poses_and_frames_exactly(tmp_path):
    env = make_env(task="freeroam", size=32, scene_seeds=2)
    ref = run_episode(env, ActionReplay(key_string_actions("w-8,w+right-8", 4)), seed=0, record=True)
    env.close()
    np.save(tmp_path / "cams.npy", ref.poses.astype(np.float64))
    cli(["rollout", "--trajectory", str(tmp_path / "cams.npy"), "--out", str(tmp_path), "--frames-npy", *WORLD])
    assert np.array_equal(np.load(tmp_path / "rollout_poses.npy"), ref.poses)
    assert np.array_equal(np.load(tmp_path / "rollout_frames.npy"), ref.frames)


def test_trajectories_cannot_pass_through_walls():
    env = make_env(task="freeroam", size=32, scene_seeds=2)
    env.reset(seed=0)
    ep = env.unwrapped.get_state().episode
    straight = np.tile(np.eye(4), (81, 1, 1))
    straight[:, 2, 3] = np.linspace(0.0, 40.0, 81)  # 40 m forward: every indoor scene ends before that
    poses, hits = resolve_trajectory(ep.geometry, anchor_trajectory(straight, ep.start))
    assert hits > 0 and ep.geometry.is_free(poses[:, :3, 3]).all()
    travelled = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum()
    assert 0 < travelled < 40.0
    env.close()


def test_compare_oracle_writes_side_by_side_and_psnr(tmp_path):
    cli(["rollout", "--backend", "model", "--model", "micro", "--keys", "w-8", "--compare-oracle", "--out",
         str(tmp_path), *WORLD])
    summary = json.loads((tmp_path / "rollout.json").read_text())
    cmp = summary["compare_oracle"]
    assert len(cmp["psnr"]) == summary["frames"] == 9 and cmp["psnr"][0] is None  # frame 0 is the oracle's own
    assert read_video(tmp_path / "rollout_vs_oracle.mp4").shape == (9, 32, 64, 3)


def test_rollout_errors_name_what_was_expected(tmp_path, capsys):
    with pytest.raises(SystemExit, match="exactly one of"):
        cli(["rollout", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli(["rollout", "--keys", "x-4", "--out", str(tmp_path), *WORLD])
    assert "not in the 'ours' keymap" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--backend model"):
        cli(["rollout", "--keys", "w-4", "--compare-oracle", "--out", str(tmp_path), *WORLD])


def test_start_image_and_intrinsics_reach_the_model(tmp_path):
    from PIL import Image

    from agents.common import load_image

    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)  # 4:3, centre-cropped to 1:1
    Image.fromarray(img).save(tmp_path / "start.png")
    np.save(tmp_path / "k.npy", np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]]))
    cli(["rollout", "--backend", "model", "--model", "micro", "--keys", "w-4", "--image", str(tmp_path / "start.png"),
         "--intrinsics", str(tmp_path / "k.npy"), "--out", str(tmp_path), "--frames-npy", *WORLD])
    frames = np.load(tmp_path / "rollout_frames.npy")
    assert np.array_equal(frames[0], load_image(tmp_path / "start.png", (32, 32))[0])
    with pytest.raises(SystemExit):  # the oracle renders its first frame itself
        cli(["rollout", "--keys", "w-4", "--image", str(tmp_path / "start.png"), "--out", str(tmp_path), *WORLD])
