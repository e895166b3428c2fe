"""RGBA `.webm` frame times, checked with the real FFmpeg tools: Matroska stores whole
milliseconds, so every frame must sit at or just before its exact time (never after it), or a
player that shows "the latest frame whose time is <= t" shows the previous frame."""
import json
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import torch

from vera.media.video import VideoWriter

RATES = ["30000/1001", "24000/1001", "25", "24"]
COUNT, HEIGHT, WIDTH = 17, 48, 64
TOLERANCE = 4  # levels: VP9 lossless works in limited-range YUV 4:2:0, RGB comes back near

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs the ffmpeg and ffprobe command-line tools on PATH")


def _colour(index: int) -> np.ndarray:
    """The flat RGBA colour of frame `index` -> uint8 `[4]`; 14 levels apart per frame."""
    return np.array([8 + 14 * index, 232 - 14 * index, 100, 40 + 12 * index], dtype=np.uint8)


def _frames(count: int) -> torch.Tensor:
    """`count` flat frames, each its own colour -> uint8 `[count, HEIGHT, WIDTH, 4]`."""
    colours = np.stack([_colour(k) for k in range(count)])
    return torch.from_numpy(np.ascontiguousarray(
        np.broadcast_to(colours[:, None, None], (count, HEIGHT, WIDTH, 4))))


@pytest.fixture(params=RATES)
def webm(request, tmp_path):
    """(path of a 17-frame RGBA webm written at the rate, that rate as a Fraction)"""
    rate = Fraction(request.param)
    path = tmp_path / "timing.webm"
    with VideoWriter(path, rate, alpha=True) as writer:
        writer.write(_frames(COUNT))
    return path, rate


def _probe(path) -> dict:
    """ffprobe's JSON for the first video stream: its packets' pts, its time base and rates,
    and the file's duration."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts:stream=time_base,avg_frame_rate,r_frame_rate:format=duration",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def _decode_at_rate(path, rate: Fraction, rounding: str) -> np.ndarray:
    """FFmpeg as a timestamp-driven client: resample to `rate` with the fps filter (each output
    slot takes the latest frame at or before it, per `rounding`) -> uint8 `[N, H, W, 4]`."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-c:v", "libvpx-vp9", "-i", str(path),
         "-vf", f"fps={rate.numerator}/{rate.denominator}:round={rounding}",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgba", "-"],
        check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 4)


def _frame_index(frame: np.ndarray) -> int:
    """The written frame a decoded uint8 `[H, W, 4]` frame is (nearest colour), checked to be
    within TOLERANCE levels of it everywhere."""
    mean = frame.reshape(-1, 4).mean(0)
    index = int(np.argmin([np.abs(mean - _colour(k)).sum() for k in range(COUNT)]))
    error = np.abs(frame.astype(int) - _colour(index).astype(int)).max()
    assert error <= TOLERANCE, f"decoded frame is {error} levels from frame {index}'s colour"
    return index


def test_webm_frame_times_never_late(webm):
    path, rate = webm
    info = _probe(path)
    stream = info["streams"][0]
    time_base = Fraction(stream["time_base"])
    times = [int(p["pts"]) * time_base for p in info["packets"]]
    assert len(times) == COUNT
    for k, time in enumerate(times):
        exact = k / rate
        assert exact - Fraction(1, 1000) < time <= exact, (
            f"frame {k} at {float(time) * 1000:g} ms, exact {float(exact) * 1000:.3f} ms")
    assert Fraction(stream["avg_frame_rate"]) == rate
    assert Fraction(stream["r_frame_rate"]) == rate
    end = Fraction(COUNT) / rate  # the last frame's exact end, in whole ms at or before it
    assert Fraction(info["format"]["duration"]) == Fraction(int(end * 1000), 1000)


@pytest.mark.parametrize("rounding", ["up", "near"])
def test_webm_sample_and_hold_shows_each_frame(webm, rounding):
    path, rate = webm
    decoded = _decode_at_rate(path, rate, rounding)
    assert [_frame_index(frame) for frame in decoded] == list(range(COUNT))
