"""What an unmerged LoRA costs per step, against the same LoRA merged, on a 1.3B-width MoT slice.

    python bench/lora_step.py [--layers 2] [--rank 32] [--out x.json]

A Vera MoT slice with Wan2.1-1.3B's layer shape (width 1536, FFN 8960, text 4096) and `--layers`
of its 30 layers, random weights, fp32 on the CPU; a random rank-R Wan LoRA (peft names) on every
block Linear (self and cross attention q, k, v, o; FFN in and out), applied to all three branches.
Medians of `--repeats` unguided steps: no LoRA, unmerged (forward hooks), merged; the largest
difference between unmerged and merged; the LoRA file's size and what attaching it added.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    from vera.checkpoints.lora import LoraSpec, read_lora
    from vera.checkpoints.safetensors_io import atomic_save
    from vera.media.files import save_json
    from vera.model import lora
    from vera.model.config import PRESETS
    from vera.model.mot import VeraModel

    torch.manual_seed(0)
    config = PRESETS["wan2.1-1.3B"].replace(num_layers=args.layers)
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in range(args.layers):
        for name in ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q",
                     "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"):
            out_f = config.ffn_dim if name == "ffn.0" else config.dim
            in_f = config.ffn_dim if name == "ffn.2" else config.dim
            key = f"diffusion_model.blocks.{layer}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(args.rank, in_f, generator=g) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(out_f, args.rank, generator=g) * 0.01
    folder = Path(tempfile.mkdtemp())
    path = atomic_save(tensors, folder / "lora.safetensors")
    file_bytes = path.stat().st_size
    latents = [torch.randn(1, 16, 3, 30, 52) for _ in range(4)]
    context = torch.randn(1, 512, config.text_dim)
    timestep = torch.tensor([500.0])

    def timed(model):
        def step():
            with torch.no_grad():
                return model(*latents[:3], timestep, context, latents[3])
        step()  # warm-up
        times, out = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = step()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    model = VeraModel(config).eval()
    plain_s, _ = timed(model)
    patches, report = read_lora(LoraSpec(path), model)
    handle = lora.attach(model, patches)
    held = handle.held_bytes()
    unmerged_s, unmerged = timed(model)
    handle.remove()
    lora.merge(model, patches)
    merged_s, merged = timed(model)
    difference = max(float((a - b).abs().max()) for a, b in zip(unmerged, merged))
    result = dict(config=f"1.3B width, {args.layers} of 30 layers, fp32, CPU", rank=args.rank,
                  lora=report.line(), file_bytes=file_bytes, attached_bytes=held,
                  no_lora_step_s=round(plain_s, 3), unmerged_step_s=round(unmerged_s, 3),
                  merged_step_s=round(merged_s, 3),
                  unmerged_over_merged=round(unmerged_s / merged_s, 3),
                  max_abs_difference=difference, torch=torch.__version__,
                  date=time.strftime("%Y-%m-%d"))
    print(result)
    if args.out:
        save_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
