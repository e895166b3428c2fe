"""Preservation, matte and temporal metrics for layered edits.

Frames are `[T, H, W, C]` float in [0, 1] (uint8 accepted and scaled); mattes `[T, H, W, 1]`.
Region masks are boolean `[T, H, W, 1]`; a PSNR over an empty region is None.
"""
from __future__ import annotations

import math

import torch

INF = float("inf")


def as_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()


def psnr(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor | None = None) -> float | None:
    """PSNR in dB (peak 1.0) over all pixels or over `region`; inf when identical there."""
    diff = (as_float(a) - as_float(b)) ** 2
    if region is not None:
        region = region.expand_as(diff)
        if not region.any():
            return None
        diff = diff[region]
    mse = diff.mean().item()
    return INF if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor | None = None, window: int = 7) -> float | None:
    """Mean SSIM (Gaussian window, kornia) over all pixels or over `region`."""
    import kornia

    x, y = as_float(a).permute(0, 3, 1, 2), as_float(b).permute(0, 3, 1, 2)
    smap = kornia.metrics.ssim(x, y, window_size=window, max_val=1.0).permute(0, 2, 3, 1)
    if region is not None:
        region = region.expand_as(smap)
        if not region.any():
            return None
        return smap[region].mean().item()
    return smap.mean().item()


def flicker(frames: torch.Tensor) -> dict[str, float]:
    """Temporal flicker: mean absolute difference of consecutive frames in 8-bit levels, and the
    VBench-style score (255 - that) / 255 (1 = perfectly steady)."""
    x = as_float(frames) * 255
    if x.shape[0] < 2:
        return dict(mean_abs_frame_diff=0.0, score=1.0)
    mad = (x[1:] - x[:-1]).abs().mean().item()
    return dict(mean_abs_frame_diff=mad, score=(255 - mad) / 255)


def _gradient_magnitude(alpha: torch.Tensor, sigma: float = 1.4) -> torch.Tensor:
    import kornia

    x = alpha.permute(0, 3, 1, 2)
    size = 2 * math.ceil(3 * sigma) + 1
    x = kornia.filters.gaussian_blur2d(x, (size, size), (sigma, sigma))
    g = kornia.filters.spatial_gradient(x, normalized=True)
    return torch.sqrt((g ** 2).sum(dim=2) + 1e-12)


def matte_metrics(alpha: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Alpha matte errors vs a reference (matting conventions, averaged per frame):
    SAD (sum of absolute differences / 1000), MSE, gradient error (/1000), IoU at 0.5."""
    a, r = as_float(alpha), as_float(reference)
    frames = a.shape[0]
    sad = (a - r).abs().sum().item() / 1000 / frames
    mse = ((a - r) ** 2).mean().item()
    grad = ((_gradient_magnitude(a) - _gradient_magnitude(r)) ** 2).sum().item() / 1000 / frames
    pa, pr = a >= 0.5, r >= 0.5
    union = (pa | pr).sum().item()
    iou = 1.0 if union == 0 else (pa & pr).sum().item() / union
    return dict(sad=sad, mse=mse, gradient=grad, iou=iou)


def preserved_exact_fraction(final_u8: torch.Tensor, source_u8: torch.Tensor, alpha: torch.Tensor) -> float | None:
    """Share of pixels the matte leaves untouched (alpha == 0) whose output bytes equal the source's."""
    untouched = (as_float(alpha) == 0)[..., 0]
    if not untouched.any():
        return None
    equal = (final_u8 == source_u8).all(dim=-1)
    return equal[untouched].float().mean().item()


def edit_metrics(final, source, alpha, reference_composite=None, reference_alpha=None, model_composite=None) -> dict:
    """Every metric for one edit. final/source uint8 `[T, H, W, 3]`; alpha our matte; references optional.

    preserved region = where the reference alpha is 0 (or our alpha when no reference is given)."""
    ref_alpha = reference_alpha if reference_alpha is not None else alpha
    preserved = as_float(ref_alpha) == 0
    out = dict(
        preserved_exact=preserved_exact_fraction(final, source, alpha),
        preserved_psnr=psnr(final, source, preserved), preserved_ssim=ssim(final, source, preserved),
        full_frame_psnr_vs_source=psnr(final, source), flicker=flicker(final),
    )
    if reference_composite is not None:
        out.update(composite_psnr=psnr(final, reference_composite), composite_ssim=ssim(final, reference_composite))
    if reference_alpha is not None:
        out["alpha"] = matte_metrics(alpha, reference_alpha)
    if model_composite is not None:
        out["model_composite"] = dict(preserved_psnr=psnr(model_composite, source, preserved),
                                      composite_psnr=None if reference_composite is None else psnr(model_composite, reference_composite))
    return out


def mean_metrics(records: list[dict]) -> dict:
    """Average nested metric dicts over samples; PSNRs average their per-sample values and report
    how many were exact (inf); None values are skipped."""
    out = {}
    keys = {k for r in records for k in r}
    for key in sorted(keys):
        values = [r[key] for r in records if r.get(key) is not None]
        if not values:
            out[key] = None
        elif isinstance(values[0], dict):
            out[key] = mean_metrics(values)
        else:
            finite = [v for v in values if not math.isinf(v)]
            out[key] = INF if not finite else sum(finite) / len(finite)
            if len(finite) < len(values):
                out[key + "_exact_count"] = len(values) - len(finite)
    return out
