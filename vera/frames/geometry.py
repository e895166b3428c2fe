"""The shapes Vera accepts, and how source frames map onto the model's grid and back.

The Wan2.1 VAE turns `1 + 4k` frames into `1 + k` latent frames (it silently drops extras for
other counts) and halves sizes three times; the DiT's patch halves them once more. So a clip needs
`1 + 4k` frames and a width and height that are multiples of 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FRAME_STEP = 4  # the VAE's temporal compression
SIZE_MULTIPLE = 16  # VAE /8, then patch /2
FRAME_POLICIES = ("error", "pad", "crop")


def frame_count_problem(frames: int) -> str | None:
    """None when `frames` is `1 + 4k`, else what to do about it."""
    if frames >= 1 and (frames - 1) % FRAME_STEP == 0:
        return None
    down = frames - (frames - 1) % FRAME_STEP
    up = down + FRAME_STEP
    trim = f"trim to {down} or " if down >= 1 else ""
    return f"{frames} frames (Vera needs 1 + 4k frames: {trim}pad to {up})"


def size_problem(height: int, width: int) -> str | None:
    """None when both sides are multiples of 16, else the problem."""
    if height % SIZE_MULTIPLE == 0 and width % SIZE_MULTIPLE == 0:
        return None
    return f"size {width}x{height} (width and height must be multiples of {SIZE_MULTIPLE})"


@dataclass
class Geometry:
    """How source frames map to the model's grid and back. Sizes are (frames, height, width)."""

    original: tuple[int, int, int]
    model: tuple[int, int, int]
    crop_offset: tuple[int, int] = (0, 0)  # top, left of the model grid in the original (crop)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def plan_geometry(
    frames: int, height: int, width: int, policy: str = "error", name: str = "source_frames"
) -> Geometry:
    """Check `1 + 4k` frames and sizes that are multiples of 16, or plan padding / cropping.

    pad:  repeat the last frame up to the next 1 + 4k; replicate-pad bottom/right to a multiple
          of 16; outputs are cut back to the original frame count and size.
    crop: drop trailing frames down to 1 + 4k; centre-crop to a multiple of 16; outputs have the
          cropped size.
    """
    if policy not in FRAME_POLICIES:
        raise ValueError(f"frame_policy {policy!r} is not one of {', '.join(FRAME_POLICIES)}")
    if frames < 1 or height < SIZE_MULTIPLE or width < SIZE_MULTIPLE:
        raise ValueError(
            f"{name}: {frames} frames of {width}x{height} is too small; need at least 1 frame of "
            f"{SIZE_MULTIPLE}x{SIZE_MULTIPLE}"
        )
    problems = [p for p in (frame_count_problem(frames), size_problem(height, width)) if p]
    if not problems:
        return Geometry((frames, height, width), (frames, height, width))
    if policy == "error":
        raise ValueError(
            f"{name}: bad {' and '.join(problems)}; fix the input or use "
            "frame_policy='pad' or 'crop'"
        )
    if policy == "pad":
        model = (
            1 + _round_up(frames - 1, FRAME_STEP),
            _round_up(height, SIZE_MULTIPLE),
            _round_up(width, SIZE_MULTIPLE),
        )
        return Geometry((frames, height, width), model)
    f = frames - (frames - 1) % FRAME_STEP
    h, w = height - height % SIZE_MULTIPLE, width - width % SIZE_MULTIPLE
    return Geometry((frames, height, width), (f, h, w), ((height - h) // 2, (width - w) // 2))


def fit_frames(frames: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """`[T, H, W, C]` original -> model grid (pad by replication or crop, per the plan)."""
    (t0, h0, w0), (t1, h1, w1) = geo.original, geo.model
    if (t1, h1, w1) == (t0, h0, w0):
        return frames
    if t1 >= t0 and h1 >= h0 and w1 >= w0:  # pad
        if t1 > t0:
            frames = torch.cat([frames, frames[-1:].expand(t1 - t0, *frames.shape[1:])])
        x = F.pad(frames.permute(0, 3, 1, 2).float(), (0, w1 - w0, 0, h1 - h0), mode="replicate")
        return x.permute(0, 2, 3, 1).to(frames.dtype)
    top, left = geo.crop_offset
    return frames[:t1, top : top + h1, left : left + w1]


def unfit_frames(frames: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Model-grid output `[T, H, W, C]` -> the frames the user gets (padding removed)."""
    (t0, h0, w0), (t1, h1, w1) = geo.original, geo.model
    if t1 >= t0 and h1 >= h0 and w1 >= w0:
        return frames[:t0, :h0, :w0]
    return frames


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float `[T, H, W, C]` -> `[T, h, w, C]`, size = (h, w) (bilinear; antialiased when
    shrinking)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    shrink = size[0] < frames.shape[1] or size[1] < frames.shape[2]
    x = F.interpolate(
        frames.permute(0, 3, 1, 2).float(),
        size=tuple(size),
        mode="bilinear",
        align_corners=False,
        antialias=shrink,
    )
    return x.permute(0, 2, 3, 1).clamp(0, 1)


AUTO_WORK_AREA = 832 * 480  # Wan2.1's 480p training size, in pixels


def auto_work_size(height: int, width: int, area: int = AUTO_WORK_AREA) -> tuple[int, int]:
    """(height, width) for the model: about `area` pixels with the source's aspect ratio, in
    multiples of 16, for a source larger than that (1920x1080 -> 848x480); a source of at most
    `area` pixels keeps its own size (its frame policy then pads or crops it to 16s)."""
    if height * width <= area:
        return height, width
    scale = (area / (height * width)) ** 0.5
    snap = lambda n: max(SIZE_MULTIPLE, round(n * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return snap(height), snap(width)


def resize_uint8_frames(frames: torch.Tensor, size: tuple[int, int], chunk: int = 8
                        ) -> torch.Tensor:
    """uint8 `[T, H, W, C]` -> float `[T, h, w, C]` in [0, 1], a few frames at a time, so a 4K
    source never exists as float32 at full size."""
    out = torch.empty(frames.shape[0], *size, frames.shape[-1])
    for i in range(0, frames.shape[0], chunk):
        out[i:i + chunk] = resize_frames(frames[i:i + chunk].float() / 255, size)
    return out


def resize_mask(mask: torch.Tensor, size: tuple[int, int], name: str = "mask",
                keep_aspect: bool = True) -> torch.Tensor:
    """float `[T, H, W, 1]` in [0, 1] -> `[T, h, w, 1]`: nearest for a hard mask (only 0 and 1, it
    stays hard), bilinear for a soft one. With keep_aspect the aspect ratio must match within 2%:
    a mask drawn for another framing would land in the wrong place."""
    (h0, w0), (h1, w1) = mask.shape[1:3], size
    if (h0, w0) == (h1, w1):
        return mask
    if keep_aspect and abs((w0 / h0) / (w1 / h1) - 1) > 0.02:
        raise ValueError(f"{name} is {w0}x{h0} but the video is {w1}x{h1}: a different aspect "
                         "ratio; make the mask for this video (it is resized only when its shape "
                         "matches)")
    hard = bool(((mask == 0) | (mask == 1)).all())
    if hard:
        x = F.interpolate(mask.permute(0, 3, 1, 2), size=size, mode="nearest-exact")
        return x.permute(0, 2, 3, 1)
    return resize_frames(mask, size)


def check_work_size(work_size, name: str = "work_size") -> tuple[int, int] | None:
    """(height, width) multiples of 16, at least 16; None = the source's own size."""
    if work_size is None:
        return None
    h, w = int(work_size[0]), int(work_size[1])
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or min(h, w) < SIZE_MULTIPLE:
        raise ValueError(
            f"{name} {w}x{h}: width and height must be multiples of {SIZE_MULTIPLE} (at least "
            f"{SIZE_MULTIPLE})"
        )
    return h, w
