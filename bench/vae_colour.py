"""Does a VAE keep colour? Saturated objects and flat colour patches through encode + decode.

    python bench/vae_colour.py VAE_FILE --data runs/vera-tiny/data/test [--out bench/results/x.json]

Three measurements, all on whole 17-frame clips (so every causal chunk of the VAE is measured):
  objects   the held-out split's object-addition edit layers: mean colour inside the true matte,
            ground truth vs reconstruction, per channel, for saturated objects (max - min channel
            of the true colour >= 0.3) and for all objects;
            and, for saturated objects, that error per latent chunk (frame 0 alone, then four
            frames each: how much colour the causal cache loses as the clip goes on);
  psnr      whole-clip reconstruction PSNR of every edit layer in the split (pixels in [0, 1]);
  patches   flat colour squares (64, 24 and 10 pixels) on a grey, slightly noisy background: the
            mean colour inside the square after the round trip.
Prints one JSON object (and writes it with --out).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLOURS = dict(red=(0.85, 0.1, 0.1), green=(0.1, 0.7, 0.2), blue=(0.1, 0.25, 0.85),
               yellow=(0.9, 0.85, 0.1), purple=(0.6, 0.1, 0.7), white=(0.9, 0.9, 0.9))
FRAMES, SIZE = 17, 64


def rounded(values) -> list[float]:
    return [round(float(v), 3) for v in values]


@torch.no_grad()
def patches(codec) -> dict:
    generator = torch.Generator().manual_seed(0)
    found = {}
    for size in (64, 24, 10):
        for name, rgb in COLOURS.items():
            frames = 0.45 + 0.05 * torch.randn(FRAMES, SIZE, SIZE, 3, generator=generator)
            s0 = (SIZE - size) // 2
            frames[:, s0:s0 + size, s0:s0 + size] = torch.tensor(rgb)
            back = codec.decode_frames(codec.encode_frames(frames.clamp(0, 1)))
            inside = back[:, s0:s0 + size, s0:s0 + size].reshape(-1, 3)
            found[f"{name}@{size}"] = rounded(inside.mean(0))
    return found


def latent_chunks(frames: int) -> list[slice]:
    """The frames each latent frame of a Wan VAE covers: frame 0 alone, then groups of four."""
    from vera.frames.geometry import FRAME_STEP

    return [slice(0, 1)] + [slice(t, min(t + FRAME_STEP, frames))
                            for t in range(1, frames, FRAME_STEP)]


def chunk_error(truth: torch.Tensor, back: torch.Tensor, inside: torch.Tensor, frames: slice
                ) -> torch.Tensor:
    """Mean over R, G, B of |mean colour inside the matte| error on `frames` (`[T, H, W, 3]`);
    NaN when the object is outside the frame there."""
    keep = inside[frames]
    return (truth[frames][keep].mean(0) - back[frames][keep].mean(0)).abs().mean()


@torch.no_grad()
def split_measurements(codec, data: Path) -> dict:
    from vera.data.layout import load_manifest, load_sample

    errors, saturated, psnrs, rows, by_chunk = [], [], [], [], []
    for entry in load_manifest(data):
        layers = load_sample(data, entry).float_layers()
        edit = layers["edit"]
        back = codec.decode_frames(codec.encode_frames(edit))
        mse = float(((back - edit) ** 2).mean())
        psnrs.append(10 * math.log10(1 / max(mse, 1e-12)))
        if entry["task"] != "object_addition":
            continue
        inside = layers["alpha"][..., 0] > 0.5
        truth, got = edit[inside].mean(0), back[inside].mean(0)
        error = (truth - got).abs()
        errors.append(error)
        if float(truth.max() - truth.min()) >= 0.3:
            saturated.append(error)
            by_chunk.append(torch.stack([chunk_error(edit, back, inside, frames)
                                         for frames in latent_chunks(edit.shape[0])]))
        rows.append(dict(instruction=entry["instruction"], truth=rounded(truth), vae=rounded(got)))
    mean = lambda xs: rounded(torch.stack(xs).mean(0)) if xs else None
    return dict(objects=dict(count=len(errors), saturated_count=len(saturated),
                             colour_error_saturated=mean(saturated), colour_error_all=mean(errors),
                             saturated_error_by_chunk=rounded(torch.stack(by_chunk).nanmean(0))
                             if by_chunk else None,
                             examples=rows[:12]),
                edit_psnr_db=dict(mean=round(sum(psnrs) / len(psnrs), 2),
                                  min=round(min(psnrs), 2), clips=len(psnrs)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vae", help="a VAE file (vera-tiny's: "
                                     "vera/assets/vera-tiny/vae.safetensors)")
    parser.add_argument("--data", required=True,
                        help="a layered split (e.g. the recipe's test split)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    from vera.encoders.vae import WanCodec, load_vae

    start = time.perf_counter()
    codec = WanCodec(load_vae(args.vae))
    result = dict(vae=str(args.vae), data=str(args.data), date=time.strftime("%Y-%m-%d"),
                  **split_measurements(codec, Path(args.data)), patches=patches(codec),
                  seconds=round(time.perf_counter() - start, 1))
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
