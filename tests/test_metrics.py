import math

import pytest
import torch

from vera.frames import metrics


def test_psnr_closed_form_and_regions():
    a = torch.zeros(2, 8, 8, 3)
    b = a.clone()
    b[0, :4] = 0.1  # mse over everything: 0.01 * 96 / 384
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(1 / (0.01 * 96 / 384)))
    region = torch.zeros(2, 8, 8, 1, dtype=torch.bool)
    region[1] = True
    assert metrics.psnr(a, b, region) == float("inf")
    assert metrics.psnr(a, b, torch.zeros_like(region)) is None
    assert metrics.psnr((a * 255).to(torch.uint8), (b * 255).round().to(torch.uint8)) == pytest.approx(
        10 * math.log10(1 / ((26 / 255) ** 2 * 96 / 384)))


def test_ssim_is_one_for_identical_and_lower_for_noise():
    x = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.6 * (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 0.5)).clamp(0, 1)
    assert 0.3 < metrics.ssim(x, noisy) < 0.9
    assert metrics.ssim(x, torch.rand(x.shape, generator=torch.Generator().manual_seed(2))) < 0.1


def test_matte_metrics_closed_form():
    ref = torch.zeros(1, 10, 10, 1)
    ref[0, :5] = 1  # 50 pixels
    pred = torch.zeros(1, 10, 10, 1)
    pred[0, :4] = 1  # 40 of them
    m = metrics.matte_metrics(pred, ref)
    assert m["iou"] == pytest.approx(40 / 50)
    assert m["sad"] == pytest.approx(10 / 1000) and m["mse"] == pytest.approx(10 / 100)
    assert m["gradient"] > 0 and metrics.matte_metrics(ref, ref)["gradient"] == pytest.approx(0, abs=1e-9)


def test_flicker_and_exactness():
    frames = torch.zeros(3, 4, 4, 3)
    frames[1] = 10 / 255
    f = metrics.flicker(frames)
    assert f["mean_abs_frame_diff"] == pytest.approx(10) and f["score"] == pytest.approx(245 / 255)
    src = torch.randint(0, 255, (2, 4, 4, 3), dtype=torch.uint8)
    out = src.clone()
    alpha = torch.zeros(2, 4, 4, 1)
    alpha[0, 0, 0] = 0.5
    out[0, 0, 0] = 0
    out[1, 1, 1] ^= 1  # a changed pixel the matte says is untouched
    assert metrics.preserved_exact_fraction(out, src, alpha) == pytest.approx(30 / 31)


def test_mean_metrics_reports_exact_counts():
    rows = [dict(psnr=float("inf"), alpha=dict(iou=1.0)), dict(psnr=30.0, alpha=dict(iou=0.5)), dict(psnr=None)]
    m = metrics.mean_metrics(rows)
    assert m["psnr"] == 30.0 and m["psnr_exact_count"] == 1 and m["alpha"]["iou"] == 0.75
    from vera.media.files import json_safe

    inf = float("inf")
    assert json_safe({"a": [inf, float("nan"), (1, -inf)]}) == {"a": ["inf", "nan", [1, "-inf"]]}
