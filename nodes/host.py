"""The ComfyUI services the nodes use, reached through this one module.

Inside ComfyUI: its devices, its model manager (ModelPatcher, load_models_gpu, comfy.ops layers),
its attention dispatch, interrupt flag, progress bar with previews, model folders and output/temp
folders. Outside it (our CI, scripts): plain behaviour: CUDA if present, the library's own layers
and attention, no manager, no interrupts, no progress UI, models from `$VERA_MODELS_DIR/<kind>/`,
outputs in `$VERA_OUTPUT_DIR` (default `./output`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

try:  # ComfyUI's own modules; present only when ComfyUI runs the pack
    import comfy.model_management as _mm
    import comfy.utils as _utils
    import folder_paths as _folders
except ImportError:
    _mm = _utils = _folders = None

IN_COMFYUI = _folders is not None


def device() -> torch.device:
    """Where models run (ComfyUI's load device)."""
    if IN_COMFYUI:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where model weights wait while they are not in use (ComfyUI's offload device)."""
    if IN_COMFYUI:
        return _mm.unet_offload_device()
    return device()


def operations():
    """The layer classes to build a model from: ComfyUI's (weights cast to the input's device and
    dtype per forward, so partial loading can leave some on the CPU; fp8 block Linears as its
    scaled-fp8 Linear), or None for the library's own."""
    if not IN_COMFYUI:
        return None
    import comfy.ops

    class VeraComfyOps(comfy.ops.manual_cast):
        FP8Linear = comfy.ops.scaled_fp8_ops(override_dtype=torch.float8_e4m3fn).Linear

    return VeraComfyOps


def manage(model: torch.nn.Module):
    """Hand a model to ComfyUI's model manager (a ModelPatcher: the Unload button, /free and the
    out-of-memory handler can then free it); None outside ComfyUI."""
    if not IN_COMFYUI:
        return None
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=device(),
                                            offload_device=offload_device())


def with_lora(manager, tensors: dict, key_maps: dict[str, dict[str, str]],
              strengths: dict[str, float]):
    """A clone of `manager` carrying a LoRA (its tensors by their names in the file) as ComfyUI's
    own weight patches (comfy.lora: the manager applies them when it loads the model, in part under
    partial loading, and drops them on /free), one key map per branch -> (the clone, patched
    weights)."""
    import comfy.lora

    patched, count = manager.clone(), 0
    for branch, to_load in key_maps.items():
        patches = comfy.lora.load_lora(tensors, to_load, log_missing=False)
        count += len(patched.add_patches(patches, strengths[branch]))
    return patched, count


def load_for_use(manager, memory_required: float, minimum_memory_required: float) -> None:
    """Ask ComfyUI for the device: it evicts other models (text encoder, VAE) until the weights and
    `memory_required` more fit; when they cannot, it keeps `minimum_memory_required` free and
    loads only the weights that fit beside it (the rest are cast in per forward), as its own
    sampler does with the batched and the one-pass estimate."""
    if manager is not None:
        _mm.load_models_gpu([manager], memory_required=int(memory_required),
                            minimum_memory_required=int(minimum_memory_required))


def free_bytes(dev: torch.device) -> int | None:
    """ComfyUI's count of free memory on a device, less what the user reserved with
    `--reserve-vram` (ComfyUI's count includes it); None outside ComfyUI."""
    if not IN_COMFYUI:
        return None
    reserved = _mm.extra_reserved_memory() if dev.type != "cpu" else 0
    return max(0, _mm.get_free_memory(dev) - reserved)


def attention():
    """ComfyUI's attention dispatch (the user's launch flags pick sage, flash, xformers or PyTorch)
    as a function on `[B, L, H, D]` tensors; None outside ComfyUI."""
    if not IN_COMFYUI:
        return None
    import comfy.ldm.modules.attention as comfy_attention

    def dispatch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        heads = q.shape[2]
        out = comfy_attention.optimized_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), heads, skip_reshape=True,
            skip_output_reshape=True)
        return out.transpose(1, 2)

    return dispatch


def interrupt_requested() -> bool:
    """True once the user pressed Cancel (ComfyUI's interrupt flag)."""
    return bool(IN_COMFYUI and _mm.processing_interrupted())


def raise_interrupt() -> None:
    """Raise ComfyUI's own interrupt exception (the queue then reports a cancel, not an error)."""
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()
    raise InterruptedError("cancelled")


def free_memory() -> None:
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


class Progress:
    """ComfyUI's node progress bar, with a preview image per step when the user turned previews on
    (`--preview-method`); a no-op outside ComfyUI."""

    def __init__(self, total: int):
        self.bar = _utils.ProgressBar(total) if IN_COMFYUI else None
        self.total = total

    @property
    def wants_previews(self) -> bool:
        if self.bar is None:
            return False
        from comfy.cli_args import LatentPreviewMethod, args

        return args.preview_method != LatentPreviewMethod.NoPreviews

    def update(self, done: int, preview_rgb=None) -> None:
        """preview_rgb: uint8 `[H, W, 3]` shown under the node (sent as ComfyUI's previewers do)."""
        if self.bar is None:
            return
        preview = None
        if preview_rgb is not None:
            from comfy.cli_args import args
            from PIL import Image

            preview = ("JPEG", Image.fromarray(preview_rgb.cpu().numpy()), args.preview_size)
        self.bar.update_absolute(done, self.total, preview)


def wan21_latent_rgb() -> tuple[torch.Tensor, torch.Tensor] | None:
    """The Wan2.1 VAE's latent-to-RGB preview map from ComfyUI's `Wan21` latent format (factors
    `[16, 3]`, bias `[3]`, on normalised latents); None outside ComfyUI."""
    if not IN_COMFYUI:
        return None
    import comfy.latent_formats

    fmt = comfy.latent_formats.Wan21()
    return torch.tensor(fmt.latent_rgb_factors), torch.tensor(fmt.latent_rgb_factors_bias)


def _standalone_models_dir() -> Path | None:
    value = os.environ.get("VERA_MODELS_DIR")
    return Path(value) if value else None


MODEL_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")


def model_files(kind: str) -> list[str]:
    """Checkpoint files ComfyUI lists under models/<kind> (e.g. "diffusion_models")."""
    if IN_COMFYUI:
        names = _folders.get_filename_list(kind)
    else:
        root = _standalone_models_dir()
        folder = root / kind if root else None
        found = sorted(folder.rglob("*")) if folder and folder.is_dir() else []
        names = [p.relative_to(folder).as_posix() for p in found if p.is_file()]
    return [n for n in names if n.lower().endswith(MODEL_SUFFIXES)]


def model_path(kind: str, name: str) -> Path:
    """Full path of a model file listed by `model_files`; a clear error when it is gone."""
    if IN_COMFYUI:
        path = _folders.get_full_path(kind, name)
    else:
        root = _standalone_models_dir()
        path = root / kind / name if root else None
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(f"model file {name!r} is not in models/{kind}; put it there and refresh the node list")
    return Path(path)


def output_dir() -> Path:
    if IN_COMFYUI:
        return Path(_folders.get_output_directory())
    return Path(os.environ.get("VERA_OUTPUT_DIR", "output")).resolve()


def wan21_latent_stats() -> tuple[torch.Tensor, torch.Tensor]:
    """The Wan2.1 VAE's latent mean and std, `[1, 16, 1, 1, 1]` each: ComfyUI's `Wan21` latent
    format inside ComfyUI, else the defaults of diffusers' AutoencoderKLWan (the same 16 values)."""
    if IN_COMFYUI:
        import comfy.latent_formats

        fmt = comfy.latent_formats.Wan21()
        shape = (1, -1, 1, 1, 1)
        return fmt.latents_mean.float().reshape(shape), fmt.latents_std.float().reshape(shape)
    import inspect

    from diffusers import AutoencoderKLWan

    params = inspect.signature(AutoencoderKLWan.__init__).parameters
    return tuple(torch.tensor(params[name].default).view(1, -1, 1, 1, 1)
                 for name in ("latents_mean", "latents_std"))


def temp_dir() -> Path:
    if IN_COMFYUI:
        return Path(_folders.get_temp_directory())
    return Path(tempfile.gettempdir()) / "vera-temp"


class StandaloneVideo:
    """What a VIDEO is outside ComfyUI: frames `[T, H, W, 3]` float 0..1, an exact rate, AUDIO.
    Has the two methods of ComfyUI's VideoInput the pack uses."""

    def __init__(self, images: torch.Tensor, frame_rate, audio: dict | None = None):
        self.images, self.frame_rate, self.audio = images, frame_rate, audio

    def get_components(self):
        return self

    def get_dimensions(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[1])


def make_video(images: torch.Tensor, frame_rate, audio: dict | None = None):
    """A VIDEO for core SaveVideo and previews: ComfyUI's VideoFromComponents inside ComfyUI.
    images: `[T, H, W, 3]` float 0..1; frame_rate: a Fraction; audio: ComfyUI AUDIO or None."""
    if not IN_COMFYUI:
        return StandaloneVideo(images, frame_rate, audio)
    from comfy_api.input_impl import VideoFromComponents
    from comfy_api.util import VideoComponents

    return VideoFromComponents(VideoComponents(images=images, audio=audio,
                                               frame_rate=frame_rate))


def video_file(video):
    """The file behind a VIDEO (a path or a binary stream) when it comes straight from a file
    (core LoadVideo), so only the frames used need decoding; None for a VIDEO built from frames."""
    if not IN_COMFYUI:
        return None
    from comfy_api.input_impl import VideoFromFile

    # other VIDEOs also have get_stream_source, but it re-encodes their frames
    return video.get_stream_source() if isinstance(video, VideoFromFile) else None


def metadata_enabled() -> bool:
    """False when ComfyUI was started with --disable-metadata (then no prompt or workflow is
    embedded in saved files, as core save nodes do)."""
    if not IN_COMFYUI:
        return True
    from comfy.cli_args import args

    return not args.disable_metadata
