"""`python -m vera edit` with the embedded vera-tiny on a 17-frame real clip."""
import json

import pytest
import torch

from vera.__main__ import main
from vera.edit.bundle import tiny_available
from vera.media.video import read_png, read_rgba_video

pytestmark = pytest.mark.skipif(not tiny_available(), reason="vera-tiny weights are not in vera/assets/vera-tiny")


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    out = tmp_path_factory.mktemp("edit")
    code = main(["edit", "--prompt", "add a large red circle moving from left to right", "--out", str(out),
                 "--frames", "17", "--steps", "6", "--rgba", "both"])
    assert code in (0, None)
    return out


def test_writes_every_file(edited):
    for name in ("edit_layer_rgba.mov", "edit_layer_rgba.webm", "alpha.mp4", "final_composite.mp4", "side_by_side.png",
                 "side_by_side.mp4", "report.json"):
        assert (edited / name).is_file() and (edited / name).stat().st_size > 0, name
    for folder, prefix in (("edit_layer_rgba", "edit"), ("alpha", "alpha"), ("final_composite", "final")):
        assert len(list((edited / folder).glob(f"{prefix}_*.png"))) == 17
    report = json.loads((edited / "report.json").read_text())
    assert report["frames"] == 17 and report["size"] == [176, 144] and report["model"] == "vera-tiny"
    assert report["preservation"]["preserved_exact"] == 1.0
    assert set(report["timings"]) >= {"sample_s", "decode_write_s", "total_s", "load_s"}


def test_rgba_files_read_back_with_the_alpha_they_were_written_with(edited):
    alpha = torch.stack([read_png(edited / f"alpha/alpha_{i:05d}.png")[..., 0] for i in range(17)])
    png = torch.stack([read_png(edited / f"edit_layer_rgba/edit_{i:05d}.png") for i in range(17)])
    assert png.shape == (17, 144, 176, 4) and torch.equal(png[..., 3], alpha)
    assert 0 < (alpha > 0).float().mean() < 1  # the matte is neither empty nor everything
    for suffix, tolerance in (("mov", 1), ("webm", 1)):
        video = read_rgba_video(edited / f"edit_layer_rgba.{suffix}")
        assert video.shape == png.shape
        assert (video[..., 3].int() - alpha.int()).abs().max() <= tolerance, suffix


def test_the_edit_layer_takes_the_prompt_colour(edited):
    """The quick-start prompt asks for red: inside the matte the edit layer is clearly red."""
    alpha = torch.stack([read_png(edited / f"alpha/alpha_{i:05d}.png")[..., 0] for i in range(17)])
    edit = torch.stack([read_png(edited / f"edit_layer_rgba/edit_{i:05d}.png") for i in range(17)])
    red, green, blue = edit[alpha > 127][:, :3].float().mean(0) / 255
    assert red > green + 0.2 and red > blue + 0.2, (red, green, blue)


def test_final_composite_png_keeps_source_bytes_where_alpha_is_zero(edited):
    from vera.data.clips import bundled_clip
    from vera.media.video import read_video

    source, _ = read_video(bundled_clip(), max_frames=17)
    final = torch.stack([read_png(edited / f"final_composite/final_{i:05d}.png") for i in range(17)])
    alpha = torch.stack([read_png(edited / f"alpha/alpha_{i:05d}.png") for i in range(17)])
    untouched = alpha[..., 0] == 0
    assert torch.equal(final[untouched], source[untouched])


def test_fp8_weights_keep_untouched_pixels_bit_exact(tmp_path):
    from vera.data.clips import bundled_clip
    from vera.media.video import read_video

    out = tmp_path / "fp8"
    assert main(["edit", "--prompt", "add a small blue square moving from top to bottom",
                 "--out", str(out), "--steps", "4", "--weight-dtype", "fp8"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["weight_dtype"] == "fp8" and report["preservation"]["preserved_exact"] == 1.0
    source, _ = read_video(bundled_clip(), max_frames=17)
    final = torch.stack([read_png(out / f"final_composite/final_{i:05d}.png") for i in range(17)])
    alpha = torch.stack([read_png(out / f"alpha/alpha_{i:05d}.png") for i in range(17)])[..., 0]
    assert 0 < (alpha > 0).float().mean() < 1
    assert torch.equal(final[alpha == 0], source[alpha == 0])


def test_bad_input_is_named(tmp_path, capsys):
    assert main(["edit", "--input", str(tmp_path / "missing.mp4"), "--prompt", "x", "--out", str(tmp_path / "o")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert main(["edit", "--prompt", "x", "--out", str(tmp_path / "o"), "--size", "60x64"]) == 2


def test_eval_reports_vera_and_the_baseline_per_task(tmp_path):
    from vera.data.clips import load_background_clips
    from vera.data.layout import write_manifest, write_sample
    from vera.data.synthetic import SyntheticBuilder
    from vera.edit.bundle import load_bundle
    from vera.evaluation.evaluate import evaluate, table
    from vera.model.single import WanVideoModel

    builder = SyntheticBuilder(load_background_clips(max_frames=20), frames=9, height=64, width=64)
    write_manifest(tmp_path, [write_sample(tmp_path, builder.sample(9, 0, t)) for t in ("object_addition", "background_change")])
    bundle = load_bundle("vera-tiny", "fp32", "cpu")
    baseline = WanVideoModel(bundle.model.config, source_conditioning=True).eval()
    settings = bundle.defaults.updated(steps=3, alpha_cutoff=0.1)
    report = evaluate(tmp_path, bundle, baseline, settings)
    for who in ("vera", "baseline"):
        assert set(report[who]) == {"object_addition", "background_change"}
    for task in report["vera"].values():
        assert task["count"] == 1 and task["preserved_exact"] == 1.0 and 0 <= task["alpha"]["iou"] <= 1
    assert report["baseline"]["object_addition"]["preserved_exact"] < 1.0  # it regenerates every pixel
    assert "baseline" in table(report) and report["settings"]["alpha_cutoff"] == 0.1


def test_the_source_is_named_and_its_sound_stays_in_sync_to_the_sample(tmp_path):
    from fractions import Fraction

    from helpers import lag_of, pink_noise

    from vera.data.clips import bundled_clip
    from vera.media.video import read_audio, read_video, write_mp4

    rate, sample_rate, start = Fraction(30000, 1001), 48000, 4
    frames, _ = read_video(bundled_clip(), max_frames=40)
    wave = pink_noise(int(40 / rate * sample_rate))[None]
    sound = {"waveform": wave, "sample_rate": sample_rate}
    source = write_mp4(frames, tmp_path / "shot with sound.mp4", rate, audio=sound)
    out = tmp_path / "out"
    assert main(["edit", "--input", str(source), "--start", str(start), "--frames", "17",
                 "--prompt", "add a small green square moving from top to bottom", "--steps", "2",
                 "--out", str(out)]) == 0
    clip = json.loads((out / "settings.json").read_text())["clip"]
    assert clip["source"] == "shot with sound.mp4" and clip["start_frame"] == start
    assert clip["fps"] == "30000/1001" and clip["audio"] is True
    # the source's own track under the frames used vs the composite's: no shift, same sound
    theirs = read_audio(source, start / rate, 17 / rate)["waveform"][0, 0]
    ours = read_audio(out / "final_composite.mp4")["waveform"][0, 0]
    lag, correlation = lag_of(theirs, ours, most=2048)
    assert lag == 0 and correlation > 0.9, (lag, correlation)


def test_loras_are_named_in_settings_and_report(tmp_path):
    from helpers import tiny_lora

    lora = tiny_lora(tmp_path / "style.safetensors")
    out = tmp_path / "out"
    assert main(["edit", "--prompt", "add a small red square moving from left to right",
                 "--steps", "2", "--lora", f"{lora}:0.5:edit", "--out", str(out)]) == 0
    line = "LoRA style.safetensors: applied 4 of 4 tensors (2 layers)"
    assert json.loads((out / "settings.json").read_text())["loras"] == [line]
    assert json.loads((out / "report.json").read_text())["loras"] == [line]
