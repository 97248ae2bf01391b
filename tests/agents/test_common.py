"""Key strings and keymaps, scene seed pools, the discrete navigation set, image resizing, the Args parsers."""

import numpy as np
import pytest

from agents.common import (
    KEYMAPS,
    NavActionSet,
    key_string_actions,
    keymap_bindings,
    parse_key_string,
    parse_scene_seeds,
    resize_rgb,
)
from sanawm_env.actions import KEYBOARD


def test_our_keymap_is_the_env_keyboard():
    assert keymap_bindings("ours") == KEYBOARD


def test_key_strings_convert_frames_to_steps_in_both_keymaps():
    segs = parse_key_string("w-16,a-8,wd-5,_-4,w+left-4,right-1", frames_per_step=4)
    assert [s.keys for s in segs] == [("w",), ("a",), ("w", "d"), (), ("w", "left"), ("right",)]
    assert [s.steps for s in segs] == [4, 2, 2, 1, 1, 1]  # ceil(frames / K)
    ours = key_string_actions("w-4,a-4,d-4", frames_per_step=4)
    sana = key_string_actions("w-4,a-4,d-4,j-4,i-4", frames_per_step=4, keymap="sana-wm")
    forward, strafe_left, strafe_right = ours
    assert forward[2] == 1 and strafe_left[0] == -1 and strafe_right[0] == 1
    assert sana[1][4] == -1 and sana[2][4] == 1   # SANA-WM: a/d turn (yaw)
    assert sana[3][0] == -1 and sana[4][3] == 1   # j strafes left, i looks up
    assert set(KEYMAPS["sana-wm"]) == set("wsadijkl")


@pytest.mark.parametrize("bad, says", [("w16", "<keys>-<frames>"), ("x-4", "not in the 'ours' keymap"),
                                       ("w-0", "at least 1 frame"), ("", "holds no segment")])
def test_bad_key_strings_say_what_was_expected(bad, says):
    with pytest.raises(ValueError, match=says):
        key_string_actions(bad, 4)


def test_scene_seed_pools():
    assert parse_scene_seeds("16") == 16
    assert parse_scene_seeds("100-102") == (100, 101, 102)
    assert parse_scene_seeds("1,5") == (1, 5)
    assert parse_scene_seeds("") is None
    with pytest.raises(ValueError, match="run upward"):
        parse_scene_seeds("5-1")


def test_nav_action_set_and_its_errors():
    s = NavActionSet("stop,forward,left,right")
    assert s.n == 4 and s.table[s.index("forward")][2] == 1 and s.table[s.index("left")][4] == -1
    with pytest.raises(ValueError, match="distinct names"):
        NavActionSet("forward,jump")


def test_resize_rgb_keeps_dtype_and_constant_images():
    img = np.full((2, 32, 32, 3), 77, np.uint8)
    up, down = resize_rgb(img, (64, 64)), resize_rgb(img, (16, 16))
    assert up.shape == (2, 64, 64, 3) and down.shape == (2, 16, 16, 3) and up.dtype == np.uint8
    assert (up == 77).all() and (down == 77).all()
    assert resize_rgb(img, (32, 32)) is img
