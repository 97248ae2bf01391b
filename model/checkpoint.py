"""Checkpoints: the official SANA-WM weights and our own, loaded strictly and without unpickling objects.

Accepted sources:
- safetensors in the official key layout (`Efficient-Large-Model/SANA-WM_bidirectional`, dit/*.safetensors);
- the streaming release's `model.pt` (a training state: weights under `generator`, keys prefixed `model.`),
  read with `torch.load(weights_only=True)`, which refuses arbitrary objects;
- a diffusers `SanaWMTransformer3DModel` folder (two renamed keys, two buffers it does not have);
- our own safetensors, which carry the model config in their metadata.
A missing, unexpected or misshaped key raises CheckpointError naming every such key.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import WorldModelConfig, get_config
from .transformer import SanaWMTransformer, build_model

FORMAT = "sanawm-v1"
# diffusers names -> ours (NVlabs). Everything else is identical.
DIFFUSERS_RENAMES = {"t_embedder.linear_1.": "t_embedder.mlp.0.", "t_embedder.linear_2.": "t_embedder.mlp.2."}
# Buffers that sources may lack; ours keep their construction values (the null caption, a vestigial table).
OPTIONAL_BUFFERS = ("pos_embed", "y_embedder.y_embedding")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message lists the offending keys."""


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata from a safetensors file, a `.pt`/`.pth`/`.bin` file, or a diffusers folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("transformer/*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: expected *.safetensors in the folder (a diffusers model), found none")
        sd, meta = {}, {}
        for f in files:
            part, meta = read_state_dict(f)
            sd.update(part)
        return sd, meta
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: never fall back to full unpickling
        raise CheckpointError(f"{path}: refused to load (only plain tensors are accepted; weights_only=True): "
                              f"{type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and "generator" in obj:   # the streaming release's training state
        obj = obj["generator"]
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of names to tensors, got {type(obj).__name__}")
    return dict(obj), {}


def to_official_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a leading `model.` (streaming release) and rename diffusers keys to the official layout."""
    out = {}
    for k, v in sd.items():
        if k.startswith("model."):
            k = k[len("model."):]
        for theirs, ours in DIFFUSERS_RENAMES.items():
            if k.startswith(theirs):
                k = ours + k[len(theirs):]
        out[k] = v
    return out


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], optional: tuple[str, ...] = OPTIONAL_BUFFERS,
              source: str = "checkpoint") -> None:
    """Strict load: every model key must be present (but `optional`) with the same shape, and nothing extra."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and k not in optional)
    unexpected = sorted(k for k in sd if k not in own)
    misshaped = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape))
    if missing or unexpected or misshaped:
        parts = [f"{name} ({len(keys)}): {', '.join(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)) if keys]
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    with torch.no_grad():
        for k, v in own.items():
            if k in sd:
                v.copy_(sd[k].to(dtype=v.dtype))


def load_official(path: str | Path, cfg: WorldModelConfig | str = "sana-wm-1600m-720p",
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> SanaWMTransformer:
    """Build the (published) architecture and load official weights: safetensors, model.pt or a diffusers folder."""
    cfg = get_config(cfg) if isinstance(cfg, str) else cfg
    sd, _ = read_state_dict(path)
    model = build_model(cfg, device=device, dtype=dtype)
    load_into(model, to_official_keys(sd), source=str(path))
    return model


def save_checkpoint(model: SanaWMTransformer, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Our own checkpoint: safetensors with the model config (and any extra string metadata) in its header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "kind": "dit", "config": model.cfg.to_json(), **(metadata or {})}
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata=meta)
    return path


def read_config(path: str | Path) -> WorldModelConfig:
    """The model config stored in one of our checkpoints."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: not a sanawm checkpoint (metadata format {meta.get('format')!r}); "
                              "use load_official() for published weights")
    return WorldModelConfig.from_json(meta["config"])


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> SanaWMTransformer:
    """Rebuild a model from one of our checkpoints (config from the metadata, weights strictly)."""
    cfg = read_config(path)
    sd, _ = read_state_dict(path)
    model = build_model(cfg, device=device, dtype=dtype)
    load_into(model, sd, optional=(), source=str(path))
    return model


def metadata(path: str | Path) -> dict:
    """The header metadata of a safetensors file, JSON values decoded where they parse."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out
