"""Command line: `python -m vera {edit, stack, eval, data, train, info, convert}` (`--help` on each)."""
from __future__ import annotations

import argparse
import logging
import sys

from .checkpoints.safetensors_io import CheckpointError
from .edit import command as edit_command
from .evaluation.evaluate import MASK_POLICIES
from .model.precision import STORED_DTYPES
from .sampling import plan
from .training import trainer


def describe_vae(path) -> str | None:
    """A short description if `path` is a Wan VAE file, else None."""
    from pathlib import Path

    from .checkpoints.safetensors_io import read_header
    from .encoders import vae as vae_ops

    if not Path(path).is_file():
        return None
    entries, _ = read_header(path)
    keys = list(entries)
    original = vae_ops.is_original_layout(keys)
    if not original and not any(k.startswith("encoder.conv_in.") for k in keys):
        return None
    names = vae_ops.original_to_diffusers(keys) if original else {k: k for k in keys}
    cfg = vae_ops.config_from_shapes({names[k]: e.shape for k, e in entries.items()})
    return (f"file:       {path}\nkind:       Wan2.1 VAE ({'wan-original (ComfyUI)' if original else 'diffusers'} key names)\n"
            f"config:     {cfg}\nparameters: {sum(e.numel for e in entries.values()):,}")


def cmd_info(args) -> int:
    from .checkpoints import weights

    try:
        info = weights.detect(args.checkpoint, args.num_heads, require_config=False,
                              keymap=args.keymap)
    except CheckpointError:
        description = describe_vae(args.checkpoint)
        if description is None:
            raise
        print(description)
        return 0
    print(f"file:       {info.path}")
    print(f"format:     {info.format}")
    if info.config is not None:
        print(f"config:     {info.config.name} {info.config}")
    else:  # every size the shapes fix; only the head count is missing
        sizes = ", ".join(f"{k}={v!r}" for k, v in info.plan.sizes.items())
        print(f"config:     {sizes}" if sizes else "config:     unknown")
        print(f"heads:      unknown: {info.note}")
    print(f"parameters: {info.num_parameters:,}")
    print(f"dtypes:     {', '.join(f'{k} x{v}' for k, v in sorted(info.dtypes.items()))}")
    if info.scaled_fp8:
        print("fp8:        ComfyUI scaled_fp8 (weights are multiplied by their scale_weight on load)")
    if info.format.startswith("wan-"):
        print("use:        a plain Wan2.1 T2V file: starts an untrained Vera (all three branches) "
              "for training (--untrained-from-wan); not Vera weights")
    if args.explain:
        print("explain:")
        for line in info.explain():
            print(f"  {line}")
    return 0


def cmd_convert(args) -> int:
    from .checkpoints.weights import convert

    out = convert(args.input, args.output, args.weight_dtype, args.num_heads, args.keymap,
                  args.untrained_from_wan)
    print(f"wrote {out} ({args.weight_dtype}, Vera format)")
    return 0


def cmd_data_build(args) -> int:
    from .data.synthetic import build_dataset

    build_dataset(args.out, args.per_task, args.seed, args.frames, args.size,
                  progress=lambda i, n: print(f"\r{i}/{n} per task", end="", flush=True))
    print(f"\nwrote {args.out}/manifest.jsonl")
    return 0


def cmd_data_check(args) -> int:
    from .data.layout import load_manifest, load_sample

    entries = load_manifest(args.dataset)
    for e in entries:
        load_sample(args.dataset, e, args.tolerance / 255)
    print(f"{args.dataset}: {len(entries)} samples, all valid")
    return 0


def cmd_train(args) -> int:
    from .model.config import VeraConfig
    from .training.run import train
    from .training.trainer import TrainConfig

    config = TrainConfig(mode=args.mode, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         warmup_steps=args.warmup, schedule=args.schedule, seed=args.seed,
                         checkpoint_every=args.checkpoint_every, lora_rank=args.lora_rank, train_shift=args.train_shift,
                         mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                         fsdp=args.fsdp)
    model_config = VeraConfig.from_file(args.model_config) if args.model_config else None
    path = train(config, args.data, args.out, args.vae, args.text_encoder, init=args.init, model_config=model_config,
                 train_text=args.train_text_encoder, resume=not args.no_resume, cache_dir=args.cache_dir)
    if path is not None:
        print(f"wrote {path}")
    return 0


def cmd_eval(args) -> int:
    from .evaluation.evaluate import evaluate, table, write_report

    bundle = edit_command.bundle_from_args(args)
    baseline = None
    if args.baseline:
        from .training.run import load_baseline
        baseline = load_baseline(args.baseline)
    settings = edit_command.settings_from_args(args, bundle.defaults)
    report = evaluate(args.data, bundle, baseline, settings, masks=args.masks, limit=args.limit,
                      progress=lambda i, n: print(f"\r{i}/{n}", end="", flush=True))
    print()
    write_report(report, args.out)
    print(table(report))
    print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vera", description="ComfyUI-Vera command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print the detected format, config and parameter count of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--num-heads", type=int, default=None, help="head count, for small custom models")
    p.add_argument("--keymap", default=None,
                   help="key map JSON (regex -> our key); default: <weights>.vera-keymap.json")
    p.add_argument("--explain", action="store_true",
                   help="say what was detected: container, layout, which prefix became which "
                        "branch and by which rule, the conditioning tensors")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("convert",
                       help="write a Vera checkpoint of any layout in our single-file format")
    p.add_argument("input", help="a Vera checkpoint in any layout or container")
    p.add_argument("output", help="the .safetensors file to write (never the input)")
    p.add_argument("--weight-dtype", choices=STORED_DTYPES, default="bf16",
                   help="fp8: block weights in float8 with scale_weight (ComfyUI's scaled fp8)")
    p.add_argument("--num-heads", type=int, default=None, help="head count (small custom models)")
    p.add_argument("--keymap", default=None, help="key map JSON (see info --keymap)")
    p.add_argument("--untrained-from-wan", action="store_true",
                   help="the input is a plain Wan2.1 T2V file: write an untrained Vera from it")
    p.set_defaults(func=cmd_convert)
    edit_command.add_parser(sub)
    edit_command.add_stack_parser(sub)
    plan.add_parser(sub)

    p = sub.add_parser("data", help="layered datasets: build synthetic data, or validate a dataset")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("build", help="write a synthetic layered dataset (deterministic by seed)")
    q.add_argument("--out", required=True)
    q.add_argument("--per-task", type=int, default=32, help="samples per task")
    q.add_argument("--seed", type=int, default=0, help="use a different seed for a held-out split")
    q.add_argument("--frames", type=int, default=17)
    q.add_argument("--size", type=int, default=64)
    q.set_defaults(func=cmd_data_build)
    q = data_sub.add_parser("check", help="load and validate every sample of a dataset")
    q.add_argument("dataset")
    q.add_argument("--tolerance", type=float, default=2.0, help="compositing tolerance in 8-bit levels")
    q.set_defaults(func=cmd_data_check)

    p = sub.add_parser("train", help="train Vera (or the t2v / baseline single-branch models) with accelerate")
    p.add_argument("--mode", choices=trainer.MODES, default="vera")
    p.add_argument("--data", required=True, help="layered dataset folder (manifest.jsonl)")
    p.add_argument("--out", required=True, help="run folder: checkpoint/, loss.jsonl, final weights")
    p.add_argument("--init", default=None, help="Wan2.1 T2V file (fresh Vera) or Vera file (continue)")
    p.add_argument("--model-config", default=None, help="VeraConfig JSON, to train a single-branch model from scratch")
    p.add_argument("--vae", required=True)
    p.add_argument("--text-encoder", required=True, help="UMT5 folder")
    p.add_argument("--train-text-encoder", action="store_true", help="t2v mode: train the text encoder too")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--lr", type=float, default=1e-5, help="base rate; branches get 0.1x / 10x / 10x (edit / alpha / composite)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--schedule", choices=trainer.SCHEDULES, default="constant")
    p.add_argument("--train-shift", type=float, default=3.0)
    p.add_argument("--lora-rank", type=int, default=0, help="> 0: LoRA adapters per branch on one frozen shared base")
    p.add_argument("--mixed-precision", choices=trainer.MIXED_PRECISION, default="auto")
    p.add_argument("--gradient-checkpointing", choices=trainer.GRADIENT_CHECKPOINTING,
                   default="auto")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--fsdp", action="store_true",
                   help="shard weights, gradients and optimizer state over the processes (FSDP2, a "
                        "unit per block; under torchrun or accelerate launch, CPUs or GPUs)")
    p.add_argument("--cache-dir", default=None, help="latent cache folder (default OUT/cache); share it between runs")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="metrics of a model (and optionally a baseline) on a layered test split")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="report .json")
    edit_command.add_model_arguments(p)
    edit_command.add_sampling_arguments(p)
    p.add_argument("--baseline", default=None, help="single-branch v2v baseline .safetensors to compare")
    p.add_argument("--masks", choices=MASK_POLICIES, default="auto",
                   help="auto: masks for background change only (the paper's protocol)")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_eval)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError, FileExistsError,
            PermissionError) as err:  # what the user gave, or a place they cannot write to
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a disk that is full or read-only, a name too long, ...
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was finished (an edit's --out is left as it was)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    # our own process: the library's warnings (e.g. why --compile runs uncompiled) reach stderr
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    sys.exit(main())
