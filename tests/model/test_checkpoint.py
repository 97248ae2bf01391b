"""Checkpoints: official layouts, the streaming release's model.pt, our own files, strict key errors, no pickles."""

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_into,
    load_official,
    read_config,
    read_state_dict,
    save_checkpoint,
)
from model.config import get_config
from model.transformer import build_model


@pytest.fixture
def micro():
    torch.manual_seed(0)
    model = build_model(get_config("micro"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_safetensors_layout_loads(tmp_path, micro):
    path = tmp_path / "dit.safetensors"
    save_file({k: v.contiguous() for k, v in micro.state_dict().items()}, str(path))
    assert _same(load_official(path, "micro"), micro)


def test_streaming_model_pt_is_unwrapped_and_prefix_stripped(tmp_path, micro):
    path = tmp_path / "model.pt"
    torch.save({"generator": {f"model.{k}": v for k, v in micro.state_dict().items()},
                "discriminator": {"w": torch.zeros(2)}, "step": torch.tensor(7)}, path)
    assert _same(load_official(path, "micro"), micro)


def test_diffusers_folder_loads_with_renamed_keys(tmp_path, micro):
    folder = tmp_path / "transformer"
    folder.mkdir()
    sd = {k.replace("t_embedder.mlp.0.", "t_embedder.linear_1.").replace("t_embedder.mlp.2.", "t_embedder.linear_2."): v
          for k, v in micro.state_dict().items() if k not in ("pos_embed", "y_embedder.y_embedding")}
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    loaded = load_official(folder, "micro")
    theirs = {k: v for k, v in loaded.state_dict().items() if k not in ("pos_embed", "y_embedder.y_embedding")}
    assert all(torch.equal(v, micro.state_dict()[k]) for k, v in theirs.items())


def test_own_checkpoint_round_trip_with_config(tmp_path, micro):
    path = save_checkpoint(micro, tmp_path / "tiny.safetensors", {"steps": "12"})
    assert read_config(path) == micro.cfg
    loaded = load_checkpoint(path)
    assert loaded.cfg == micro.cfg and _same(loaded, micro)
    cfg = micro.cfg
    lh, lw = cfg.latent_hw
    x = torch.randn(1, cfg.in_channels, 2, lh, lw)
    ts = torch.tensor([[0.0, 500.0]])
    with torch.no_grad():
        assert torch.equal(loaded(x, ts), micro(x, ts))


def test_key_errors_list_every_missing_unexpected_and_misshaped_key(micro):
    sd = dict(micro.state_dict())
    del sd["blocks.0.attn.qkv.weight"]
    del sd["final_layer.linear.bias"]
    sd["blocks.0.attn.not_a_weight"] = torch.zeros(3)
    sd["blocks.1.plucker_proj.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError) as e:
        load_into(build_model(get_config("micro")), sd, source="broken.safetensors")
    msg = str(e.value)
    for key in ("blocks.0.attn.qkv.weight", "final_layer.linear.bias", "blocks.0.attn.not_a_weight",
                "blocks.1.plucker_proj.weight: checkpoint (5, 5)"):
        assert key in msg
    assert "missing (2)" in msg and "unexpected (1)" in msg and "misshaped (1)" in msg


def test_a_failed_load_leaves_the_model_untouched(micro):
    before = {k: v.clone() for k, v in micro.state_dict().items()}
    sd = {k: torch.zeros_like(v) for k, v in micro.state_dict().items()}
    sd["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError):
        load_into(micro, sd)
    assert all(torch.equal(before[k], v) for k, v in micro.state_dict().items())


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sanawm_pwned_by_checkpoint",))


def test_never_unpickles_arbitrary_objects(tmp_path):
    flag = "/tmp/sanawm_pwned_by_checkpoint"
    if os.path.exists(flag):
        os.remove(flag)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"generator": {"w": _Evil()}}, f)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert not os.path.exists(flag)


def test_missing_file_and_foreign_safetensors_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="not a sanawm checkpoint"):
        load_checkpoint(path)
