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
