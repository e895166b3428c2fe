"""Compositing maths and alpha utilities.

Frames here are `[T, H, W, C]` float tensors in [0, 1] (ComfyUI's IMAGE layout); alpha is
`[T, H, W, 1]` with 1 = opaque edit layer, 0 = untouched source.
"""
from __future__ import annotations

import math

import torch


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def composite(source: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Paper eq. 2 on floats: (1 - alpha) * source + alpha * edit; exactly `source` where
    alpha == 0."""
    return torch.where(alpha > 0, (1 - alpha) * source + alpha * edit, source)


COMPOSITING = (
    "final = (1 - alpha) * source + alpha * edit_layer (Vera eq. 2) on sRGB-encoded values (the "
    "code values of the PNGs and videos, as the model was trained), straight alpha, edit layer "
    "and alpha on the 8-bit grid of their files, rounded to 8 bits; exactly the source where "
    "alpha is 0. To reproduce it in a linear-light compositor, read source and layers as raw "
    "(no colour conversion) or use the srgb EXRs; comping the linear EXRs in linear light "
    "differs at soft edges.")


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def on_8bit_grid(frames: torch.Tensor) -> torch.Tensor:
    """Float frames rounded to the 8-bit values their files hold (k / 255), so the composite
    made from them is the one any tool rebuilds from the files."""
    return (frames.clamp(0, 1) * 255).round() / 255


def quantize_alpha(alpha: torch.Tensor, cutoff: float = 0.0) -> torch.Tensor:
    """Alpha on the 8-bit grid it is saved with, values below `cutoff` set to 0, so the composite
    and the written matte agree: where the saved alpha is 0 the output is the source, bit for bit."""
    alpha = on_8bit_grid(alpha)
    return torch.where(alpha < cutoff, torch.zeros_like(alpha), alpha)


def recover_preserved(composite_frames: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor,
                      source: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Paper eq. 3: preserved = (composite - alpha * edit) / (1 - alpha) where 0 < alpha < 1 - eps,
    the source elsewhere (alpha == 0 needs no recovery, alpha ~ 1 leaves nothing to recover)."""
    semi = (alpha > 0) & (alpha < 1 - eps)
    recovered = ((composite_frames - alpha * edit) / (1 - alpha).clamp_min(eps)).clamp(0, 1)
    return torch.where(semi, recovered, source)


def final_composite(source: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor,
                    model_composite: torch.Tensor | None = None,
                    recover_semi_transparent: bool = False) -> torch.Tensor:
    """The edit's final frames: eq. 2 over the untouched source, optionally over the eq. 3 recovery.

    source `[T, H, W, 3]` uint8 or float in [0, 1]; edit `[T, H, W, 3]` and alpha `[T, H, W, 1]`
    float; model_composite `[T, H, W, 3]` float, needed for recovery. The output has the source's
    dtype (uint8 is rounded) and holds the source's own values wherever alpha == 0. With recovery,
    the source under semi-transparent alpha is replaced by what the model's composite implies lies
    there (shadows change what is under them)."""
    base = source.float() / 255 if source.dtype == torch.uint8 else source.float()
    edit, alpha = edit.to(base), alpha.to(base)
    if recover_semi_transparent:
        if model_composite is None:
            raise ValueError("recover_semi_transparent needs the model's composite "
                             "(model_composite)")
        base = recover_preserved(model_composite.to(base), edit, alpha, base)
    mixed = composite(base, edit, alpha)
    mixed = to_uint8(mixed) if source.dtype == torch.uint8 else mixed.to(source.dtype)
    return torch.where(alpha > 0, mixed, source)


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-frame Gaussian blur (kornia). `[T, H, W, C]` -> same."""
    import kornia

    if sigma <= 0:
        return frames
    size = 2 * math.ceil(3 * sigma) + 1
    return _nhwc(kornia.filters.gaussian_blur2d(_nchw(frames), (size, size), (sigma, sigma), border_type="reflect"))


def fill_edit_layer(edit: torch.Tensor, alpha: torch.Tensor, composite_frames: torch.Tensor, sigma: float = 8.0) -> torch.Tensor:
    """Training target rule: the edit layer is undefined where alpha == 0, so fill it there with a
    Gaussian-smoothed copy of the composite."""
    return torch.where(alpha > 0, edit, gaussian_blur(composite_frames, sigma))


def pack_rgba(rgb: torch.Tensor, alpha: torch.Tensor, premultiply: bool = False) -> torch.Tensor:
    """`[T, H, W, 3]` + `[T, H, W, 1]` -> `[T, H, W, 4]` (straight alpha unless `premultiply`)."""
    return torch.cat([rgb * alpha if premultiply else rgb, alpha], dim=-1)


def unpack_rgba(rgba: torch.Tensor, premultiplied: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    if premultiplied:
        rgb = torch.where(alpha > 0, rgb / alpha.clamp_min(1e-8), torch.zeros_like(rgb)).clamp(0, 1)
    return rgb, alpha


def threshold(alpha: torch.Tensor, level: float = 0.5) -> torch.Tensor:
    return (alpha >= level).to(alpha.dtype)


def feather(alpha: torch.Tensor, radius: float) -> torch.Tensor:
    """Soften matte edges with a Gaussian of standard deviation radius / 2."""
    return gaussian_blur(alpha, radius / 2).clamp(0, 1) if radius > 0 else alpha


def grow(alpha: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (pixels < 0) the matte with a disc of that radius (kornia)."""
    import kornia

    if pixels == 0:
        return alpha
    r = abs(int(pixels))
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    kernel = ((yy**2 + xx**2) <= r * r).to(alpha.dtype).to(alpha.device)
    op = kornia.morphology.dilation if pixels > 0 else kornia.morphology.erosion
    return _nhwc(op(_nchw(alpha), kernel))


def temporal_smooth(alpha: torch.Tensor, window: int) -> torch.Tensor:
    """Centered moving average over `window` frames (odd), edges replicated, to calm matte flicker."""
    if window <= 1:
        return alpha
    half = window // 2
    padded = torch.cat([alpha[:1].expand(half, *alpha.shape[1:]), alpha, alpha[-1:].expand(half, *alpha.shape[1:])])
    return padded.unfold(0, 2 * half + 1, 1).mean(dim=-1)


def difference_heatmap(source: torch.Tensor, output: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """Per-pixel |source - output| (max over channels) x gain as a black-red-yellow-white ramp.
    Untouched pixels are exactly black. `[T, H, W, 3]` x2 -> `[T, H, W, 3]`."""
    d = ((source - output).abs().amax(dim=-1, keepdim=True) * gain).clamp(0, 1)
    return torch.cat([(d * 3).clamp(0, 1), (d * 3 - 1).clamp(0, 1), (d * 3 - 2).clamp(0, 1)], dim=-1)


def checkerboard(height: int, width: int, cell: int = 8, light: float = 0.8, dark: float = 0.55) -> torch.Tensor:
    """Grey checkerboard `[H, W, 3]`, the usual backdrop for showing transparency."""
    ys, xs = torch.meshgrid(torch.arange(height) // cell, torch.arange(width) // cell, indexing="ij")
    board = torch.where((ys + xs) % 2 == 0, torch.tensor(light), torch.tensor(dark))
    return board.unsqueeze(-1).expand(height, width, 3)


def over_checkerboard(rgb: torch.Tensor, alpha: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """An edit layer `[T, H, W, 3]` with its matte `[T, H, W, 1]` shown over a checkerboard."""
    return composite(checkerboard(rgb.shape[1], rgb.shape[2], cell).to(rgb), rgb, alpha)
