"""`edit()`: the whole Vera path on a loaded bundle.

source frames -> validate -> VAE encode (source, mask) -> sample three latents -> decode edit, alpha,
composite -> final composite over the untouched source.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..encoders import vae as vae_ops
from ..frames import layers
from ..frames.geometry import (
    Geometry,
    auto_work_size,
    check_work_size,
    fit_frames,
    plan_geometry,
    resize_frames,
    resize_mask,
    resize_uint8_frames,
    unfit_frames,
)
from ..media.clip import SourceClip
from ..sampling.sampler import StepInfo, sample
from ..sampling.settings import SamplingSettings, check_prompt
from ..sampling.windows import source_spans, windows_for
from .bundle import Bundle


def as_float_frames(frames: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept uint8 or float [0, 1] frames `[T, H, W, 3]`; return (float, uint8) copies."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must be [T, H, W, 3] RGB frames, got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255, frames
    if frames.min() < 0 or frames.max() > 1:
        raise ValueError(f"{name}: float frames must lie in [0, 1] (got {frames.min():.3f}.."
                         f"{frames.max():.3f})")
    return frames.float(), layers.to_uint8(frames)


@dataclass
class EditResult:
    """All frames `[T, H, W, C]` at the user's frame count and size (see Geometry)."""

    edit_layer: torch.Tensor  # float [0, 1], C=3
    alpha: torch.Tensor  # float [0, 1] on the 8-bit grid, C=1, 1 = edit layer opaque
    model_composite: torch.Tensor  # the composite branch's own output, float, C=3
    final: torch.Tensor  # uint8, C=3: eq. 2 over the untouched source
    source: torch.Tensor  # uint8, C=3: the source frames the result lines up with
    latents: dict[str, torch.Tensor]
    settings: SamplingSettings
    details: dict = field(default_factory=dict)  # prompt, geometry and options, for reports
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class EncodedSource:
    """The source as the sampler needs it, and how to map the model's outputs back.

    source_latent / mask_latent: normalised latents `[1, 16, T', h, w]` (float32, CPU); mask_latent is
    None without a mask. source_u8: `[T, H, W, 3]` uint8, the frames the layers line up with (the
    original, or its crop). work_size: (h, w) the model ran at, or None for the source's own size.
    clip: the source's rate, where the frames came from and their audio (for the saved files).
    """

    source_latent: torch.Tensor
    mask_latent: torch.Tensor | None
    geometry: Geometry
    source_u8: torch.Tensor
    work_size: tuple[int, int] | None = None
    clip: SourceClip = field(default_factory=SourceClip)

    @property
    def output_size(self) -> tuple[int, int]:
        return tuple(self.source_u8.shape[1:3])


def _mask_frames(mask_frames: torch.Tensor, frames: int, size: tuple[int, int],
                 name: str = "mask_frames") -> torch.Tensor:
    """`[T, H, W]`, `[T, H, W, 1]`, or one frame `[1, H, W(, 1)]` / `[H, W]` (used for every
    frame) -> `[T, H, W, 1]` at `size` (h, w): a mask of another size but the same aspect ratio
    is resized (nearest for a hard mask)."""
    mask = mask_frames.float()
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 3:
        mask = mask.unsqueeze(-1)
    if mask.ndim != 4 or mask.shape[-1] != 1:
        raise ValueError(f"{name} must be [T, H, W] (or one frame [H, W]), got shape "
                         f"{tuple(mask_frames.shape)}")
    if mask.shape[0] not in (1, frames):
        raise ValueError(f"{name} has {mask.shape[0]} frames but {frames} source frames are "
                         "edited; give one frame (used for all) or one per edited frame")
    if mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"{name}: values must lie in [0, 1] (got {mask.min():.3f}.."
                         f"{mask.max():.3f})")
    mask = resize_mask(mask, size, name)
    return mask.expand(frames, -1, -1, -1) if mask.shape[0] == 1 else mask


def fit_mask(mask_frames: torch.Tensor, frames: int, size: tuple[int, int],
             work_size: tuple[int, int] | None, geo: Geometry, name: str) -> torch.Tensor:
    """A mask (see `_mask_frames`) for `frames` source frames of `size` (h, w) -> `[T, h, w, 1]`
    in [0, 1] on the model's grid: resized to the work size, then padded or cropped as `geo`
    plans for the source."""
    mask = _mask_frames(mask_frames, frames, size, name)
    if work_size is not None:
        mask = resize_mask(mask, work_size, name, keep_aspect=False)
    return fit_frames(mask, geo).clamp(0, 1)


def resolve_work_size(work_size, height: int, width: int) -> tuple[int, int] | None:
    """None: the source's own size; "auto": about 832x480 pixels with the source's aspect (see
    `geometry.auto_work_size`), None when that is the source's size; else (h, w), checked."""
    if work_size == "auto":
        size = auto_work_size(height, width)
        return None if size == (height, width) else size
    return check_work_size(work_size)


@torch.no_grad()
def encode_source(codec, source_frames: torch.Tensor, mask_frames: torch.Tensor | None = None,
                  frame_policy: str = "error", work_size=None,
                  names: tuple[str, str] = ("source_frames", "mask_frames"),
                  clip: SourceClip | None = None) -> EncodedSource:
    """Validate, fit (pad / crop / resize) and VAE-encode the source and optional mask.

    codec: a `vae.FrameCodec` (a diffusers VAE is wrapped automatically).
    source_frames: `[T, H, W, 3]` uint8 or float in [0, 1]. uint8 frames are resized a few at a
    time, so a large source never exists as float32 at full size.
    mask_frames: `[T, H, W]` in [0, 1], 1 = region that may change; one frame or one per source
    frame, any size with the source's aspect ratio.
    work_size: (h, w), "auto" or None (see `resolve_work_size`).
    names: what errors call the two inputs (the caller's own parameter or socket names).
    clip: the source's rate, origin and audio, kept with the result.
    """
    codec = vae_ops.as_codec(codec)
    is_rgb = source_frames.ndim == 4 and source_frames.shape[-1] == 3
    if source_frames.dtype == torch.uint8 and is_rgb:
        source_u8, source_f = source_frames, None
    else:
        source_f, source_u8 = as_float_frames(source_frames, names[0])
    frames, *full_size = source_u8.shape[:3]
    work_size = resolve_work_size(work_size, *full_size)
    if work_size is not None:
        model_in = (resize_uint8_frames(source_u8, work_size) if source_f is None
                    else resize_frames(source_f, work_size))
    else:
        model_in = source_f if source_f is not None else source_u8.float() / 255
    geo = plan_geometry(*model_in.shape[:3], frame_policy, name=names[0])
    source_latent = codec.encode_frames(fit_frames(model_in, geo)).float().cpu()
    del model_in
    mask_latent = None
    if mask_frames is not None:
        mask = fit_mask(mask_frames, frames, tuple(full_size), work_size, geo, names[1])
        mask_latent = vae_ops.encode_matte(codec, mask).float().cpu()
    if work_size is not None:  # the grid is a multiple of 16 already: only frames can have been cropped
        out_u8 = source_u8[: min(geo.model[0], geo.original[0])]
    else:
        out_u8 = unfit_frames(fit_frames(source_u8, geo), geo)  # the original, or its crop
    return EncodedSource(source_latent, mask_latent, geo, out_u8, work_size, clip or SourceClip())


@torch.no_grad()
def decode_layers(codec, latents: dict[str, torch.Tensor], encoded: EncodedSource) -> tuple[torch.Tensor, ...]:
    """Three latents -> (edit `[T, H, W, 3]`, alpha `[T, H, W, 1]`, model composite `[T, H, W, 3]`), float in
    [0, 1], at the size and frame count of `encoded.source_u8`."""
    codec = vae_ops.as_codec(codec)
    geo = encoded.geometry
    edit_rgb = codec.decode_frames(latents["edit"])
    alpha = vae_ops.decode_matte(codec, latents["alpha"])
    model_comp = codec.decode_frames(latents["composite"])
    out = []
    for x in (edit_rgb, alpha, model_comp):
        x = unfit_frames(x, geo)
        if encoded.work_size is not None:
            x = resize_frames(x, encoded.output_size)
        out.append(x.float().cpu())
    return tuple(out)


def _text(bundle: Bundle, prompt: str, what: str) -> torch.Tensor:
    if bundle.text_encoder is None:
        raise ValueError(f"{what}: {bundle.name} has no text encoder; load one with the model "
                         "(--text-encoder FOLDER) to edit from a text prompt")
    return bundle.text_encoder.encode([prompt]).float()


@torch.no_grad()
def edit(bundle: Bundle, source_frames: torch.Tensor, prompt: str,
         settings: SamplingSettings | None = None, *, mask_frames: torch.Tensor | None = None,
         frame_policy: str = "error", work_size: tuple[int, int] | None = None,
         recover_semi_transparent: bool = False, callback: Callable[[StepInfo], None] | None = None,
         should_stop: Callable[[], bool] | None = None,
         allow_empty_prompt: bool = False) -> EditResult:
    """Run a Vera edit with a bundle's model, VAE and text encoder.

    source_frames: `[T, H, W, 3]` uint8 or float in [0, 1]. prompt: the instruction.
    settings: sampling settings (default: the bundle's). mask_frames: optional `[T, H, W]` or
    `[T, H, W, 1]` in [0, 1], 1 = region that may change (background-change task).
    work_size: (height, width), multiples of 16, to run the model at (e.g. a small model's
    training size); the layers are scaled back to the source size and composited over the
    full-size source, so untouched pixels stay bit-identical at the source's own resolution.
    recover_semi_transparent: composite over the eq. 3 recovery instead of the source.
    allow_empty_prompt: run with a blank instruction on purpose (refused otherwise).
    """
    settings = bundle.defaults if settings is None else settings
    check_prompt(prompt, allow_empty_prompt)
    model = bundle.model
    if bundle.vae is None:
        raise ValueError(f"{bundle.name} has no VAE; load one with the model (--vae FILE)")
    timings, start = {}, time.perf_counter()
    device = next(model.parameters()).device
    context = _text(bundle, prompt, "prompt")
    negative = None
    if settings.guided:
        negative = _text(bundle, settings.negative_prompt, "negative_prompt")
    timings["text_s"] = time.perf_counter() - start

    t = time.perf_counter()
    encoded = encode_source(bundle.vae, source_frames, mask_frames, frame_policy, work_size)
    timings["encode_s"] = time.perf_counter() - t

    t = time.perf_counter()
    mask_latent = None if encoded.mask_latent is None else encoded.mask_latent.to(device)
    evaluations = {}
    latents = sample(model, context.to(device), encoded.source_latent.to(device), mask_latent,
                     None if negative is None else negative.to(device), settings,
                     callback=callback, should_stop=should_stop, evaluations=evaluations)
    timings["sample_s"] = time.perf_counter() - t

    t = time.perf_counter()
    edit_rgb, alpha, model_comp = decode_layers(bundle.vae, latents, encoded)
    timings["decode_s"] = time.perf_counter() - t

    alpha = layers.quantize_alpha(alpha, settings.alpha_cutoff)
    edit_rgb = layers.on_8bit_grid(edit_rgb)
    final = layers.final_composite(encoded.source_u8, edit_rgb, alpha, model_comp,
                                   recover_semi_transparent)
    timings["total_s"] = time.perf_counter() - start
    geo = encoded.geometry
    details = dict(prompt=prompt, frame_policy=frame_policy,
                   recover_semi_transparent=recover_semi_transparent, model_grid=geo.model,
                   source_size=(geo.original[0], *encoded.output_size), work_size=encoded.work_size,
                   model_evaluations=evaluations,
                   windows=source_spans(windows_for(settings, encoded.source_latent.shape[2]),
                                        final.shape[0]))
    return EditResult(edit_rgb, alpha, model_comp, final, encoded.source_u8, latents, settings,
                      details, timings)
