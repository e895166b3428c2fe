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
    return psnr_of_mse(diff.mean().item())


def psnr_of_mse(mse: float | None) -> float | None:
    """PSNR in dB (peak 1.0) of a mean squared error; inf for 0, None for None."""
    if mse is None:
        return None
    return INF if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor | None = None, window: int = 7) -> float | None:
    """Mean SSIM (Gaussian window, kornia) over all pixels or over `region`."""
    smap = ssim_map(a, b, window)
    if region is not None:
        region = region.expand_as(smap)
        if not region.any():
            return None
        return smap[region].mean().item()
    return smap.mean().item()


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Per-pixel SSIM `[T, H, W, C]` (Gaussian window, kornia; each frame on its own)."""
    import kornia

    x, y = as_float(a).permute(0, 3, 1, 2), as_float(b).permute(0, 3, 1, 2)
    return kornia.metrics.ssim(x, y, window_size=window, max_val=1.0).permute(0, 2, 3, 1)


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


class _Mean:
    """A float64 sum and a count of what it sums; `value` is None while the count is 0."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def add(self, values: torch.Tensor) -> None:
        self.total += values.double().sum().item()
        self.count += values.numel()

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


class PreservationTally:
    """`edit_metrics(final, source, alpha, model_composite=...)` (no references) gathered chunk by
    chunk, so a long shot is measured without holding it: sums and counts in float64, and the
    previous chunk's last frame for the flicker across chunk borders.

        tally = PreservationTally()
        for chunk in chunks:
            tally.add(final, source, alpha, model)  # [t, H, W, C] each
        tally.result()  # the dict edit_metrics gives for the whole shot
    """

    def __init__(self):
        self.untouched = self.untouched_equal = 0  # pixels where alpha == 0, and equal there
        self.pixels = self.edited = 0  # matte pixels, and those with alpha > 0
        self._preserved_error, self._full_error = _Mean(), _Mean()
        self._preserved_ssim, self._frame_change = _Mean(), _Mean()
        self._model_error: _Mean | None = None
        self._last: torch.Tensor | None = None  # the final's last frame so far, `[1, H, W, C]`

    def add(self, final_u8: torch.Tensor, source_u8: torch.Tensor, alpha: torch.Tensor,
            model_composite: torch.Tensor | None = None) -> None:
        """final/source uint8 `[t, H, W, 3]`, alpha `[t, H, W, 1]`, model_composite float
        `[t, H, W, 3]` (for every chunk or for none)."""
        if self.pixels and (model_composite is None) != (self._model_error is None):
            raise ValueError("model_composite must be given for every chunk or for none")
        preserved = as_float(alpha) == 0
        self.pixels += alpha.numel()
        self.edited += int((alpha > 0).sum())
        untouched = preserved[..., 0]
        self.untouched += int(untouched.sum())
        self.untouched_equal += int((final_u8 == source_u8).all(dim=-1)[untouched].sum())
        error = (as_float(final_u8) - as_float(source_u8)) ** 2
        self._full_error.add(error)
        self._preserved_error.add(error[preserved.expand_as(error)])
        smap = ssim_map(final_u8, source_u8)
        self._preserved_ssim.add(smap[preserved.expand_as(smap)])
        frames = as_float(final_u8) * 255
        if self._last is not None:
            frames = torch.cat([self._last, frames])
        self._frame_change.add((frames[1:] - frames[:-1]).abs())
        self._last = frames[-1:]
        if model_composite is not None:
            self._model_error = self._model_error or _Mean()
            model_error = (as_float(model_composite) - as_float(source_u8)) ** 2
            self._model_error.add(model_error[preserved.expand_as(model_error)])

    @property
    def edited_fraction(self) -> float | None:
        """Share of matte pixels with alpha > 0 (None before any chunk)."""
        return self.edited / self.pixels if self.pixels else None

    def result(self) -> dict:
        """What `edit_metrics` gives for all the chunks as one shot: preserved_exact,
        preserved_psnr, preserved_ssim, full_frame_psnr_vs_source, flicker and, with model
        composites, model_composite.preserved_psnr."""
        mad = self._frame_change.value
        out = {
            "preserved_exact": (self.untouched_equal / self.untouched if self.untouched
                                else None),
            "preserved_psnr": psnr_of_mse(self._preserved_error.value),
            "preserved_ssim": self._preserved_ssim.value,
            "full_frame_psnr_vs_source": psnr_of_mse(self._full_error.value),
            "flicker": ({"mean_abs_frame_diff": 0.0, "score": 1.0} if mad is None
                        else {"mean_abs_frame_diff": mad, "score": (255 - mad) / 255}),
        }
        if self._model_error is not None:
            out["model_composite"] = {"preserved_psnr": psnr_of_mse(self._model_error.value),
                                      "composite_psnr": None}
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
