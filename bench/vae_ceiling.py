"""What the best possible DiT could score through a given VAE: the ceiling the VAE sets.

    python bench/vae_ceiling.py --data runs/vera-tiny/data/test [--vae FILE] [--out x.json]

For every sample of a layered split, the *ground-truth* edit layer and matte go through the VAE
exactly as the model's outputs do (edit: encode + decode; matte: encoded and decoded as grey video,
then put on the 8-bit grid with the alpha cutoff), and are composited over the source with the
pipeline's own `final_composite`. The metrics are the evaluation's
(`vera.frames.metrics.edit_metrics`, the same reference composite and matte). A DiT that predicted
the perfect latents would score this; a trained one scores at most about this. The same is
measured without the VAE (the layers as they are) as a check that the metrics themselves reach
their maximum.
Default VAE and alpha cutoff: vera-tiny's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _score(sample, gt: dict, edit: torch.Tensor, alpha: torch.Tensor, cutoff: float) -> dict:
    from vera.frames import layers, metrics

    alpha = layers.quantize_alpha(alpha, cutoff)
    final = layers.final_composite(sample.source, edit, alpha)
    return metrics.edit_metrics(final, sample.source, alpha, sample.composite, gt["alpha"])


@torch.no_grad()
def ceilings(codec, data: Path, cutoff: float) -> dict:
    """-> {"through_vae": {task: mean metrics}, "without_vae": {...}, "samples": n}"""
    from vera.data.layout import load_manifest, load_sample
    from vera.encoders import vae
    from vera.frames import metrics

    rows = {"through_vae": {}, "without_vae": {}}
    entries = load_manifest(data)
    for entry in entries:
        sample = load_sample(data, entry)
        gt = sample.float_layers()
        edit = codec.decode_frames(codec.encode_frames(gt["edit"]))
        alpha = vae.decode_matte(codec, vae.encode_matte(codec, gt["alpha"]))
        rows["through_vae"].setdefault(sample.task, []).append(
            _score(sample, gt, edit, alpha, cutoff))
        rows["without_vae"].setdefault(sample.task, []).append(
            _score(sample, gt, gt["edit"], gt["alpha"], cutoff))
    summary = {how: {task: dict(count=len(r), **metrics.mean_metrics(r))
                     for task, r in sorted(by_task.items())}
               for how, by_task in rows.items()}
    return dict(summary, samples=len(entries))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a layered split (the recipe's test split)")
    parser.add_argument("--vae", default=None,
                        help="a VAE file (default: vera-tiny's, with its alpha cutoff)")
    parser.add_argument("--alpha-cutoff", type=float, default=None,
                        help="default: vera-tiny's sampling default")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    from vera.checkpoints.weights import TINY_DIR
    from vera.edit.bundle import tiny_defaults
    from vera.encoders.vae import as_codec, load_vae
    from vera.media.files import json_safe, relative_to, save_json

    start = time.perf_counter()
    vae = load_vae(args.vae or TINY_DIR / "vae.safetensors")
    cutoff = tiny_defaults().alpha_cutoff if args.alpha_cutoff is None else args.alpha_cutoff
    result = dict(vae=relative_to(args.vae, REPO) or "vera-tiny",
                  data=relative_to(args.data, REPO), alpha_cutoff=cutoff,
                  date=time.strftime("%Y-%m-%d"),
                  **ceilings(as_codec(vae), Path(args.data), cutoff),
                  seconds=round(time.perf_counter() - start, 1))
    if args.out:
        save_json(args.out, result, indent=1)
    print(json.dumps(json_safe(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
