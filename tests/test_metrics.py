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


def _edit(changed_preserved: bool):
    """A 10-frame edit: final is the source under alpha == 0 (or, with `changed_preserved`, has a
    few changed bytes there too), a model composite close to the source."""
    g = torch.Generator().manual_seed(3)
    source = torch.randint(0, 256, (10, 24, 32, 3), generator=g, dtype=torch.uint8)
    alpha = torch.zeros(10, 24, 32, 1)
    alpha[:, 6:18, 8:20] = torch.rand(10, 12, 12, 1, generator=g).mul(255).round().div(255)
    final = torch.where(alpha > 0, torch.randint(0, 256, source.shape, generator=g,
                                                 dtype=torch.uint8), source)
    if changed_preserved:
        final[2:5, 0, :4] ^= 3
    model = (source.float() / 255 + 0.01 * torch.randn(source.shape, generator=g)).clamp(0, 1)
    return final, source, alpha, model


def _assert_same(ours, theirs):
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if isinstance(value, dict):
            _assert_same(ours[key], value)
        elif value is None or math.isinf(value):
            assert ours[key] == value, key
        else:
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


@pytest.mark.parametrize("changed_preserved", [False, True])
def test_preservation_tally_over_chunks_equals_edit_metrics(changed_preserved):
    final, source, alpha, model = _edit(changed_preserved)
    tally = metrics.PreservationTally()
    for start, end in ((0, 1), (1, 6), (6, 10)):
        tally.add(final[start:end], source[start:end], alpha[start:end], model[start:end])
    whole = metrics.edit_metrics(final, source, alpha, model_composite=model)
    ours = tally.result()
    _assert_same(ours, whole)
    if not changed_preserved:
        assert ours["preserved_exact"] == 1.0 and ours["preserved_psnr"] == float("inf")
    else:
        untouched = int((alpha == 0).sum())
        assert ours["preserved_exact"] == (untouched - 12) / untouched  # counted, not averaged
    assert tally.edited_fraction == pytest.approx(float((alpha > 0).float().mean()), rel=1e-6)
    plain = metrics.PreservationTally()
    plain.add(final, source, alpha)
    assert "model_composite" not in plain.result()
    with pytest.raises(ValueError, match="every chunk or for none"):
        plain.add(final, source, alpha, model)
