"""Release copies of trained DiTs: half-precision safetensors with the metadata (config) kept.

    python -m model.train.pack OUT_DIR RUN_DIR [RUN_DIR ...]     # RUN_DIR/dit.safetensors -> OUT_DIR/<run>.safetensors
    python -m model.train.pack OUT_DIR RUN_DIR --config-from model/weights/tiny_dit.safetensors

Why: the EMA weights are saved in fp32; in fp16 the tiny DiT is half the size (the shipped pair must stay under
40 MB, and device runs return at most 16 MB per file). `load_checkpoint` casts back to the model's dtype on load.
`--config-from` gives a fine-tune the inference config of the model it will replace: the trainer writes its preset's
config (e.g. three denoising timesteps), while the shipped file carries the knobs chosen on the tuning split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

# metadata keys a --config-from reference hands over: the model config and how its training frames were rendered
RELEASE_KEYS = ("config", "render")


def _metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def config_changes(src: str | Path, ref: str | Path) -> dict[str, tuple]:
    """Config fields that differ between two checkpoints: name -> (src value, ref value)."""
    a, b = (json.loads(_metadata(p).get("config", "{}")) for p in (src, ref))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def pack(src: str | Path, dst: str | Path, config_from: str | Path | None = None) -> Path:
    """src safetensors -> dst with floating tensors in fp16 and the same metadata (config and render stamp taken
    from `config_from` when given; the result must then still load strictly, so a reference whose architecture
    differs is refused)."""
    meta = _metadata(src)
    if config_from is not None:
        ref = _metadata(config_from)
        missing = [k for k in RELEASE_KEYS if k not in ref]
        if "config" in missing:
            raise ValueError(f"--config-from {config_from}: expected a checkpoint with a 'config' in its metadata, "
                             f"found keys {sorted(ref)}")
        meta.update({k: ref[k] for k in RELEASE_KEYS if k in ref})
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(dst), metadata=meta)
    if config_from is not None:
        from ..checkpoint import load_checkpoint

        try:
            load_checkpoint(dst)
        except Exception as err:
            Path(dst).unlink()
            raise ValueError(f"--config-from {config_from}: its config does not fit the weights of {src}: "
                             f"{err}") from err
    return Path(dst)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    config_from = None
    if "--config-from" in argv:
        i = argv.index("--config-from")
        if i + 1 >= len(argv):
            raise SystemExit("--config-from needs a checkpoint path")
        config_from = argv[i + 1]
        del argv[i:i + 2]
    if len(argv) < 2:
        raise SystemExit("usage: python -m model.train.pack OUT_DIR RUN_DIR [RUN_DIR ...] [--config-from CKPT]")
    out = Path(argv[0])
    for run in map(Path, argv[1:]):
        src = run / "dit.safetensors"
        if not src.exists():
            print(f"skipped {run}: no dit.safetensors")
            continue
        dst = out / f"{run.name}.safetensors"
        changes = config_changes(src, config_from) if config_from else {}
        print(f"packed {pack(src, dst, config_from)}"
              + "".join(f"\n  {k}: {a} -> {b}" for k, (a, b) in changes.items()))


if __name__ == "__main__":
    main()
