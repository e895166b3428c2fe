"""What the saved files contain: exact frame rates, BT.709 tags and matrix, audio, metadata,
EXR read back, file-name tokens, clip selection, auto work size and mask resizing."""
import json
import math
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from vera.edit.deliverables import ExrOptions, write_layer_files
from vera.frames import geometry
from vera.media import clip as clips
from vera.media import exr, naming, video

REC709 = (200, 60, 40)


def colour_frames(count=5, size=(48, 64), rgb=REC709):
    frames = torch.empty(count, *size, 3, dtype=torch.uint8)
    frames[:] = torch.tensor(rgb, dtype=torch.uint8)
    return frames


def sine(seconds: float, rate: int = 48000, channels: int = 2) -> dict:
    t = torch.arange(int(seconds * rate)) / rate
    wave = 0.3 * torch.sin(2 * math.pi * 440 * t).expand(channels, -1)
    return {"waveform": wave.unsqueeze(0).contiguous(), "sample_rate": rate}


def stream_info(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        frame = next(container.decode(stream))
        return dict(rate=Fraction(stream.average_rate), primaries=cc.color_primaries,
                    trc=cc.color_trc, matrix=cc.colorspace, frame_matrix=frame.colorspace,
                    audio=len(container.streams.audio), metadata=dict(container.metadata),
                    pixel_format=frame.format.name)


@pytest.mark.parametrize("fps", [Fraction(24000, 1001), Fraction(25), 23.976, 29.97])
def test_exact_rates(fps):
    rate = video.exact_rate(fps)
    expected = {23.976: Fraction(24000, 1001), 29.97: Fraction(30000, 1001)}.get(fps, fps)
    assert rate == expected and isinstance(rate, Fraction)
    assert video.exact_rate(12.5) == Fraction(25, 2)
    for bad in (0, -3, float("nan"), "24", True):
        with pytest.raises(ValueError, match="frame rate"):
            video.exact_rate(bad)


@pytest.mark.parametrize("suffix", [".mov", ".webm", ".mp4"])
def test_videos_are_bt709_tagged_at_the_exact_rate(tmp_path, suffix):
    """(200, 60, 40) comes back within a few levels with the BT.709 matrix; BT.601 would give
    (213, 72, 37) in an app that assumes BT.709 for HD (the issue's measurement)."""
    rgb = colour_frames()
    path = tmp_path / f"clip{suffix}"
    rate = Fraction(24000, 1001)
    if suffix == ".mp4":
        video.write_mp4(rgb, path, rate)
    else:
        alpha = torch.full((*rgb.shape[:3], 1), 255, dtype=torch.uint8)
        video.write_rgba_video(torch.cat([rgb, alpha], -1), path, rate)
    info = stream_info(path)
    assert info["rate"] == rate
    assert (info["primaries"], info["trc"], info["matrix"]) == (1, 1, 1), info
    if suffix == ".mov":  # what the README's file table says a decoder reports
        assert info["pixel_format"] == "yuva444p12le", info
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        # decode with the BT.709 matrix the file declares
        back = frame.reformat(format="rgb24", src_colorspace="ITU709", src_color_range="MPEG")
        centre = back.to_ndarray()[24, 32].astype(int)
    assert np.abs(centre - np.array(REC709)).max() <= 3, centre


def test_mp4_carries_the_audio_and_mov_the_metadata(tmp_path):
    frames = colour_frames(25)
    video.write_mp4(frames, tmp_path / "a.mp4", 25, audio=sine(1.0))
    assert stream_info(tmp_path / "a.mp4")["audio"] == 1
    back = video.read_audio(tmp_path / "a.mp4")
    assert back["sample_rate"] == 48000 and back["waveform"].shape[1] == 2
    assert abs(back["waveform"].shape[2] / 48000 - 1.0) < 0.05
    span = video.read_audio(tmp_path / "a.mp4", 0.5, 0.25)  # stops decoding after the span
    assert torch.equal(span["waveform"], back["waveform"][..., 24000:36000])
    rgba = torch.cat([frames, torch.full((25, 48, 64, 1), 255, dtype=torch.uint8)], -1)
    meta = {"prompt": {"1": {"class_type": "VeraSampler"}}, "workflow": {"nodes": []}}
    video.write_rgba_video(rgba, tmp_path / "a.mov", 25, meta)
    found = stream_info(tmp_path / "a.mov")["metadata"]
    assert json.loads(found["prompt"]) == meta["prompt"]
    assert json.loads(found["workflow"]) == meta["workflow"]


def test_layer_files_embed_metadata_write_settings_and_exr(tmp_path):
    from PIL import Image

    edit = torch.rand(3, 16, 24, 3)
    alpha = torch.zeros(3, 16, 24, 1)
    alpha[:, 4:12, 6:18] = 0.6
    final = (torch.rand(3, 16, 24, 3) * 255).to(torch.uint8)
    meta = {"prompt": {"3": {"inputs": {"text": "a red circle"}}}, "workflow": {"nodes": [1]}}
    files = write_layer_files(edit, alpha, final, tmp_path, Fraction(24000, 1001), name="s_",
                              metadata=meta, exr_options=ExrOptions("linear", "premultiplied"),
                              settings={"seed": 7}, audio=sine(0.2))
    png = Image.open(tmp_path / "s_final_composite" / "final_00000.png")
    assert json.loads(png.text["workflow"]) == meta["workflow"]
    assert json.loads(png.text["prompt"]) == meta["prompt"]
    assert "workflow" in Image.open(tmp_path / "s_edit_layer_rgba" / "edit_00001.png").text
    assert json.loads((tmp_path / "s_settings.json").read_text()) == {"seed": 7}
    assert stream_info(tmp_path / "s_final_composite.mp4")["audio"] == 1
    assert stream_info(tmp_path / "s_alpha.mp4")["rate"] == Fraction(24000, 1001)
    channels, header = exr.read_exr(tmp_path / files["edit_layer_exr"] / "edit_00001.exr")
    rgba = channels["RGBA"]
    assert rgba.dtype == np.float16 and rgba.shape == (16, 24, 4)
    a8 = torch.round(alpha[1] * 255) / 255
    e8 = torch.round(edit[1] * 255) / 255
    expected = torch.cat([exr.srgb_to_linear(e8) * a8, a8], -1).numpy()
    np.testing.assert_allclose(rgba.astype(np.float32), expected, atol=2e-3, rtol=1e-3)
    assert header["vera:transfer"] == "linear" and header["vera:alpha"] == "premultiplied"
    final_exr, _ = exr.read_exr(tmp_path / files["final_exr"] / "final_00002.exr")
    np.testing.assert_allclose(final_exr["RGB"].astype(np.float32),
                               exr.srgb_to_linear(final[2].float() / 255).numpy(), atol=2e-3,
                               rtol=1e-3)
    matte, _ = exr.read_exr(tmp_path / files["alpha_exr"] / "alpha_00000.exr")
    np.testing.assert_allclose(matte["Y"].astype(np.float32),
                               (torch.round(alpha[0] * 255) / 255).numpy()[..., 0], atol=1e-3)


def test_exr_round_trip_is_half_precision_exact(tmp_path):
    values = np.random.default_rng(0).random((8, 10, 4)).astype(np.float16)
    exr.write_exr(tmp_path / "x.exr", {"RGBA": values})
    back, _ = exr.read_exr(tmp_path / "x.exr")
    assert np.array_equal(back["RGBA"], values)
    straight = ExrOptions("srgb", "straight")
    assert straight.transfer == "srgb"
    with pytest.raises(ValueError, match="exr_transfer 'log'"):
        ExrOptions("log")
    x = torch.linspace(0, 1, 101)
    torch.testing.assert_close(exr.linear_to_srgb(exr.srgb_to_linear(x)), x, atol=1e-5, rtol=0)
    assert abs(float(exr.srgb_to_linear(torch.tensor(0.5))) - 0.2140) < 1e-3  # sRGB standard


def test_filename_tokens_expand_as_in_core():
    when = time.strptime("2026-03-04 05:06:07", "%Y-%m-%d %H:%M:%S")
    graph = {"12": {"class_type": "VeraSampler", "inputs": {"seed": 42, "positive": ["6", 0]},
                    "_meta": {"title": "Vera Sampler"}}}
    text = naming.expand_tokens("shots/%date:yyyy-MM-dd%/%date:hhmmss%_%year%%month%%day%_"
                                "%width%x%height%_s%Vera Sampler.seed%_%Nope.x%_%date:M-d%",
                                when, (480, 832), graph)
    assert text == "shots/2026-03-04/050607_20260304_832x480_s42_%Nope.x%_3-4"
    assert naming.safe_prefix(text) == (naming.Path("shots/2026-03-04"),
                                        "050607_20260304_832x480_s42__Nope.x__3-4")
    assert naming.expand_tokens("%Vera Sampler.positive%", when, None, graph) == \
        "%Vera Sampler.positive%"  # a link is not a value


def test_frame_selection_and_in_memory_clips():
    pick = clips.FrameSelection(start=2, count=4, stride=3)
    assert pick.indices(20) == [2, 5, 8, 11] and pick.indices(9) == [2, 5, 8]
    with pytest.raises(ValueError, match="start_frame 30 is past its last frame"):
        pick.__class__(start=30).indices(20)
    assert clips.FrameSelection(count=500).count == 500  # past MAX_FRAMES: sampled in windows
    with pytest.raises(ValueError, match="frame_count 100001: at most 100000 frames"):
        clips.FrameSelection(count=100_001)
    frames = torch.arange(20).view(20, 1, 1, 1).expand(20, 2, 2, 3)
    audio = {"waveform": torch.arange(20 * 100.).view(1, 1, -1), "sample_rate": 100 * 25}
    picked, clip = clips.select_clip(frames, pick, Fraction(25), audio)
    assert picked[:, 0, 0, 0].tolist() == [2, 5, 8, 11]
    assert clip.rate == Fraction(25, 3) and clip.start == 2 and clip.stride == 3
    wave = clip.audio["waveform"][0, 0]
    assert wave[0] == 200 and wave.shape[0] == 4 * 3 * 100  # from frame 2, 12 frames long


def test_read_clip_decodes_only_the_selected_frames_with_their_sound(tmp_path):
    frames = torch.arange(30, dtype=torch.uint8).mul(8).view(30, 1, 1, 1).expand(30, 32, 32, 3)
    path = tmp_path / "c.mp4"
    video.write_mp4(frames.contiguous(), path, Fraction(30000, 1001), audio=sine(1.2))
    picked, clip = clips.read_clip(str(path), clips.FrameSelection(4, 5, 2))
    assert picked.shape == (5, 32, 32, 3) and picked.dtype == torch.uint8
    assert (picked[:, 16, 16, 0].float() / 8).round().tolist() == [4, 6, 8, 10, 12]
    assert clip.rate == Fraction(15000, 1001) and clip.name == "c.mp4"
    seconds = clip.audio["waveform"].shape[-1] / clip.audio["sample_rate"]
    assert abs(seconds - 10 / float(Fraction(30000, 1001))) < 0.03


def test_auto_work_size_and_mask_resizing():
    assert geometry.auto_work_size(1080, 1920) == (480, 848)
    assert geometry.auto_work_size(2160, 3840) == (480, 848)
    assert geometry.auto_work_size(1920, 1080) == (848, 480)
    assert geometry.auto_work_size(144, 176) == (144, 176)  # small clips keep their size
    h, w = geometry.auto_work_size(1000, 1000)
    assert h % 16 == w % 16 == 0 and abs(h * w - 832 * 480) / (832 * 480) < 0.05
    hard = torch.zeros(1, 90, 160, 1)
    hard[:, 30:60, 40:120] = 1
    up = geometry.resize_mask(hard, (180, 320))
    assert set(up.unique().tolist()) == {0.0, 1.0} and up.mean() == hard.mean()
    soft = hard * 0.5 + 0.25
    assert len(geometry.resize_mask(soft, (45, 80)).unique()) > 2
    with pytest.raises(ValueError, match="mask is 160x90 but the video is 160x160"):
        geometry.resize_mask(hard, (160, 160))
    big = (torch.rand(3, 64, 96, 3) * 255).to(torch.uint8)
    torch.testing.assert_close(geometry.resize_uint8_frames(big, (32, 48), chunk=2),
                               geometry.resize_frames(big.float() / 255, (32, 48)))


def _layers(count=7, size=(20, 30)):
    """Smooth moving ramps (so lossy encodes of them are stable) under a box of graded alpha."""
    t = torch.arange(count).view(count, 1, 1, 1).float()
    y = torch.linspace(0, 1, size[0]).view(1, -1, 1, 1)
    x = torch.linspace(0, 1, size[1]).view(1, 1, -1, 1)
    tint = torch.tensor([0.9, 0.6, 0.3])
    edit = ((x * 0.7 + y * 0.2 + t * 0.02) * tint).clamp(0, 1)
    alpha = torch.zeros(count, *size, 1)
    ramp = torch.linspace(0.05, 1, 14).view(1, 1, 14, 1) * (0.8 + 0.02 * t)
    alpha[:, 4:14, 6:20] = ramp.expand(count, 10, 14, 1).mul(255).round().div(255)
    source = ((1 - x) * 150 + y * 80 + t * 3).expand(count, *size, 3).round().to(torch.uint8)
    final = torch.where(alpha > 0, (edit * 255).round().to(torch.uint8), source)
    return edit, alpha, final, source


def _files_under(root):
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def _close_encodes(a: torch.Tensor, b: torch.Tensor, frames: torch.Tensor) -> bool:
    """Two lossy H.264 encodes of the same `frames` [T, H, W, 3] uint8: each near the frames and
    the two within a level of each other on average (x264 need not give the same bytes twice on
    every machine; the stills are compared exactly)."""
    def mean_diff(p, q):
        return float((p.int() - q.int()).abs().float().mean())
    return (a.shape == b.shape == frames.shape and mean_diff(a, frames) < 4
            and mean_diff(b, frames) < 4 and mean_diff(a, b) < 1.0)


def test_layer_files_written_in_chunks_equal_one_write(tmp_path):
    from vera.edit.deliverables import LayerFileWriter, side_by_side_panel

    edit, alpha, final, source = _layers()
    rate, sound, meta = Fraction(25), sine(0.5), {"prompt": "a red circle"}
    options = {"audio": sound, "metadata": meta, "exr_options": ExrOptions("linear", "straight")}
    whole = write_layer_files(edit, alpha, final, tmp_path / "whole", rate, "both", "s_",
                              settings={"seed": 1}, **options)
    with LayerFileWriter(tmp_path / "chunked", rate, "both", "s_", side_by_side=True,
                         middle_frame=3, **options) as writer:
        for start, end in ((0, 2), (2, 3), (3, 7)):
            part = slice(start, end)
            writer.add(edit[part], alpha[part], final[part], source[part])
        files = writer.close({"seed": 1})
    assert writer.frames_written == 7
    assert files == {**whole, "side_by_side_png": "side_by_side.png",
                     "side_by_side_mp4": "side_by_side.mp4"}
    ours, theirs = _files_under(tmp_path / "chunked"), _files_under(tmp_path / "whole")
    stills = [k for k in theirs if k.endswith((".png", ".exr", ".json"))]
    assert len(stills) == 3 * 7 * 2 + 1
    for key in stills:
        assert ours[key].read_bytes() == theirs[key].read_bytes(), key
    grey = (alpha * 255).round().to(torch.uint8).expand(-1, -1, -1, 3)
    for key, frames in (("s_alpha.mp4", grey), ("s_final_composite.mp4", final)):
        assert _close_encodes(video.read_video(ours[key])[0], video.read_video(theirs[key])[0],
                              frames), key
    for key in ("s_edit_layer_rgba.mov", "s_edit_layer_rgba.webm"):
        assert torch.equal(video.read_rgba_video(ours[key]), video.read_rgba_video(theirs[key]))
    assert stream_info(ours["s_final_composite.mp4"])["audio"] == 1
    panel = side_by_side_panel(source, edit, alpha, final)
    video.write_png(panel[3], tmp_path / "panel.png")
    assert ours["side_by_side.png"].read_bytes() == (tmp_path / "panel.png").read_bytes()
    video.write_mp4(panel, tmp_path / "panel.mp4", rate)
    assert _close_encodes(video.read_video(ours["side_by_side.mp4"])[0],
                          video.read_video(tmp_path / "panel.mp4")[0], panel)
    from vera.frames import metrics

    expected = metrics.edit_metrics(final, source, alpha)
    assert writer.tally.result()["preserved_psnr"] == expected["preserved_psnr"] == float("inf")
    assert writer.tally.result()["full_frame_psnr_vs_source"] == pytest.approx(
        expected["full_frame_psnr_vs_source"], rel=1e-5)


def test_a_failed_layer_write_publishes_no_video(tmp_path):
    from vera.edit.deliverables import LayerFileWriter

    edit, alpha, final, _ = _layers(3)
    with pytest.raises(RuntimeError, match="stop"), LayerFileWriter(tmp_path, 16) as writer:
        writer.add(edit, alpha, final)
        raise RuntimeError("stop")
    left = _files_under(tmp_path)
    assert left and all(key.endswith(".png") for key in left), sorted(left)
    with pytest.raises(ValueError, match="rgba_format 'gif'"):
        LayerFileWriter(tmp_path / "x", 16, "gif")
