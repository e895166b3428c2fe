"""Block swap on the CPU: outputs against the all-resident model and the step time with and without.

    python bench/blockswap_cpu.py [--layers 6] [--swap 3] [--repeats 5]

A model of Wan2.1-1.3B's width (dim 1536, ffn 8960) with few layers and random weights runs one
forward at 2 x 24 x 40 latent (960 tokens per branch) in float32. Timings alternate between the
plain model and the same model under `BlockSwap` (so drift in the machine's speed hits both);
the medians are compared. On the CPU a swapped layer's "copy" is the tensor itself, so this shows
what the schedule's own bookkeeping costs on the hot path; the copies themselves need a GPU
(bench/gpu_step.py). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from vera.model.blockswap import BlockSwap
    from vera.model.config import VeraConfig
    from vera.model.mot import VeraModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--swap", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = VeraConfig(dim=1536, num_heads=12, ffn_dim=8960, num_layers=args.layers)
    model = VeraModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    inputs = [torch.randn(1, 16, 2, 24, 40) for _ in range(4)]
    context, t = torch.randn(1, 512, config.text_dim), torch.tensor([500.0])

    def forward():
        start = time.perf_counter()
        with torch.no_grad():
            out = model(*inputs[:3], t, context, inputs[3])
        return time.perf_counter() - start, out

    forward()  # warm-up
    plain, swapped, difference = [], [], 0.0
    hook = None
    for _ in range(args.repeats):
        model.layer_hook = None
        seconds, reference = forward()
        plain.append(seconds)
        hook = hook or BlockSwap(model, args.swap, "cpu")
        model.layer_hook = hook
        seconds, out = forward()
        swapped.append(seconds)
        difference = max(difference, *(float((a - b).abs().max())
                                        for a, b in zip(reference, out)))
    moves_per_forward = sum(hook.moves.values()) / args.repeats
    result = dict(device="cpu", threads=torch.get_num_threads(), layers=args.layers,
                  swapped=args.swap, plain_s=round(statistics.median(plain), 3),
                  swap_s=round(statistics.median(swapped), 3),
                  ratio=round(statistics.median(swapped) / statistics.median(plain), 3),
                  max_abs_difference=difference, moves_per_forward=moves_per_forward)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
