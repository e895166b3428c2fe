"""Preview frames for the layer viewer (web/vera_layer_viewer.js).

A node returns `{"ui": {"vera_layers": [entry]}}`; the entry lists, per preview frame, PNG files in
ComfyUI's temp folder for each layer present: `source`, `edit` (RGBA, straight alpha), `alpha`
(grey) and `composite`. The viewer draws the edit over a checkerboard, the alpha, the composite and
a hover-to-compare source/composite view with a difference mode.
"""
from __future__ import annotations

import uuid

import torch
import torch.nn.functional as F

from ..vera.frames import layers
from ..vera.media import video
from . import host

MAX_FRAMES = 16
MAX_SIDE = 512


def _frame_indices(count: int, limit: int = MAX_FRAMES) -> list[int]:
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def _shrink(frames: torch.Tensor, max_side: int = MAX_SIDE) -> torch.Tensor:
    """float `[N, H, W, C]` -> at most `max_side` on the longest side (area filter)."""
    h, w = frames.shape[1:3]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frames
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(frames.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1)


def layer_previews(source: torch.Tensor | None = None, edit: torch.Tensor | None = None,
                   alpha: torch.Tensor | None = None, composite: torch.Tensor | None = None) -> dict:
    """IMAGE-like float `[T, H, W, C]` inputs in [0, 1] (alpha `[T, H, W]` or `[T, H, W, 1]`; uint8 accepted)
    -> the UI entry. The edit layer is written as RGBA with the alpha when both are given."""
    given = {k: v for k, v in dict(source=source, edit=edit, alpha=alpha, composite=composite).items() if v is not None}
    if not given:
        raise ValueError("layer_previews needs at least one layer")
    as_float = {k: (v.float() / 255 if v.dtype == torch.uint8 else v.float()).cpu() for k, v in given.items()}
    if "alpha" in as_float and as_float["alpha"].ndim == 3:
        as_float["alpha"] = as_float["alpha"].unsqueeze(-1)
    count = min(v.shape[0] for v in as_float.values())
    picks = _frame_indices(count)
    if "edit" in as_float and "alpha" in as_float:
        as_float["edit"] = torch.cat([as_float["edit"][..., :3], as_float["alpha"][..., :1]], dim=-1)
    folder, run = host.temp_dir(), uuid.uuid4().hex[:12]
    frames = [dict() for _ in picks]
    for kind, value in as_float.items():
        small = layers.to_uint8(_shrink(value[picks].clamp(0, 1)))
        for slot, (index, image) in enumerate(zip(picks, small)):
            name = f"vera_{run}_{kind}_{index:05d}.png"
            video.write_png(image, folder / name)
            frames[slot][kind] = dict(filename=name, subfolder="", type="temp")
    return dict(frames=frames, frame_indices=picks, total_frames=count)
