"""Memory and time of an edit before it runs: weights, activation peak, VAE decode peak, FLOPs.

    python -m vera plan --model 1.3B --frames 49 --size 832x480 --weight-dtype fp8 --batch-cfg auto
    python -m vera plan --model 14B --frames 481 --window 81 --overlap 24   # a 20 s shot

A shot longer than the window is sampled in context windows (`vera.sampling.windows`): memory is
one window's, FLOPs and time grow with the number of windows.

The activation figures are linear fits to peaks measured on this project's CPU machine
(`bench/activation_peak.py`, BENCHMARKS.md): per-token bytes at two widths (Wan2.1-1.3B and 14B),
interpolated linearly in (dim, ffn_dim) for other sizes. The sampler's `memory_required` in ComfyUI
and `batch_cfg="auto"` use the same `activation_bytes`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..frames.geometry import FRAME_STEP, frame_count_problem, size_problem
from ..model.config import PRESETS, VeraConfig
from ..model.precision import COMPUTE_DTYPES, STORED_DTYPES
from .settings import BATCH_CFG, WAN_DEFAULTS
from .windows import latent_frames, plan_windows

GB = 1024**3
VRAM_SIZES_GB = (8, 12, 16, 24, 48, 80)
TEXT_TOKENS = 512
# Fitted on CPU (bench/activation_peak.py, 2026-11-22): peak bytes of one forward above the
# weights = BASE + tokens * (DIM_BYTES * dim + FFN_BYTES * ffn_dim), tokens = batch x joint tokens
# (3 x the tokens of one branch), per element size of the compute dtype.
ACTIVATION_FIT = {2: dict(base=43_164_672, dim=23.0828, ffn=6.5586),
                  4: dict(base=7_297_024, dim=27.8286, ffn=7.9071)}
# Wan2.1 VAE decode, one latent frame (4 video frames) at a time, fp32: base + pixel * H * W above
# the VAE's own weights, fitted the same way.
VAE_DECODE_FIT = dict(base=220_857_685, pixel=20_491.8)
VAE_WEIGHTS_BYTES = 126_900_000 * 4
TEXT_ENCODER_BYTES = {"umt5 fp8": 6.7e9, "umt5 fp16": 11.4e9}
# The time estimate's default throughput: an H100's dense bf16 peak (989 TFLOP/s) at 40% use, an
# assumption (no Vera run on a GPU has been timed here); --effective-tflops gives your own.
EFFECTIVE_TFLOPS = 400.0


def model_config(name: str) -> VeraConfig:
    """`1.3B` / `14B` (or a preset name) -> its config."""
    key = {"1.3b": "wan2.1-1.3B", "14b": "wan2.1-14B"}.get(name.lower(), name)
    if key not in PRESETS:
        raise ValueError(f"--model {name!r}: use 1.3B or 14B")
    return PRESETS[key]


def branch_tokens(config: VeraConfig, frames: int, height: int, width: int) -> int:
    """Tokens of one branch for a clip of `frames` (1 + 4k) at `height` x `width` (multiples of
    16)."""
    latent_frames = 1 + (frames - 1) // FRAME_STEP
    pt, ph, pw = config.patch_size
    return (latent_frames // pt) * (height // 8 // ph) * (width // 8 // pw)


def weight_bytes(config: VeraConfig, weight_dtype: str, compute_element: int) -> int:
    """The three branches' weights under a weight-dtype policy (fp8: block Linears in 1 byte plus
    an fp32 scale, all else in the compute dtype), counted on the meta device."""
    from ..model.fp8 import fp8_shells
    from ..model.mot import VeraModel

    element = {"bf16": 2, "fp16": 2, "fp32": 4}.get(weight_dtype, compute_element)
    with torch.device("meta"):
        model = VeraModel(config)
        if weight_dtype == "fp8":
            fp8_shells(model)
    total = 0
    for name, tensor in model.state_dict().items():
        size = 1 if tensor.dtype == torch.float8_e4m3fn else 4 if name.endswith("scale_weight") \
            else element
        total += tensor.numel() * size
    return total


def activation_bytes(config: VeraConfig, tokens: int, batch: int, element: int) -> float:
    """Peak activation bytes of one forward: `tokens` per branch, `batch` (2 with batched CFG),
    compute dtype of `element` bytes (2 for bf16 / fp16, 4 for fp32)."""
    fit = ACTIVATION_FIT[element]
    joint = 3 * tokens * batch
    return fit["base"] * batch + joint * (fit["dim"] * config.dim + fit["ffn"] * config.ffn_dim)


def latent_activation_bytes(model, latent: torch.Tensor, passes: int) -> float:
    """`activation_bytes` of a model on a latent `[B, 16, T', h, w]`, `passes` per step (2 with
    cond and uncond batched), in the model's compute dtype."""
    config = model.config
    _, _, frames, height, width = latent.shape
    pt, ph, pw = config.patch_size
    tokens = (frames // pt) * (height // ph) * (width // pw)
    element = min(torch.finfo(model.dtype).bits // 8, 4)
    return activation_bytes(config, tokens, passes * latent.shape[0], element)


def vae_decode_bytes(height: int, width: int) -> float:
    """Peak of decoding one latent frame (4 video frames) with the Wan2.1 VAE in fp32, weights
    included (the decoder streams one latent frame at a time: `vera.encoders.vae.decode_raw`)."""
    return VAE_WEIGHTS_BYTES + VAE_DECODE_FIT["base"] + VAE_DECODE_FIT["pixel"] * height * width


def flops_per_step(config: VeraConfig, tokens: int, guided: bool = True) -> float:
    """Multiply-adds x 2 of one sampling step: every Linear of the three branches on their tokens,
    the joint attention over 3 x tokens, cross-attention to the text; doubled with CFG."""
    d, f, n = config.dim, config.ffn_dim, 3 * tokens
    linear_params = config.num_layers * (8 * d * d + 2 * d * f)  # per branch
    linear = 2 * linear_params * n
    joint_attention = config.num_layers * 4 * n * n * d
    cross_attention = config.num_layers * 4 * n * TEXT_TOKENS * d
    return (linear + joint_attention + cross_attention) * (2 if guided else 1)


@dataclass
class Plan:
    config: VeraConfig
    tokens: int
    weights: int
    activations_batched: float
    activations_single: float
    vae_decode: float
    flops: float
    layer_bytes: int
    frames: int = 0
    window_frames: int = 0
    windows: int = 1

    def sampling_need(self, batched: bool, swap_layers: int = 0) -> float:
        """Device memory the sampler needs: resident weights (two swapped layers in flight with
        block swap) plus the activation peak."""
        resident = self.weights - swap_layers * self.layer_bytes + (2 * self.layer_bytes
                                                                    if swap_layers else 0)
        return resident + (self.activations_batched if batched else self.activations_single)

    def advice(self, vram_gb: float, reserve_gb: float = 0.8) -> str:
        """What fits on a card of `vram_gb` (keeping `reserve_gb` free, as ComfyUI does)."""
        budget = (vram_gb - reserve_gb) * GB
        sampling = self._sampling_advice(budget)
        if self.vae_decode > budget and sampling != "does not fit":
            sampling += "; VAE decode in tiles (ComfyUI falls back to tiles by itself)"
        return sampling

    def _sampling_advice(self, budget: float) -> str:
        if self.sampling_need(True) <= budget:
            return "fits, CFG batched"
        if self.sampling_need(False) <= budget:
            return "fits with batch_cfg off"
        for swap in range(1, self.config.num_layers + 1):
            if self.sampling_need(False, swap) <= budget:
                layers = self.config.num_layers
                return f"fits with batch_cfg off and {swap} of {layers} layers swapped"
        return "does not fit"


def make_plan(config: VeraConfig, frames: int, height: int, width: int, weight_dtype: str = "bf16",
              element: int = 2, window: int = WAN_DEFAULTS.window,
              overlap: int = WAN_DEFAULTS.window_overlap) -> Plan:
    """The plan of a `frames` x `height` x `width` edit; with `window` (0: none) a longer shot is
    sampled in windows of that many frames sharing `overlap`: memory is one window's and the
    FLOPs per step are every window's."""
    problems = [p for p in (frame_count_problem(frames), size_problem(height, width)) if p]
    if problems:
        raise ValueError("; ".join(problems))
    window_frames = frames if not window or frames <= window else window
    windows = len(plan_windows(latent_frames(frames), latent_frames(window),
                               latent_frames(overlap))) if window else 1
    tokens = branch_tokens(config, window_frames, height, width)
    weights = weight_bytes(config, weight_dtype, element)
    per_layer = weight_bytes(config.replace(num_layers=1), weight_dtype, element) - weight_bytes(
        config.replace(num_layers=0), weight_dtype, element)
    return Plan(config, tokens, weights, activation_bytes(config, tokens, 2, element),
                activation_bytes(config, tokens, 1, element), vae_decode_bytes(height, width),
                flops_per_step(config, tokens) * windows, per_layer, frames, window_frames,
                windows)


def seconds(plan: Plan, steps: int, effective_tflops: float = EFFECTIVE_TFLOPS) -> float:
    """Sampling time of the whole shot at `effective_tflops` (achieved, not peak)."""
    return plan.flops * steps / (effective_tflops * 1e12)


def describe(plan: Plan, weight_dtype: str, batch_cfg: str, steps: int = WAN_DEFAULTS.steps,
             effective_tflops: float = EFFECTIVE_TFLOPS) -> str:
    gb = lambda b: f"{b / GB:.1f} GB"
    shot = (f"{plan.frames} frames in {plan.windows} windows of {plan.window_frames}; memory "
            "below is one window's" if plan.windows > 1 else
            f"{plan.frames} frames in one piece")
    took = seconds(plan, steps, effective_tflops)
    lines = [
        f"model       {plan.config.name}: {plan.config.num_layers} layers, width {plan.config.dim}",
        f"shot        {shot}",
        f"tokens      {plan.tokens:,} per branch, {3 * plan.tokens:,} in the joint attention",
        f"weights     {gb(plan.weights)} ({weight_dtype}; one layer's three blocks "
        f"{gb(plan.layer_bytes)})",
        f"activations {gb(plan.activations_batched)} with CFG batched, "
        f"{gb(plan.activations_single)} one pass at a time",
        f"VAE decode  {gb(plan.vae_decode)} (one latent frame at a time, fp32, weights included)",
        f"text enc.   umT5 fp8 {TEXT_ENCODER_BYTES['umt5 fp8'] / 1e9:.1f} GB / fp16 "
        f"{TEXT_ENCODER_BYTES['umt5 fp16'] / 1e9:.1f} GB (its own stage; ComfyUI evicts it)",
        f"FLOPs       {plan.flops / 1e15:.2f} PFLOP per step (cond + uncond, every window), "
        f"attention {100 * (1 - _linear_share(plan)):.0f}%",
        f"time        about {took:,.0f} s of sampling for {plan.frames} frames at {steps} steps "
        f"({took / plan.frames:.2f} s per frame) at {effective_tflops:g} effective TFLOP/s "
        "(an assumption: an H100 at 40%; give yours with --effective-tflops)",
        f"sampling    {gb(plan.sampling_need(True))} batched, {gb(plan.sampling_need(False))} "
        f"one pass at a time (batch_cfg {batch_cfg})",
        "fits on:",
    ]
    lines += [f"  {size:>3} GB  {plan.advice(size)}" for size in VRAM_SIZES_GB]
    return "\n".join(lines)


def _linear_share(plan: Plan) -> float:
    c, n = plan.config, 3 * plan.tokens
    linear = 2 * c.num_layers * (8 * c.dim**2 + 2 * c.dim * c.ffn_dim) * n * 2 * plan.windows
    return linear / plan.flops


def fits_table(frames: int, height: int, width: int) -> str:
    """A Markdown table of `advice` for Wan2.1-1.3B and 14B, bf16 and fp8 weights, on each card
    size (bf16 compute); the README's troubleshooting section shows it for 49 x 832x480."""
    header = "| model, weights | " + " | ".join(f"{size} GB" for size in VRAM_SIZES_GB) + " |"
    rows = [header, "|---" * (len(VRAM_SIZES_GB) + 1) + "|"]
    for preset in ("wan2.1-1.3B", "wan2.1-14B"):
        for weight_dtype in ("bf16", "fp8"):
            plan = make_plan(PRESETS[preset], frames, height, width, weight_dtype)
            cells = [_short(plan.advice(size)) for size in VRAM_SIZES_GB]
            rows.append(f"| {preset.split('-')[1]}, {weight_dtype} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _short(advice: str) -> str:
    """"fits with batch_cfg off and 11 of 30 layers swapped" -> "off, 11/30 swapped"."""
    short = re.sub(r"(\d+) of (\d+) layers swapped", r"\1/\2 swapped", advice)
    short = (short.replace("fits, CFG batched", "batched").replace("fits with batch_cfg off", "off")
             .replace(" and ", ", ").replace("does not fit", "no"))
    return short.replace("; VAE decode in tiles (ComfyUI falls back to tiles by itself)", " (*)")


def cmd_plan(args) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.table:
        print(fits_table(args.frames, height, width))
        return 0
    config = model_config(args.model)
    WAN_DEFAULTS.updated(window=args.window, window_overlap=args.overlap)  # same checks as edit
    element = 4 if args.dtype == "fp32" else 2
    plan = make_plan(config, args.frames, height, width, args.weight_dtype, element, args.window,
                     args.overlap)
    print(describe(plan, args.weight_dtype, args.batch_cfg, args.steps, args.effective_tflops))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="memory and FLOPs of an edit, and what fits on which GPU")
    p.add_argument("--model", default="1.3B", help="1.3B or 14B")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--size", default="832x480", help="WIDTHxHEIGHT")
    p.add_argument("--weight-dtype", choices=STORED_DTYPES, default="bf16")
    p.add_argument("--dtype", choices=COMPUTE_DTYPES, default="bf16",
                   help="compute dtype (bf16 on GPUs that have it)")
    p.add_argument("--batch-cfg", choices=BATCH_CFG, default="auto")
    p.add_argument("--window", type=int, default=WAN_DEFAULTS.window,
                   help="context window in frames (0: the whole clip in one piece)")
    p.add_argument("--overlap", type=int, default=WAN_DEFAULTS.window_overlap,
                   help="frames neighbouring windows share")
    p.add_argument("--steps", type=int, default=WAN_DEFAULTS.steps)
    p.add_argument("--effective-tflops", type=float, default=EFFECTIVE_TFLOPS,
                   help="achieved TFLOP/s of your GPU, for the time estimate")
    p.add_argument("--table", action="store_true",
                   help="what fits where, for 1.3B and 14B in bf16 and fp8, as a Markdown table")
    p.set_defaults(func=cmd_plan)
