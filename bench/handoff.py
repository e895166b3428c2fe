"""What a linear-light comp changes: Vera's final (eq. 2 on sRGB-encoded values) against the same
layers comped in linear light (source and edit layer decoded from sRGB, eq. 2, encoded back), on
vera-tiny edits of real clips, CPU.

    python bench/handoff.py --out bench/results/handoff_linear_light_<date>.json

For each clip (carphone 176x144, bikes 640x272; 17 frames) and prompt, vera-tiny edits with its
recipe settings; the difference in 8-bit levels (largest over the RGB channels) is reported over
the soft-edge pixels (0 < alpha < 1): largest, 99th percentile and mean, their share of the frame,
and the largest difference where alpha is 0 or 1 (0 expected: only soft edges differ). The test
`tests/test_handoff.py` makes the same comparison on one frame with oiiotool.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = ("add a large red circle moving from left to right",
           "add a small blue square moving diagonally from the top left to the bottom right")
CLIPS = ("carphone_pristine.mp4", "bikes.mp4")


def linear_light_final(source, edit, alpha):
    """uint8 `[T, H, W, 3]` source, float edit `[T, H, W, 3]` and alpha `[T, H, W, 1]` (8-bit
    grid) -> uint8: eq. 2 on linear light, encoded back to sRGB."""
    from vera.frames import layers
    from vera.media.exr import linear_to_srgb, srgb_to_linear

    mixed = (1 - alpha) * srgb_to_linear(source.float() / 255) + alpha * srgb_to_linear(edit)
    return layers.to_uint8(linear_to_srgb(mixed))


def measure(clip: str, prompt: str, bundle) -> dict:
    import torch

    from vera.data.clips import bundled_clip
    from vera.edit import pipeline
    from vera.media.video import read_frames

    frames, _ = read_frames(bundled_clip(clip), 17)
    result = pipeline.edit(bundle, frames, prompt, bundle.defaults, work_size=bundle.work_size)
    linear = linear_light_final(result.source, result.edit_layer, result.alpha)
    difference = (linear.int() - result.final.int()).abs().amax(-1).float()
    alpha = result.alpha[..., 0]
    soft = (alpha > 0) & (alpha < 1)
    hard = ~soft
    values = difference[soft]
    return {"clip": clip, "prompt": prompt, "frames": int(frames.shape[0]),
            "soft_share": float(soft.float().mean()),
            "soft_max": float(values.max()) if values.numel() else 0.0,
            "soft_p99": float(torch.quantile(values, 0.99)) if values.numel() else 0.0,
            "soft_mean": float(values.mean()) if values.numel() else 0.0,
            "hard_max": float(difference[hard].max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from vera.edit.bundle import load_bundle

    bundle = load_bundle("vera-tiny", "fp32", "cpu")
    runs = []
    for clip in CLIPS:
        for prompt in PROMPTS:
            t = time.perf_counter()
            runs.append({**measure(clip, prompt, bundle), "seconds": time.perf_counter() - t})
            print(json.dumps(runs[-1]), flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
              platform.machine(), "model": "vera-tiny", "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
