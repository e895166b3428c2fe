"""GPU checks (run by bench/gpu_check.sh when a device is lent; none has been so far).

    python bench/gpu_step.py attention          # xformers vs SDPA vs naive (and ComfyUI's) in bf16
    python bench/gpu_step.py step --weights bf16|fp8 [--swap-layers N] [--batch-cfg on|off]

`step`: one denoising step of Vera-1.3B (random full-size weights, made on the GPU in their dtype)
at 49 frames of 832x480 (3 x 20,280 joint tokens), timed after a warm-up, with the peak VRAM, and
the planner's estimate beside it. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

LATENT = (1, 16, 13, 60, 104)  # 49 frames of 832x480


def attention_check() -> dict:
    from vera.attention import attention, xformers_available

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 3 * 4096, 12, 128, device="cuda", dtype=torch.bfloat16, generator=g)
               for _ in range(3))
    reference = attention(q, k, v, "naive").float()
    out = {"sdpa": float((attention(q, k, v, "sdpa").float() - reference).abs().max())}
    if xformers_available():
        out["xformers"] = float((attention(q, k, v, "xformers").float() - reference).abs().max())
    try:
        import comfy.ldm.modules.attention as comfy_attention

        got = comfy_attention.optimized_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                  v.transpose(1, 2), 12, skip_reshape=True,
                                                  skip_output_reshape=True).transpose(1, 2)
        out["comfyui"] = float((got.float() - reference).abs().max())
    except ImportError:
        out["comfyui"] = "ComfyUI not importable (set PYTHONPATH to a ComfyUI checkout)"
    out["tolerance"] = 0.02  # bf16 inputs, differences are rounding
    return out


def step(weights: str, swap_layers: int, batch_cfg: str) -> dict:
    from vera import plan
    from vera.blockswap import BlockSwap
    from vera.config import PRESETS
    from vera.fp8 import fp8_shells
    from vera.model import VeraModel
    from vera.sampling import guided_velocity

    config = PRESETS["wan2.1-1.3B"]
    with torch.device("meta"):
        model = VeraModel(config).to(torch.bfloat16)
        if weights == "fp8":
            fp8_shells(model)
    where = "cpu" if swap_layers else "cuda"
    model = model.to_empty(device=where).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.dtype == torch.float8_e4m3fn:
                tensor.copy_(torch.randn(tensor.shape, device=where).to(tensor.dtype))
            elif tensor.is_floating_point():
                tensor.normal_(0, 0.02) if tensor.ndim else tensor.fill_(0.002)
    if swap_layers:
        BlockSwap(model, swap_layers, "cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    lat = [torch.randn(LATENT, device="cuda", generator=g) for _ in range(4)]
    ctx = torch.randn(1, 512, 4096, device="cuda", generator=g)
    t = torch.tensor([500.0], device="cuda")
    batched = batch_cfg == "on"
    run = lambda: guided_velocity(model, lat[:3], t, ctx, ctx, lat[3], None, 5.0, batched)
    with torch.no_grad():
        run()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    made = plan.make_plan(config, 49, 480, 832, weights, 2)
    return dict(weights=weights, swap_layers=swap_layers, batch_cfg=batch_cfg, step_s=seconds,
                peak_vram_gb=torch.cuda.max_memory_allocated() / 2**30,
                planned_gb=made.sampling_need(batched, swap_layers) / 2**30,
                device=torch.cuda.get_device_name(), torch=torch.__version__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("attention", "step"))
    parser.add_argument("--weights", choices=("bf16", "fp8"), default="bf16")
    parser.add_argument("--swap-layers", type=int, default=0)
    parser.add_argument("--batch-cfg", choices=("on", "off"), default="on")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "needs a CUDA device"}))
        return 2
    result = attention_check() if args.what == "attention" else step(args.weights, args.swap_layers,
                                                                       args.batch_cfg)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
