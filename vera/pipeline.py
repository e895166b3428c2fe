"""`edit()`: the whole Vera path on any loaded model.

source frames -> validate -> VAE encode (source, mask) -> sample three latents -> decode edit, alpha,
composite -> final composite over the untouched source.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import layers, vae as vae_ops
from .sampling import StepInfo, sample
from .text import pad_context

FRAME_POLICIES = ("error", "pad", "crop")
SIZE_MULTIPLE = 16  # VAE /8 then patch /2


@dataclass
class Geometry:
    """How source frames map to the model's grid and back. Sizes are (frames, height, width)."""

    original: tuple[int, int, int]
    model: tuple[int, int, int]
    crop_offset: tuple[int, int] = (0, 0)  # top, left of the model grid in the original (crop policy)


def plan_geometry(frames: int, height: int, width: int, policy: str = "error", name: str = "source_frames") -> Geometry:
    """Check `1 + 4k` frames and sizes that are multiples of 16, or plan padding / cropping.

    pad:  repeat the last frame up to the next 1 + 4k; replicate-pad bottom/right to a multiple of 16;
          outputs are cut back to the original frame count and size.
    crop: drop trailing frames down to 1 + 4k; centre-crop to a multiple of 16; outputs have the cropped size.
    """
    if policy not in FRAME_POLICIES:
        raise ValueError(f"frame_policy {policy!r} is not one of {FRAME_POLICIES}")
    if frames < 1 or height < SIZE_MULTIPLE or width < SIZE_MULTIPLE:
        raise ValueError(f"{name}: {frames} frames of {width}x{height} is too small; need at least 1 frame of 16x16")
    ok_frames = (frames - 1) % 4 == 0
    ok_size = height % SIZE_MULTIPLE == 0 and width % SIZE_MULTIPLE == 0
    if ok_frames and ok_size:
        return Geometry((frames, height, width), (frames, height, width))
    if policy == "error":
        problems = []
        if not ok_frames:
            down, up = frames - (frames - 1) % 4, frames + (4 - (frames - 1) % 4)
            problems.append(f"{frames} frames (Vera needs 1 + 4k frames: trim to {down} or pad to {up})")
        if not ok_size:
            problems.append(f"size {width}x{height} (width and height must be multiples of 16)")
        raise ValueError(f"{name}: bad {' and '.join(problems)}; fix the input or use frame_policy='pad' or 'crop'")
    if policy == "pad":
        up = lambda n, m: -(-n // m) * m
        return Geometry((frames, height, width), (1 + up(frames - 1, 4), up(height, 16), up(width, 16)))
    f = frames - (frames - 1) % 4
    h, w = height - height % 16, width - width % 16
    return Geometry((frames, height, width), (f, h, w), ((height - h) // 2, (width - w) // 2))


def fit_frames(frames: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """`[T, H, W, C]` original -> model grid (pad by replication or crop, per the plan)."""
    (t0, h0, w0), (t1, h1, w1) = geo.original, geo.model
    if (t1, h1, w1) == (t0, h0, w0):
        return frames
    if t1 >= t0 and h1 >= h0 and w1 >= w0:  # pad
        frames = torch.cat([frames, frames[-1:].expand(t1 - t0, *frames.shape[1:])]) if t1 > t0 else frames
        x = F.pad(frames.permute(0, 3, 1, 2).float(), (0, w1 - w0, 0, h1 - h0), mode="replicate")
        return x.permute(0, 2, 3, 1).to(frames.dtype)
    top, left = geo.crop_offset
    return frames[:t1, top : top + h1, left : left + w1]


def unfit_frames(frames: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Model-grid output `[T, H, W, C]` -> the frames the user gets (padding removed)."""
    (t0, h0, w0), (t1, h1, w1) = geo.original, geo.model
    if t1 >= t0 and h1 >= h0 and w1 >= w0:
        return frames[:t0, :h0, :w0]
    return frames


def frames_to_video(frames: torch.Tensor) -> torch.Tensor:
    """`[T, H, W, 3]` in [0, 1] -> `[1, 3, T, H, W]` in [-1, 1]."""
    return (frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1).float()


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """`[1, C, T, H, W]` in [-1, 1] -> `[T, H, W, C]` in [0, 1]."""
    return ((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float `[T, H, W, C]` -> `[T, h, w, C]` (bilinear; antialiased when shrinking). size = (h, w)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    shrink = size[0] < frames.shape[1] or size[1] < frames.shape[2]
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=tuple(size), mode="bilinear", align_corners=False,
                      antialias=shrink)
    return x.permute(0, 2, 3, 1).clamp(0, 1)


def as_float_frames(frames: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept uint8 or float [0, 1] frames `[T, H, W, 3]`; return (float, uint8) copies."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must be [T, H, W, 3] RGB frames, got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255, frames
    if frames.min() < 0 or frames.max() > 1:
        raise ValueError(f"{name}: float frames must lie in [0, 1] (got {frames.min():.3f}..{frames.max():.3f})")
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
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def encode_prompt(text_encoder, prompt, context, what: str) -> torch.Tensor | None:
    if context is not None:
        return pad_context(context.float())
    if prompt is None:
        return None
    if text_encoder is None:
        raise ValueError(f"{what}: a text prompt needs a text encoder; pass text_encoder= or precomputed embeddings")
    return text_encoder.encode([prompt])


@dataclass
class EncodedSource:
    """The source as the sampler needs it, and how to map the model's outputs back.

    source_latent / mask_latent: normalised latents `[1, 16, T', h, w]` (float32, CPU); mask_latent is
    None without a mask. source_u8: `[T, H, W, 3]` uint8, the frames the layers line up with (the
    original, or its crop). work_size: (h, w) the model ran at, or None for the source's own size.
    """

    source_latent: torch.Tensor
    mask_latent: torch.Tensor | None
    geometry: Geometry
    source_u8: torch.Tensor
    work_size: tuple[int, int] | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        return tuple(self.source_u8.shape[1:3])


def _check_work_size(work_size) -> tuple[int, int] | None:
    if work_size is None:
        return None
    h, w = int(work_size[0]), int(work_size[1])
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or min(h, w) < SIZE_MULTIPLE:
        raise ValueError(f"work_size {w}x{h}: width and height must be multiples of 16 (at least 16)")
    return h, w


def _mask_frames(mask_frames: torch.Tensor, frames: int, size: tuple[int, int], name: str = "mask_frames") -> torch.Tensor:
    """`[T, H, W]`, `[T, H, W, 1]`, or one frame `[1, H, W(, 1)]` / `[H, W]` (used for every frame) -> `[T, H, W, 1]`."""
    mask = mask_frames.float()
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 3:
        mask = mask.unsqueeze(-1)
    if mask.ndim != 4 or mask.shape[-1] != 1:
        raise ValueError(f"{name} must be [T, H, W] (or one frame [H, W]), got shape {tuple(mask_frames.shape)}")
    if mask.shape[0] == 1 and frames > 1:
        mask = mask.expand(frames, -1, -1, -1)
    if tuple(mask.shape[:3]) != (frames, *size):
        raise ValueError(f"{name} {tuple(mask.shape[:3])} must match the source {(frames, *size)} (frames, height, "
                         "width), or be a single frame of the source's size; resize the mask to the video")
    return mask


@torch.no_grad()
def encode_source(codec, source_frames: torch.Tensor, mask_frames: torch.Tensor | None = None,
                  frame_policy: str = "error", work_size: tuple[int, int] | None = None,
                  names: tuple[str, str] = ("source_frames", "mask_frames")) -> EncodedSource:
    """Validate, fit (pad / crop / resize) and VAE-encode the source and optional mask.

    codec: see `vae.WanCodec` (a diffusers VAE is wrapped automatically). source_frames: `[T, H, W, 3]`
    uint8 or float in [0, 1]. mask_frames: `[T, H, W]` in [0, 1], 1 = region that may change.
    names: what errors call the two inputs (the caller's own parameter or socket names).
    """
    codec = vae_ops.as_codec(codec)
    source_f, source_u8 = as_float_frames(source_frames, names[0])
    full_size = tuple(source_f.shape[1:3])
    work_size = _check_work_size(work_size)
    model_in = resize_frames(source_f, work_size) if work_size is not None else source_f
    geo = plan_geometry(*model_in.shape[:3], frame_policy, name=names[0])
    source_latent = codec.encode_video(frames_to_video(fit_frames(model_in, geo))).float().cpu()
    mask_latent = None
    if mask_frames is not None:
        mask = _mask_frames(mask_frames, source_f.shape[0], full_size, names[1])
        if work_size is not None:
            mask = resize_frames(mask, work_size)
        mask = fit_frames(mask, geo).clamp(0, 1)
        mask_latent = vae_ops.encode_matte(codec, mask.permute(3, 0, 1, 2).unsqueeze(0)).float().cpu()
    if work_size is not None:  # the grid is a multiple of 16 already: only frames can have been cropped
        out_u8 = source_u8[: min(geo.model[0], geo.original[0])]
    else:
        out_u8 = unfit_frames(fit_frames(source_u8, geo), geo)  # the original, or its crop
    return EncodedSource(source_latent, mask_latent, geo, out_u8, work_size)


@torch.no_grad()
def decode_layers(codec, latents: dict[str, torch.Tensor], encoded: EncodedSource) -> tuple[torch.Tensor, ...]:
    """Three latents -> (edit `[T, H, W, 3]`, alpha `[T, H, W, 1]`, model composite `[T, H, W, 3]`), float in
    [0, 1], at the size and frame count of `encoded.source_u8`."""
    codec = vae_ops.as_codec(codec)
    geo = encoded.geometry
    edit_rgb = video_to_frames(codec.decode_video(latents["edit"]))
    alpha = vae_ops.decode_matte(codec, latents["alpha"])[0].permute(1, 2, 3, 0)
    model_comp = video_to_frames(codec.decode_video(latents["composite"]))
    out = []
    for x in (edit_rgb, alpha, model_comp):
        x = unfit_frames(x, geo)
        if encoded.work_size is not None:
            x = resize_frames(x, encoded.output_size)
        out.append(x.float().cpu())
    return tuple(out)


def final_composite(source_u8: torch.Tensor, edit_rgb: torch.Tensor, alpha: torch.Tensor,
                    model_composite: torch.Tensor | None = None, recover_semi_transparent: bool = False) -> torch.Tensor:
    """Eq. 2 over the untouched source (uint8 `[T, H, W, 3]`); where alpha is 0 the source bytes are kept.

    With recovery (eq. 3), the source under semi-transparent alpha is replaced by what the model's
    composite implies lies there."""
    base = source_u8
    if recover_semi_transparent:
        if model_composite is None:
            raise ValueError("recover_semi_transparent needs the model's composite")
        preserved = layers.recover_preserved(model_composite, edit_rgb, alpha, source_u8.float() / 255)
        base = torch.where(alpha > 0, layers.to_uint8(preserved), source_u8)
    return layers.composite_uint8(base, edit_rgb, alpha)


@torch.no_grad()
def edit(
    source_frames: torch.Tensor,
    prompt: str | None,
    model,
    vae,
    text_encoder=None,
    context: torch.Tensor | None = None,
    negative_prompt: str | None = "",
    negative_context: torch.Tensor | None = None,
    mask_frames: torch.Tensor | None = None,
    steps: int = 50,
    cfg: float = 5.0,
    shift: float = 5.0,
    seed: int = 0,
    sampler: str = "unipc",
    frame_policy: str = "error",
    alpha_cutoff: float = 0.0,
    recover_semi_transparent: bool = False,
    batch_cfg: bool = True,
    callback: Callable[[StepInfo], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    work_size: tuple[int, int] | None = None,
) -> EditResult:
    """Run a Vera edit.

    source_frames: `[T, H, W, 3]` uint8 or float in [0, 1]. mask_frames: optional `[T, H, W]` or
    `[T, H, W, 1]` in [0, 1], 1 = region that may change (background-change task).
    prompt / negative_prompt need `text_encoder`; or pass `context` / `negative_context` `[B, L, text_dim]`.
    cfg > 1 needs a negative (prompt or context). alpha_cutoff: matte values below it count as 0.
    batch_cfg: run cond and uncond as one batch (faster; set False to halve activation memory).
    work_size: (height, width), multiples of 16, to run the model at (e.g. a small model's training
    size); the layers are scaled back to the source size and composited over the full-size source,
    so untouched pixels stay bit-identical at the source's own resolution.
    """
    timings, start = {}, time.perf_counter()
    device = next(model.parameters()).device
    ctx = encode_prompt(text_encoder, prompt, context, "prompt")
    if ctx is None:
        raise ValueError("prompt: give a text prompt (with a text encoder) or precomputed `context` embeddings")
    neg = encode_prompt(text_encoder, negative_prompt, negative_context, "negative_prompt") if cfg != 1.0 else None
    if cfg != 1.0 and neg is None:
        raise ValueError("cfg != 1 needs a negative prompt or negative_context; pass one or set cfg=1")
    timings["text_s"] = time.perf_counter() - start

    t = time.perf_counter()
    encoded = encode_source(vae, source_frames, mask_frames, frame_policy, work_size)
    timings["encode_s"] = time.perf_counter() - t

    t = time.perf_counter()
    mask_latent = None if encoded.mask_latent is None else encoded.mask_latent.to(device)
    latents = sample(model, ctx.to(device), encoded.source_latent.to(device), mask_latent,
                     None if neg is None else neg.to(device), steps=steps, cfg=cfg, shift=shift, seed=seed,
                     sampler=sampler, batch_cfg=batch_cfg, callback=callback, should_stop=should_stop)
    timings["sample_s"] = time.perf_counter() - t

    t = time.perf_counter()
    edit_rgb, alpha, model_comp = decode_layers(vae, latents, encoded)
    timings["decode_s"] = time.perf_counter() - t

    alpha = layers.quantize_alpha(alpha, alpha_cutoff)
    final = final_composite(encoded.source_u8, edit_rgb, alpha, model_comp, recover_semi_transparent)
    timings["total_s"] = time.perf_counter() - start
    geo = encoded.geometry
    settings = dict(prompt=prompt, negative_prompt=negative_prompt if neg is not None else None, steps=steps, cfg=cfg,
                    shift=shift, seed=seed, sampler=sampler, frame_policy=frame_policy, alpha_cutoff=alpha_cutoff,
                    recover_semi_transparent=recover_semi_transparent, model_grid=geo.model,
                    source_size=(geo.original[0], *encoded.output_size), work_size=encoded.work_size)
    return EditResult(edit_rgb, alpha, model_comp, final, encoded.source_u8, latents, timings, settings)
