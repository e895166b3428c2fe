"""Compiled blocks vs eager: one step of a 1.3B-width Vera MoT slice, and the compile time.

    python bench/compile_step.py [--layers 2] [--frames 3] [--height 30] [--width 52] [--out x.json]

The slice has Wan2.1-1.3B's layer shape (width 1536, 12 heads, FFN 8960, text 4096) and `--layers`
of its 30 layers, random weights, fp32 on the CPU (bf16 where a GPU runs it). One process: eager
steps, then `compile_blocks`, the first compiled step (compile time included), then compiled steps;
the outputs are compared with the eager ones. Times are medians of `--repeats` steps.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=3, help="latent frames")
    parser.add_argument("--height", type=int, default=30, help="latent height")
    parser.add_argument("--width", type=int, default=52, help="latent width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    from vera.media.files import save_json
    from vera.model.compile import compile_blocks
    from vera.model.config import PRESETS
    from vera.model.mot import VeraModel

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = PRESETS["wan2.1-1.3B"].replace(num_layers=args.layers)
    model = VeraModel(config).to(device, dtype).eval()
    shape = (1, 16, args.frames, args.height, args.width)
    latents = [torch.randn(shape, device=device) for _ in range(4)]
    context = torch.randn(1, 512, config.text_dim, device=device)
    timestep = torch.tensor([500.0], device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with torch.no_grad():
            out = model(*latents[:3], timestep, context, latents[3])
        sync()
        return out

    def timed(repeats):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = step()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    step()  # warm-up
    eager_s, eager = timed(args.repeats)
    note = compile_blocks(model, device)
    start = time.perf_counter()
    step()
    first_s = time.perf_counter() - start
    compiled_s, compiled = timed(args.repeats)
    difference = max(float((a.float() - b.float()).abs().max()) for a, b in zip(eager, compiled))
    tokens = 3 * args.frames * (args.height // 2) * (args.width // 2)
    result = dict(device=str(torch.cuda.get_device_name(device) if device.type == "cuda"
                             else platform.processor() or platform.machine()),
                  torch=torch.__version__, dtype=str(dtype).replace("torch.", ""),
                  config=f"1.3B width, {args.layers} of 30 layers", latent=list(shape),
                  joint_tokens=tokens, eager_step_s=round(eager_s, 3),
                  compiled_step_s=round(compiled_s, 3), speedup=round(eager_s / compiled_s, 3),
                  first_compiled_step_s=round(first_s, 1), max_abs_difference=difference,
                  fallback=note, date=time.strftime("%Y-%m-%d"))
    print(result)
    if args.out:
        save_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
