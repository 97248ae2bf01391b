"""Release copies of trained DiTs: half-precision safetensors with the metadata (config) kept.

    python -m model.train.pack OUT_DIR RUN_DIR [RUN_DIR ...]     # RUN_DIR/dit.safetensors -> OUT_DIR/<run>.safetensors
    python -m model.train.pack OUT_DIR RUN_DIR --config-from model/weights/tiny_dit.safetensors

Why: the EMA weights are saved in fp32; in fp16 the tiny DiT is half the size (the shipped pair must stay under
40 MB, and device runs return at most 16 MB per file). `load_checkpoint` casts back to the model's dtype on load.
`--config-from` gives a fine-tune the inference config of the model it will replace: the trainer writes its preset's
config (e.g. three denoising timesteps), while the shipped file carries the knobs chosen on the tuning split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..checkpoint import load_into, metadata, read_config
from ..transformer import build_model

# metadata keys a --config-from reference hands over: the model config and how its training frames were rendered
RELEASE_KEYS = ("config", "render")


def _raw_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def config_changes(src: str | Path, ref: str | Path) -> dict[str, tuple]:
    """Config fields that differ between two checkpoints: name -> (src value, ref value)."""
    a, b = (metadata(p).get("config", {}) for p in (src, ref))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def pack(src: str | Path, dst: str | Path, config_from: str | Path | None = None) -> Path:
    """src safetensors -> dst with floating tensors in fp16 and the same metadata (config and render stamp taken
    from `config_from` when given; the weights must then load strictly under that config, so a reference whose
    architecture differs is refused before anything is written)."""
    meta = _raw_metadata(src)
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    if config_from is not None:
        cfg = read_config(config_from)           # CheckpointError (a ValueError) if it has no config
        try:
            load_into(build_model(cfg), sd, optional=(), source=str(src))
        except ValueError as err:
            raise ValueError(f"--config-from {config_from}: its config does not fit the weights of {src}: "
                             f"{err}") from err
        ref = _raw_metadata(config_from)
        meta.update({k: ref[k] for k in RELEASE_KEYS if k in ref})
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(dst), metadata=meta)
    return Path(dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.train.pack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the packed <run>.safetensors")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders holding dit.safetensors")
    parser.add_argument("--config-from", default=None, help="take config and render stamp from this checkpoint")
    args = parser.parse_args(argv)
    for run in args.runs:
        src = run / "dit.safetensors"
        if not src.exists():
            print(f"skipped {run}: no dit.safetensors")
            continue
        changes = config_changes(src, args.config_from) if args.config_from else {}
        print(f"packed {pack(src, args.out / f'{run.name}.safetensors', args.config_from)}"
              + "".join(f"\n  {k}: {a} -> {b}" for k, (a, b) in changes.items()))


if __name__ == "__main__":
    main()
