"""Release copies of trained DiTs: half-precision safetensors with the metadata (config) kept.

    python -m model.train.pack OUT_DIR RUN_DIR [RUN_DIR ...]     # RUN_DIR/dit.safetensors -> OUT_DIR/<run>.safetensors

Why: the EMA weights are saved in fp32; in fp16 the tiny DiT is half the size (the shipped pair must stay under
40 MB, and device runs return at most 16 MB per file). `load_checkpoint` casts back to the model's dtype on load.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file


def pack(src: str | Path, dst: str | Path) -> Path:
    """src safetensors -> dst with floating tensors in fp16 and the same metadata."""
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(dst), metadata=meta)
    return Path(dst)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit("usage: python -m model.train.pack OUT_DIR RUN_DIR [RUN_DIR ...]")
    out = Path(argv[0])
    for run in map(Path, argv[1:]):
        if (run / "dit.safetensors").exists():
            print(f"packed {pack(run / 'dit.safetensors', out / f'{run.name}.safetensors')}")
        else:
            print(f"skipped {run}: no dit.safetensors")


if __name__ == "__main__":
    main()
