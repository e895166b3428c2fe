"""The ComfyUI services the nodes use, reached through this one module.

Inside ComfyUI: its devices, interrupt flag, progress bar, model folders and output/temp folders.
Outside it (our CI, scripts): plain behaviour — CUDA if present, no interrupts, no progress UI,
models from `$VERA_MODELS_DIR/<kind>/`, outputs in `$VERA_OUTPUT_DIR` (default `./output`).
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
    if IN_COMFYUI:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def supports_bf16(dev: torch.device) -> bool:
    return dev.type == "cuda" and torch.cuda.is_bf16_supported()


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
    """ComfyUI's node progress bar (a no-op outside ComfyUI)."""

    def __init__(self, total: int):
        self.bar = _utils.ProgressBar(total) if IN_COMFYUI else None
        self.total = total

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update_absolute(done, self.total)


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
