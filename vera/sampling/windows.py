"""Context windows: sample a shot longer than the model's clip as overlapping windows of latent
frames, fused every step.

At each step every window runs the model on its slice of the three latents (with the source and
mask latents sliced with it, and CFG per window), and the velocities are averaged frame by frame
with per-window weights, so all three layers (edit, alpha, composite) share one fused velocity and
one scheduler step. Overlapping frames therefore always share their noise and their state; with
"freenoise" the noise of frames past the first window also repeats the first window's noise
(shuffled within each stride), as FreeNoise does, so every window starts from the same noise
values. (On vera-tiny the matte wandered as much with independent noise: BENCHMARKS.md.)

Lengths come in source frames (what a user counts) and are converted to latent frames as the
anchors convert them: `latent = (frames - 1) // 4 + 1`, so 81 frames are 21 latent frames and an
overlap of 24 frames is 6.

    windows = plan_windows(latent_frames=65, length=21, overlap=6)   # [(0, 21), (15, 36), ...]
    weights = fuse_weights(windows, 65, "linear")                    # one [L] tensor per window
"""
from __future__ import annotations

import torch

from ..frames.geometry import FRAME_STEP
from .settings import WINDOW_FUSE, SamplingSettings


def latent_frames(frames: int) -> int:
    """Source frames -> latent frames, as the anchors convert a window or an overlap (0 -> 0)."""
    return 0 if frames <= 0 else (frames - 1) // FRAME_STEP + 1


def plan_windows(total: int, length: int, overlap: int) -> list[tuple[int, int]]:
    """Windows `[(start, end), ...]` in latent frames covering `0..total`: `length` frames each,
    consecutive ones sharing at least `overlap`; the last is placed to end at `total` (so it may
    overlap its neighbour more), and starts only ever move forward. One window when `length` is 0
    or the clip fits in one."""
    if length <= 0 or total <= length:
        return [(0, total)]
    if not 0 <= overlap < length:
        raise ValueError(f"window overlap {overlap} must be from 0 to {length - 1} latent frames")
    stride = length - overlap
    starts = list(range(0, total - length + 1, stride))
    if starts[-1] + length < total:
        starts.append(total - length)
    return [(s, s + length) for s in starts]


def windows_for(settings: SamplingSettings, total: int) -> list[tuple[int, int]]:
    """The windows `settings` (window, window_overlap in source frames) give a clip of `total`
    latent frames."""
    return plan_windows(total, latent_frames(settings.window),
                        latent_frames(settings.window_overlap))


def _ramp(count: int) -> torch.Tensor:
    """`count` weights rising towards 1: 1/(count+1), ..., count/(count+1)."""
    return torch.arange(1, count + 1, dtype=torch.float32) / (count + 1)


def window_weights(windows: list[tuple[int, int]], method: str = "linear") -> list[torch.Tensor]:
    """Unnormalised weight per latent frame of each window (`[L]` each).

    linear: 1 inside, a ramp over each overlap with a neighbour, so across an overlap the two
    windows' weights sum to exactly 1 and hand over linearly (outer ends of the shot stay 1).
    pyramid: a triangle over each window, highest in its middle."""
    if method not in WINDOW_FUSE:
        raise ValueError(f"window fuse {method!r} is not one of {', '.join(WINDOW_FUSE)}")
    out = []
    for k, (start, end) in enumerate(windows):
        size = end - start
        if method == "pyramid":
            j = torch.arange(size, dtype=torch.float32)
            out.append(torch.minimum(j + 1, size - j))  # its scale goes in the normalisation
            continue
        w = torch.ones(size)
        if k > 0:
            left = windows[k - 1][1] - start
            w[:left] = torch.minimum(w[:left], _ramp(left))
        if k + 1 < len(windows):
            right = end - windows[k + 1][0]
            w[size - right:] = torch.minimum(w[size - right:], _ramp(right).flip(0))
        out.append(w)
    return out


def fuse_weights(windows: list[tuple[int, int]], total: int, method: str = "linear"
                 ) -> list[torch.Tensor]:
    """Per-window weights `[L]` normalised so that, at every latent frame, the windows covering
    it sum to 1."""
    raw = window_weights(windows, method)
    cover = torch.zeros(total)
    for (start, end), w in zip(windows, raw):
        cover[start:end] += w
    if bool((cover <= 0).any()):
        raise ValueError(f"windows {windows} leave latent frames of {total} uncovered")
    return [w / cover[start:end] for (start, end), w in zip(windows, raw)]


def source_spans(windows: list[tuple[int, int]], frames: int) -> list[list[int]]:
    """Windows in latent frames -> `[[first, last], ...]` in source frames (inclusive), cut to a
    clip of `frames` frames: latent frame 0 is source frame 0, latent frame j > 0 covers source
    frames 4j-3 .. 4j."""
    spans = []
    for start, end in windows:
        first = 0 if start == 0 else FRAME_STEP * start - (FRAME_STEP - 1)
        spans.append([min(first, frames - 1), min(FRAME_STEP * (end - 1), frames - 1)])
    return spans


def freenoise(noise: torch.Tensor, windows: list[tuple[int, int]], seed: int) -> torch.Tensor:
    """FreeNoise-style noise over windows: the frames each window adds after its predecessor take
    the noise of the same number of frames one stride earlier, in a seeded random order. Frames of
    the first window keep their own noise. `[B, C, T', h, w]` -> same (a new tensor)."""
    if len(windows) < 2:
        return noise
    out = noise.clone()
    generator = torch.Generator("cpu").manual_seed(int(seed) + 1)
    for (previous_start, previous_end), (start, end) in zip(windows, windows[1:]):
        stride = start - previous_start  # = the frames this window adds (windows share a length)
        order = torch.randperm(stride, generator=generator)
        earlier = torch.arange(previous_end - stride, previous_end)[order]
        out[:, :, previous_end:end] = out[:, :, earlier.to(noise.device)]
    return out


def describe(spans: list[list[int]], most: int = 8) -> str:
    """'3 windows: frames 0-16, 9-28, 21-40' for the console; past `most` windows the middle
    ones are left out ('85 windows: frames 0-16, 9-28, 21-40, ..., 1005-1024'), as every one is
    recorded in settings.json."""
    text = [f"{a}-{b}" for a, b in spans]
    if len(text) > most:
        text = text[: most - 2] + ["..."] + text[-1:]
    return f"{len(spans)} window{'s' if len(spans) != 1 else ''}: frames {', '.join(text)}"
