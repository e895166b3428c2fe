import torch

from vera.media.video import read_frames, read_rgba_video, write_png_sequence, write_rgba_video


def test_rgba_videos_keep_their_alpha(tmp_path):
    g = torch.Generator().manual_seed(0)
    rgba = torch.zeros(5, 32, 48, 4, dtype=torch.uint8)
    rgba[..., :3] = torch.randint(0, 256, (5, 32, 48, 3), generator=g).to(torch.uint8)
    rgba[..., 3] = (torch.arange(32).view(1, 32, 1) * 8).clamp(0, 255).expand(5, 32, 48).to(torch.uint8)
    for suffix in ("mov", "webm"):
        back = read_rgba_video(write_rgba_video(rgba, tmp_path / f"layer.{suffix}"))
        assert back.shape == rgba.shape
        assert (back[..., 3].int() - rgba[..., 3].int()).abs().max() <= 1, suffix


def test_read_frames_from_png_folders(tmp_path):
    frames = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
    write_png_sequence(frames, tmp_path / "clip", "f")
    back, fps = read_frames(tmp_path / "clip")
    assert torch.equal(back, frames) and fps == 16.0
    assert torch.equal(read_frames(tmp_path / "clip", max_frames=1, start=1)[0], frames[1:2])


CHUNKS = ((0, 2), (2, 7), (7, 11))  # three uneven chunks of 11 frames


def _sound(seconds: float, rate: int = 48000) -> dict:
    wave = torch.randn(2, int(seconds * rate), generator=torch.Generator().manual_seed(1)) * 0.1
    return {"waveform": wave[None], "sample_rate": rate}


def test_videos_and_pngs_written_in_chunks_equal_one_write(tmp_path):
    from fractions import Fraction

    import av

    from vera.media.video import PngSequenceWriter, VideoWriter, read_audio, read_video, write_mp4

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (11, 33, 47, 4), generator=g, dtype=torch.uint8)
    rate, sound = Fraction(24000, 1001), _sound(1.0)
    write_mp4(frames[..., :3], tmp_path / "whole.mp4", rate, audio=sound)
    write_rgba_video(frames, tmp_path / "whole.mov", rate)
    write_png_sequence(frames, tmp_path / "whole", "f")
    pngs = PngSequenceWriter(tmp_path / "chunked", "f")
    with VideoWriter(tmp_path / "chunked.mp4", rate, audio=sound) as mp4, \
            VideoWriter(tmp_path / "chunked.mov", rate, alpha=True) as mov:
        for start, end in CHUNKS:
            mp4.write(frames[start:end, ..., :3])
            mov.write(frames[start:end])
            pngs.write(frames[start:end])
    assert mp4.frames_written == 11 and pngs.count == 11
    for i in range(11):
        ours, theirs = (tmp_path / folder / f"f_{i:05d}.png" for folder in ("chunked", "whole"))
        assert ours.read_bytes() == theirs.read_bytes()
    assert torch.equal(read_video(tmp_path / "chunked.mp4")[0],
                       read_video(tmp_path / "whole.mp4")[0])
    assert torch.equal(read_rgba_video(tmp_path / "chunked.mov"),
                       read_rgba_video(tmp_path / "whole.mov"))
    assert torch.equal(read_audio(tmp_path / "chunked.mp4")["waveform"],
                       read_audio(tmp_path / "whole.mp4")["waveform"])
    with av.open(str(tmp_path / "chunked.mp4")) as container:
        audio = container.streams.audio[0]
        assert audio.start_time == 0  # the sound still starts with the first frame
        seconds = float(audio.duration * audio.time_base)
    assert abs(seconds - 11 / rate) < 1024 / 48000, seconds  # cut to the frames written


def test_a_failed_video_write_leaves_no_file(tmp_path):
    import pytest

    from vera.media.video import VideoWriter

    frames = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="stop"), VideoWriter(tmp_path / "x.mp4", 16) as writer:
        writer.write(frames)
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="frames must be"), VideoWriter(tmp_path / "y.mp4") as w:
        w.write(torch.zeros(2, 16, 16, 4, dtype=torch.uint8))
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_video_names_the_frame_it_cannot_decode(tmp_path):
    import pytest
    from helpers import half_broken_clip

    from vera.media.video import iter_video_frames, read_video

    path = half_broken_clip(tmp_path / "x.mp4")
    frames = iter_video_frames(path, name="--input")
    first = next(frames)  # the start of the file is whole
    assert first.shape == (48, 64, 3) and first.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"--input .*x\.mp4: FFmpeg could not decode frame \d+ "
                                         r"\(truncated or damaged"):
        list(frames)
    with pytest.raises(ValueError, match=r"could not decode frame \d+"):
        read_video(path)


def test_iter_frames_picks_start_stride_and_count(tmp_path):
    from fractions import Fraction

    import pytest

    from vera.media.video import iter_frames, probe_video, write_mp4

    frames = torch.arange(12, dtype=torch.uint8).mul(20).view(12, 1, 1, 1).expand(12, 16, 16, 3)
    write_png_sequence(frames, tmp_path / "clip", "f")
    write_mp4(frames.contiguous(), tmp_path / "clip.mp4", Fraction(25))
    for path in (tmp_path / "clip", tmp_path / "clip.mp4"):
        picked = list(iter_frames(path, start=2, count=3, stride=4))
        assert [round(float(f[8, 8, 0]) / 20) for f in picked] == [2, 6, 10], path
        assert len(list(iter_frames(path, start=9))) == 3
        with pytest.raises(ValueError, match="no frames left after skipping the first 12"):
            list(iter_frames(path, start=12))
    assert probe_video(tmp_path / "clip.mp4") == {"rate": Fraction(25), "width": 16,
                                                  "height": 16, "frames": 12}
    assert probe_video(tmp_path / "clip")["frames"] == 12
    grey = torch.zeros(2, 8, 8, 1, dtype=torch.uint8)
    write_png_sequence(grey, tmp_path / "grey", "g")
    assert next(iter_frames(tmp_path / "grey")).shape == (8, 8, 1)
    write_png_sequence(torch.zeros(1, 8, 9, 3, dtype=torch.uint8), tmp_path / "clip", "z")
    with pytest.raises(ValueError, match="frame z_00000.png is 9x8x3 but f_00000.png is 16x16x3"):
        list(iter_frames(tmp_path / "clip"))
