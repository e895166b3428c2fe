"""GPU checks (run by bench/gpu_check.sh when a device is lent; none has been so far).

    python bench/gpu_step.py attention          # xformers vs SDPA vs naive (and ComfyUI's) in bf16
    python bench/gpu_step.py step --weights bf16|fp8 [--swap-layers N] [--batch-cfg on|off]
    python bench/gpu_step.py swap-equal --weights bf16|fp8 [--swap-layers N]   (default 20)
    python bench/gpu_step.py speed --weights bf16|fp8   # eager vs compiled vs cached steps
    python bench/gpu_step.py fp8-fast                   # ComfyUI's fp8 matmul vs our FP8Linear

`attention`: ComfyUI's dispatch is compared when `comfy` imports (gpu_check.sh puts a ComfyUI
source on PYTHONPATH); the reason is reported when it does not.
`step`: one denoising step of Vera-1.3B (random full-size weights, made on the GPU in their dtype)
at 49 frames of 832x480 (3 x 20,280 joint tokens), timed after a warm-up, with the peak VRAM, and
the planner's estimate beside it.
`swap-equal`: the same random model on a small input (9 frames of 128x128), all resident and then
with the last N layers block-swapped: the velocities must agree (max abs diff reported).
`speed`: at the size of `step`, a guided step (cond + uncond) eager, then compiled (the first
compiled step's time includes compiling), with the largest difference between the two; then six
sampler steps with the step cache told to skip all it may (threshold 5), timing a computed and a
skipped step (the cache's own cost). Random weights make no claim about how often a trained model
skips: that is measured on vera-tiny (BENCHMARKS.md).
`fp8-fast`: one Wan2.1-1.3B FFN matmul (tokens x 1536 -> 8960) through ComfyUI's fp8 ops with
fp8_optimizations (what `--fast fp8_matrix_mult` turns on: torch._scaled_mm where the GPU has fp8
compute, Ada/Hopper) vs our FP8Linear (dequantise, then a bf16 matmul): times and the difference.
Each prints one JSON line. `--dry-run` runs any of them on the CPU, small (a 4-layer model, short
attention): the code paths only, no numbers worth keeping.
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
SMALL = (1, 16, 3, 16, 16)  # 9 frames of 128x128: every layer runs, in milliseconds
COMFY_BACKENDS = ("pytorch", "xformers", "flash", "sage")  # ComfyUI's GPU attention functions
DEV = "cuda"  # "cpu" with --dry-run, which also shrinks the model and the inputs
DRY = dict(dim=64, num_heads=2, num_layers=4, ffn_dim=128, text_dim=256)


def max_diff(got: torch.Tensor, reference: torch.Tensor) -> float:
    return float((got.float() - reference.float()).abs().max())


def comfy_attention_check(q, k, v, reference) -> dict:
    """ComfyUI's launch-flag dispatch and each GPU attention function it registered, against
    the reference; or why ComfyUI could not be imported."""
    try:
        if DEV == "cpu":  # ComfyUI picks CUDA at import unless told --cpu
            import comfy.cli_args

            comfy.cli_args.args.cpu = True
        import comfy.ldm.modules.attention as comfy_attention
    except ImportError as e:
        if e.name == "comfy":
            return {"comfyui": "skipped: `comfy` is not importable (no ComfyUI on PYTHONPATH)"}
        return {"comfyui": f"skipped: ComfyUI found but its import needs `{e.name}` ({e})"}
    except Exception as e:  # noqa: BLE001 - report whatever stopped it
        return {"comfyui": f"skipped: importing ComfyUI's attention failed: {e!r}"}
    heads = q.shape[2]
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # ComfyUI's [B, H, L, D]

    def run(function) -> float:
        out = function(qh, kh, vh, heads, skip_reshape=True, skip_output_reshape=True)
        return max_diff(out.transpose(1, 2), reference)

    dispatch = comfy_attention.optimized_attention
    out = {"comfyui_source": str(Path(comfy_attention.__file__).parents[3]),
           "comfyui_dispatch": getattr(dispatch, "__name__", repr(dispatch)),
           "comfyui": run(dispatch)}
    registered = getattr(comfy_attention, "REGISTERED_ATTENTION_FUNCTIONS", {})
    for name in COMFY_BACKENDS:
        if name in registered:
            try:
                out[f"comfyui_{name}"] = run(registered[name])
            except Exception as e:  # noqa: BLE001 - one backend failing is a result too
                out[f"comfyui_{name}"] = f"failed: {e!r}"
    return out


def attention_check() -> dict:
    from vera.model.attention import attention, xformers_available

    g = torch.Generator(device=DEV).manual_seed(0)
    shape = (2, 3 * 4096, 12, 128) if DEV == "cuda" else (1, 256, 2, 32)
    q, k, v = (torch.randn(shape, device=DEV, dtype=torch.bfloat16, generator=g)
               for _ in range(3))
    reference = attention(q, k, v, "naive").float()
    out = {"check": "attention", "sdpa": max_diff(attention(q, k, v, "sdpa"), reference)}
    if xformers_available():
        out["xformers"] = max_diff(attention(q, k, v, "xformers"), reference)
    else:
        out["xformers"] = "skipped: xformers not installed or its kernels do not load"
    out.update(comfy_attention_check(q, k, v, reference))
    out["tolerance"] = 0.02  # bf16 inputs, differences are rounding
    numbers = [value for key, value in out.items()
               if key != "tolerance" and isinstance(value, float)]
    out["ok"] = all(value <= out["tolerance"] for value in numbers)
    out["device"] = device_name()
    return out


def random_model(weights: str):
    """Vera-1.3B with random full-size weights in `weights` (bf16, or fp8 block Linears), made
    straight on the GPU (fast; block swap then moves its layers to pinned host memory)."""
    from vera.model.config import PRESETS
    from vera.model.fp8 import fp8_shells
    from vera.model.mot import VeraModel

    config = PRESETS["wan2.1-1.3B"]
    if DEV == "cpu":
        config = config.replace(**DRY)
    with torch.device("meta"):
        model = VeraModel(config).to(torch.bfloat16)
        if weights == "fp8":
            fp8_shells(model)
    model = model.to_empty(device=DEV).eval()
    g = torch.Generator(device=DEV).manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.dtype == torch.float8_e4m3fn:
                tensor.copy_(torch.randn(tensor.shape, device=DEV, generator=g).to(tensor.dtype))
            elif tensor.is_floating_point():
                if tensor.ndim:
                    tensor.normal_(0, 0.02, generator=g)
                else:
                    tensor.fill_(0.002)  # fp8 scales
    return model, config


def inputs(shape, seed: int = 0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    if DEV == "cpu":
        shape = SMALL
    lat = [torch.randn(shape, device=DEV, generator=g) for _ in range(4)]
    text = 4096 if DEV == "cuda" else DRY["text_dim"]
    ctx, neg = (torch.randn(1, 512, text, device=DEV, generator=g) for _ in range(2))
    return lat, ctx, neg, torch.tensor([500.0], device=DEV)


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def device_name() -> str:
    return torch.cuda.get_device_name() if DEV == "cuda" else "cpu (dry run)"


def step(weights: str, swap_layers: int, batch_cfg: str) -> dict:
    from vera.model.blockswap import BlockSwap
    from vera.sampling import plan
    from vera.sampling.sampler import guided_velocity

    model, config = random_model(weights)
    if swap_layers:
        BlockSwap(model, swap_layers, DEV)
    if DEV == "cuda":
        torch.cuda.empty_cache()
    lat, ctx, neg, t = inputs(LATENT)
    batched = batch_cfg == "on"
    run = lambda: guided_velocity(model, lat[:3], t, ctx, neg, lat[3], None, 5.0, batched)
    with torch.no_grad():
        run()
        sync()
        if DEV == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        run()
        sync()
    seconds = time.perf_counter() - start
    made = plan.make_plan(config, 49, 480, 832, weights, 2)
    return dict(check="step", weights=weights, swap_layers=swap_layers, batch_cfg=batch_cfg,
                step_s=seconds, peak_vram_gb=torch.cuda.max_memory_allocated() / 2**30
                if DEV == "cuda" else None,
                planned_gb=made.sampling_need(batched, swap_layers) / 2**30,
                device=device_name(), torch=torch.__version__)


def swap_equal(weights: str, swap_layers: int) -> dict:
    """Velocities of the all-resident model, then of the same model with block swap (twice: the
    second pass checks the swap state resets between forwards)."""
    from vera.model.blockswap import BlockSwap
    from vera.sampling.sampler import guided_velocity

    model, _ = random_model(weights)
    lat, ctx, neg, t = inputs(SMALL, seed=1)
    run = lambda: [v.float() for v in guided_velocity(model, lat[:3], t, ctx, neg, lat[3], None,
                                                      5.0, True)]
    with torch.no_grad():
        resident = run()
        swap = BlockSwap(model, swap_layers, DEV)
        swapped, again = run(), run()
        sync()
    scale = max(float(r.abs().max()) for r in resident)
    diff = max(max_diff(s, r) for s, r in zip(swapped, resident))
    diff_again = max(max_diff(s, r) for s, r in zip(again, resident))
    tolerance = 1e-2 * scale  # bf16 rounding; the same kernels on the same weights give 0
    finite = all(bool(torch.isfinite(x).all()) for x in (*resident, *swapped, *again))
    return dict(check="swap_equal", weights=weights, swap_layers=swap_layers,
                max_abs_diff=diff, max_abs_diff_second_pass=diff_again, reference_max_abs=scale,
                tolerance=tolerance, moves=sum(swap.moves.values()),
                ok=finite and max(diff, diff_again) <= tolerance,
                device=device_name(), torch=torch.__version__)


def _timed(function, repeats: int = 3) -> float:
    """Median seconds of `repeats` calls after the caller's warm-up."""
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def speed(weights: str) -> dict:
    from vera.model.compile import compile_blocks
    from vera.sampling.sampler import guided_velocity, sample
    from vera.sampling.settings import SamplingSettings

    model, config = random_model(weights)
    if DEV == "cuda":
        torch.cuda.empty_cache()
    lat, ctx, neg, t = inputs(LATENT)
    run = lambda: guided_velocity(model, lat[:3], t, ctx, neg, lat[3], None, 5.0, True)
    with torch.no_grad():
        eager_out = [v.float() for v in run()]
        eager_s = _timed(run)
        note = compile_blocks(model, DEV)
        sync()
        start = time.perf_counter()
        compiled_out = [v.float() for v in run()]
        sync()
        first_s = time.perf_counter() - start
        compiled_s = _timed(run)
    scale = max(float(v.abs().max()) for v in eager_out)
    difference = max(max_diff(c, e) for c, e in zip(compiled_out, eager_out))
    steps = []
    settings = SamplingSettings(steps=6, cfg=5.0, shift=5.0, sampler="euler", batch_cfg="on",
                                cache_method="easycache", cache_threshold=5.0, cache_start=0.0,
                                cache_end=1.0)
    last = [time.perf_counter()]

    def per_step(info):
        sync()
        now = time.perf_counter()
        steps.append(now - last[0])
        last[0] = now

    evaluations = {}
    sample(model, ctx, lat[3], None, neg, settings, callback=per_step, evaluations=evaluations)
    skipped = [s for i, s in enumerate(steps) if 2 <= i < 5]  # 0, 1 and 5 always run
    return dict(check="speed", weights=weights, eager_step_s=eager_s,
                compiled_step_s=compiled_s, compile_speedup=eager_s / compiled_s,
                first_compiled_step_s=first_s, compiled_max_abs_diff=difference,
                reference_max_abs=scale, compile_fallback=note,
                computed_step_s=steps[5], skipped_step_s=max(skipped) if skipped else None,
                evaluations=evaluations, ok=note is not None or difference <= 5e-2 * scale,
                device=device_name(), torch=torch.__version__)


def fp8_fast() -> dict:
    """ComfyUI's fp8 ops (fp8_optimizations) vs our FP8Linear on one FFN matmul."""
    from vera.model.fp8 import FP8Linear

    out = {"check": "fp8_fast", "device": device_name()}
    try:
        if DEV == "cpu":
            import comfy.cli_args

            comfy.cli_args.args.cpu = True
        import comfy.model_management
        import comfy.ops
    except Exception as e:  # noqa: BLE001 - report whatever stopped it
        return {**out, "skipped": f"ComfyUI's ops do not import here: {e!r}"}
    device = torch.device(DEV)
    if not comfy.model_management.supports_fp8_compute(device):
        return {**out, "skipped": "this GPU has no fp8 compute (ComfyUI's supports_fp8_compute)"}
    tokens, dim, hidden = (3 * 20280, 1536, 8960) if DEV == "cuda" else (64, 64, 128)
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(tokens, dim, device=DEV, dtype=torch.bfloat16, generator=g)
    reference = torch.nn.Linear(dim, hidden, device=DEV, dtype=torch.bfloat16)
    ours = FP8Linear.from_linear(reference).to(DEV)
    ops = comfy.ops.pick_operations(torch.float8_e4m3fn, torch.bfloat16, device,
                                    fp8_optimizations=True)
    theirs = ops.Linear(dim, hidden, device=DEV, dtype=torch.float8_e4m3fn)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
        theirs.bias = torch.nn.Parameter(reference.bias.detach().clone(), requires_grad=False)
        if hasattr(theirs, "scale_weight"):
            theirs.scale_weight = torch.nn.Parameter(ours.scale_weight.clone(), requires_grad=False)
        want = ours(x)
        got = theirs(x)
        out.update(ops=type(theirs).__qualname__, ours_s=_timed(lambda: ours(x)),
                   comfyui_fast_s=_timed(lambda: theirs(x)), max_abs_diff=max_diff(got, want),
                   reference_max_abs=float(want.float().abs().max()))
    out["speedup"] = out["ours_s"] / out["comfyui_fast_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("attention", "step", "swap-equal", "speed", "fp8-fast"))
    parser.add_argument("--weights", choices=("bf16", "fp8"), default="bf16")
    parser.add_argument("--swap-layers", type=int, default=None,
                        help="layers block-swapped (default: 0 for step, 20 for swap-equal)")
    parser.add_argument("--batch-cfg", choices=("on", "off"), default="on")
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU, small (code paths only)")
    args = parser.parse_args()
    global DEV
    if args.dry_run:
        DEV = "cpu"
    elif not torch.cuda.is_available():
        print(json.dumps({"check": args.what, "error": "needs a CUDA device"}))
        return 2
    if args.what == "attention":
        result = attention_check()
    elif args.what == "step":
        result = step(args.weights, args.swap_layers or 0, args.batch_cfg)
    elif args.what == "speed":
        result = speed(args.weights)
    elif args.what == "fp8-fast":
        result = fp8_fast()
    else:
        default = 2 if args.dry_run else 20
        result = swap_equal(args.weights, default if args.swap_layers is None else args.swap_layers)
    print(json.dumps(result))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
