"""Blend a fine-tuned VAE decoder with the one it started from (a weight-space interpolation, "model soup").

    python -m model.train.soup --base model/weights/tiny_vae.safetensors --tuned runs/vae_dec/vae.safetensors \
        --alpha 0.5 --out runs/vae_soup/vae.safetensors

Why: a decoder fine-tuned for sharp motion (`vae_train --freeze-encoder --time-weight`) draws the DiT's uncertain
latents far from the oracle at long horizons, where the blurrier original scores better; both start from the same
weights, so points between them are decoders too, and one can trade the two on a tuning split. Only decoder tensors
are blended; everything else (the encoder, the latent statistics) must be identical in both files, so a DiT trained
on the base VAE's latents works with the result.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..vae import CausalVAE
from .latents import load_vae, save_vae


def soup_decoder(base: CausalVAE, tuned: CausalVAE, alpha: float) -> CausalVAE:
    """A new VAE: decoder = alpha * tuned + (1 - alpha) * base, the rest taken from base (must equal tuned's)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a, b = base.state_dict(), tuned.state_dict()
    if a.keys() != b.keys():
        raise ValueError(f"the two VAEs have different layouts: {sorted(a.keys() ^ b.keys())[:4]}")
    shared = [k for k in a if not k.startswith("decoder.") and not torch.equal(a[k], b[k])]
    if shared:
        raise ValueError(f"only decoders may differ; these differ too: {shared[:4]} (was the encoder frozen?)")
    out = CausalVAE(base.config)
    out.load_state_dict({k: torch.lerp(a[k], b[k], alpha) if k.startswith("decoder.") else a[k] for k in a})
    return out.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.train.soup", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the VAE the decoder fine-tune started from")
    p.add_argument("--tuned", required=True, help="the decoder fine-tune (vae_train --freeze-encoder)")
    p.add_argument("--alpha", type=float, required=True, help="weight of the fine-tuned decoder, 0..1")
    p.add_argument("--out", required=True, help="output safetensors (a .json with the recipe goes beside it)")
    a = p.parse_args(argv)
    base = load_vae(a.base)
    vae = soup_decoder(base, load_vae(a.tuned, base.preset), a.alpha)
    out = save_vae(vae, a.out, base.preset, {"soup": json.dumps({"base": a.base, "tuned": a.tuned,
                                                                 "alpha": a.alpha})})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
