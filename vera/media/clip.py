"""Which frames of a source are edited, at what rate, with which sound: travels from the source to
the saved files, so the outputs play at the source's exact rate (24000/1001, not 24) with its audio.

    pick = FrameSelection(start=10, count=49, stride=1)
    indices = pick.indices(total_frames)        # the source frames used
    clip = SourceClip(rate=Fraction(25), ...)   # their rate (the source's rate / stride)
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from . import video
from .video import DEFAULT_RATE, exact_rate

MAX_FRAMES = 161  # without context windows: past 161 one clip's attention outgrows any GPU
MAX_FRAME_COUNT = 100_000  # a selection's sanity bound; context windows bound the sampling memory


@dataclass(frozen=True)
class FrameSelection:
    """Frames start, start + stride, ... (at most `count`) of a source."""

    start: int = 0
    count: int = 49
    stride: int = 1

    def __post_init__(self):
        for name, value, low in (("start_frame", self.start, 0), ("frame_count", self.count, 1),
                                 ("frame_stride", self.stride, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} {value!r}: must be a whole number of at least {low}")
        if self.count > MAX_FRAME_COUNT:
            raise ValueError(f"frame_count {self.count}: at most {MAX_FRAME_COUNT} frames at a "
                             "time (a longer shot is sampled in context windows, but its frames "
                             "are held in memory); edit it in parts with start_frame")

    def indices(self, total: int, name: str = "video") -> list[int]:
        """The frame numbers used out of `total`; an error when none are left."""
        if self.start >= total:
            raise ValueError(f"{name}: start_frame {self.start} is past its last frame (it has "
                             f"{total}, numbered from 0)")
        return list(range(self.start, total, self.stride))[: self.count]

    def last(self) -> int:
        """The highest frame number this selection could use (reading can stop after it)."""
        return self.start + (self.count - 1) * self.stride


@dataclass(frozen=True)
class SourceClip:
    """rate: the frame rate of the frames used (the source's rate / stride, exact). start, stride:
    where they came from in the source. audio: ComfyUI AUDIO ({"waveform": `[1, C, N]`,
    "sample_rate"}) covering exactly those frames, or None. name: the source file's name."""

    rate: Fraction = DEFAULT_RATE
    start: int = 0
    stride: int = 1
    audio: dict | None = None
    name: str | None = None

    def to_dict(self) -> dict:
        """For settings.json: the rate as text ("24000/1001") and as a number."""
        return dict(fps=str(self.rate), fps_value=float(self.rate), start_frame=self.start,
                    frame_stride=self.stride, audio=self.audio is not None, source=self.name)


def _cut_audio(audio: dict | None, start_s: float, seconds: float) -> dict | None:
    if audio is None:
        return None
    rate = int(audio["sample_rate"])
    first = int(round(start_s * rate))
    wave = audio["waveform"][..., first:first + int(round(seconds * rate))]
    return {"waveform": wave, "sample_rate": rate} if wave.shape[-1] else None


def select_clip(frames, pick: FrameSelection, rate, audio: dict | None = None,
                name: str = "video", source: str | None = None):
    """Frames already in memory `[T, H, W, C]` (at `rate`, with AUDIO) -> (the selected frames,
    their SourceClip with the audio under them)."""
    rate = exact_rate(rate)
    indices = pick.indices(frames.shape[0], name)
    clip = SourceClip(rate / pick.stride, pick.start, pick.stride,
                      _cut_audio(audio, pick.start / rate, len(indices) * pick.stride / rate),
                      source)
    return frames[pick.start:indices[-1] + 1:pick.stride], clip


def read_clip(source, pick: FrameSelection, name: str = "video"):
    """A video file (path or binary stream) -> (uint8 `[T, H, W, 3]` of the selected frames only,
    their SourceClip with the audio under them). Memory holds the frames used, not the file."""
    frames, rate = video.read_video(source, pick.count, pick.start, name, pick.stride)
    seconds = frames.shape[0] * pick.stride / rate
    audio = video.read_audio(source, pick.start / rate, seconds)
    label = Path(source).name if isinstance(source, (str, Path)) else None
    return frames, SourceClip(rate / pick.stride, pick.start, pick.stride, audio, label)
