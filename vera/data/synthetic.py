"""Synthetic layered samples (the paper's synthetic-composite recipe at our scale).

Object addition: a procedural RGBA object (circle, square or triangle; soft edges; a cast shadow that
lives in the alpha, so the effect is part of the edit) moves along the path its instruction names,
composited over a random crop of a real clip. Background change: a procedural subject moves over a
real clip (the source); the edit layer is a new patterned background named by the instruction, the
alpha is everything but the subject, and the coarse mask marks the region that may change.

Everything is a function of (seed, index): the same call gives the same bytes, and a different seed
gives a held-out split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .layout import LayeredSample

OBJECT_COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 210, 50),
                 "purple": (150, 60, 190), "white": (240, 240, 240)}
BACKGROUND_COLORS = {**OBJECT_COLORS, "orange": (240, 130, 30), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.15, "large": 0.22}  # circumradius as a fraction of the frame's short side
PATHS = {  # name -> (start, end) centre in normalised (x, y)
    "from left to right": ((0.22, 0.5), (0.78, 0.5)),
    "from right to left": ((0.78, 0.5), (0.22, 0.5)),
    "from top to bottom": ((0.5, 0.22), (0.5, 0.78)),
    "from bottom to top": ((0.5, 0.78), (0.5, 0.22)),
    "diagonally from the top left to the bottom right": ((0.22, 0.22), (0.78, 0.78)),
    "diagonally from the bottom left to the top right": ((0.22, 0.78), (0.78, 0.22)),
}
PATTERNS = ("gradient", "stripes", "checkerboard")
OBJECT_TEMPLATES = ("add a {size} {color} {shape} moving {path}", "insert a {size} {color} {shape} that moves {path}")
BACKGROUND_TEMPLATES = ("replace the background with a {c1} and {c2} {pattern}", "change the background to a {c1} and {c2} {pattern}")
SHADOW_OFFSET = (0.05, 0.06)  # x, y as a fraction of the frame
SHADOW_OPACITY = 0.5
COARSE_MASK_MARGIN = 0.07


def vocabulary() -> list[str]:
    """Every word the instruction templates can produce (for the tiny model's tokenizer)."""
    text = " ".join([*OBJECT_TEMPLATES, *BACKGROUND_TEMPLATES, *OBJECT_COLORS, *BACKGROUND_COLORS, *SHAPES, *SIZES,
                     *PATHS, *PATTERNS])
    words = text.replace("{", " ").replace("}", " ").split()
    placeholders = {"size", "color", "shape", "path", "c1", "c2", "pattern"}
    return sorted({w for w in words if w not in placeholders})


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
    return xs, ys


def shape_coverage(shape: str, cx: float, cy: float, radius: float, h: int, w: int, softness: float = 1.0) -> torch.Tensor:
    """Anti-aliased coverage `[H, W]` in [0, 1] of a shape with circumradius `radius` (pixels) at (cx, cy)."""
    xs, ys = _grid(h, w)
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        sdf = torch.sqrt(dx * dx + dy * dy) - radius
    elif shape == "square":
        sdf = torch.maximum(dx.abs(), dy.abs()) - radius * 0.8
    elif shape == "triangle":  # pointing up; inradius = radius / 2
        normals = ((0.0, 1.0), (-math.sqrt(3) / 2, -0.5), (math.sqrt(3) / 2, -0.5))
        sdf = torch.stack([nx * dx + ny * dy - radius * 0.5 for nx, ny in normals]).amax(0)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    return (0.5 - sdf / softness).clamp(0, 1)


def path_centres(path: str, frames: int, h: int, w: int) -> list[tuple[float, float]]:
    (x0, y0), (x1, y1) = PATHS[path]
    steps = [i / max(frames - 1, 1) for i in range(frames)]
    return [((x0 + (x1 - x0) * u) * w, (y0 + (y1 - y0) * u) * h) for u in steps]


def render_object(shape: str, color: tuple[int, int, int], size: str, centres, h: int, w: int, shadow: bool = True):
    """A moving object layer -> (rgb `[T, H, W, 3]`, alpha `[T, H, W, 1]`), straight alpha, float [0, 1].

    The cast shadow is black at SHADOW_OPACITY, offset down-right and softer; object over shadow."""
    radius = SIZES[size] * min(h, w)
    base = torch.tensor(color, dtype=torch.float32) / 255
    rgbs, alphas = [], []
    for cx, cy in centres:
        a_obj = shape_coverage(shape, cx, cy, radius, h, w, softness=1.5)
        a_sh = torch.zeros_like(a_obj)
        if shadow:
            a_sh = SHADOW_OPACITY * shape_coverage(shape, cx + SHADOW_OFFSET[0] * w, cy + SHADOW_OFFSET[1] * h, radius, h, w,
                                                    softness=3.0)
        alpha = a_obj + a_sh * (1 - a_obj)
        _, ys = _grid(h, w)
        shade = (1.1 - 0.25 * (ys - cy) / radius).clamp(0.75, 1.15).unsqueeze(-1)  # light from above
        rgb = (base * shade).clamp(0, 1) * (a_obj / alpha.clamp_min(1e-6)).unsqueeze(-1)  # shadow part is black
        rgbs.append(rgb)
        alphas.append(alpha.unsqueeze(-1))
    return torch.stack(rgbs), torch.stack(alphas)


def render_pattern(pattern: str, c1, c2, frames: int, h: int, w: int) -> torch.Tensor:
    """A static two-colour background `[T, H, W, 3]` float [0, 1]."""
    a, b = (torch.tensor(c, dtype=torch.float32) / 255 for c in (c1, c2))
    xs, ys = _grid(h, w)
    if pattern == "gradient":
        weight = (ys / h).unsqueeze(-1)
    elif pattern == "stripes":
        weight = ((ys // (h / 4)) % 2).unsqueeze(-1)
    elif pattern == "checkerboard":
        weight = (((ys // (h / 4)) + (xs // (w / 4))) % 2).unsqueeze(-1)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {PATTERNS}")
    return (a * (1 - weight) + b * weight).expand(frames, h, w, 3).contiguous()


def coarse_box_mask(alpha: torch.Tensor, margin: float = COARSE_MASK_MARGIN, level: float = 0.02) -> torch.Tensor:
    """Per-frame bounding box of alpha > level, grown by `margin` x frame size -> `[T, H, W, 1]` {0, 1}."""
    t, h, w, _ = alpha.shape
    out = torch.zeros_like(alpha)
    grow_y, grow_x = round(margin * h), round(margin * w)
    for i in range(t):
        ys, xs = torch.nonzero(alpha[i, ..., 0] > level, as_tuple=True)
        if len(ys):
            out[i, max(int(ys.min()) - grow_y, 0): int(ys.max()) + 1 + grow_y, max(int(xs.min()) - grow_x, 0): int(xs.max()) + 1 + grow_x] = 1
    return out


def random_background(clips: list[torch.Tensor], rng: np.random.Generator, frames: int, h: int, w: int) -> torch.Tensor:
    """A random crop (position, scale, start frame, stride, mirror) of a real clip -> uint8 `[T, H, W, 3]`."""
    clip = clips[int(rng.integers(len(clips)))]
    stride = int(rng.integers(1, 3)) if clip.shape[0] >= 2 * frames else 1
    start = int(rng.integers(0, clip.shape[0] - stride * (frames - 1)))
    ch, cw = clip.shape[1:3]
    side = int(rng.integers(min(ch, cw) // 2, min(ch, cw) + 1))
    crop_h, crop_w = side, min(cw, round(side * w / h))
    top, left = int(rng.integers(0, ch - crop_h + 1)), int(rng.integers(0, cw - crop_w + 1))
    x = clip[start: start + stride * frames: stride, top: top + crop_h, left: left + crop_w].permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    if rng.random() < 0.5:
        x = x.flip(-1)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _quantise_layers(source_u8: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor):
    """uint8 edit, alpha and the composite computed from those stored bytes, so the files satisfy eq. 2."""
    edit_u8, alpha_u8 = (edit.clamp(0, 1) * 255).round().to(torch.uint8), (alpha.clamp(0, 1) * 255).round().to(torch.uint8)
    a = alpha_u8.float() / 255
    comp = (1 - a) * source_u8.float() + a * edit_u8.float()
    return edit_u8, alpha_u8, comp.round().clamp(0, 255).to(torch.uint8)


@dataclass
class SyntheticBuilder:
    clips: list[torch.Tensor]
    frames: int = 17
    height: int = 64
    width: int = 64

    def object_addition(self, rng: np.random.Generator, sample_id: str) -> LayeredSample:
        t, h, w = self.frames, self.height, self.width
        color, shape, size = rng.choice(list(OBJECT_COLORS)), rng.choice(SHAPES), rng.choice(list(SIZES))
        path = rng.choice(list(PATHS))
        text = rng.choice(OBJECT_TEMPLATES).format(size=size, color=color, shape=shape, path=path)
        source = random_background(self.clips, rng, t, h, w)
        rgb, alpha = render_object(shape, OBJECT_COLORS[color], size, path_centres(path, t, h, w), h, w)
        edit_u8, alpha_u8, comp = _quantise_layers(source, rgb, alpha)
        mask = (coarse_box_mask(alpha) * 255).to(torch.uint8)
        return LayeredSample(sample_id, "object_addition", text, source, edit_u8, alpha_u8, comp, mask)

    def background_change(self, rng: np.random.Generator, sample_id: str) -> LayeredSample:
        t, h, w = self.frames, self.height, self.width
        c1, c2 = rng.choice(list(BACKGROUND_COLORS), size=2, replace=False)
        pattern = rng.choice(PATTERNS)
        text = rng.choice(BACKGROUND_TEMPLATES).format(c1=c1, c2=c2, pattern=pattern)
        subject_color = OBJECT_COLORS[rng.choice(list(OBJECT_COLORS))]
        subject_rgb, subject_alpha = render_object(rng.choice(SHAPES), subject_color, "large",
                                                   path_centres(rng.choice(list(PATHS)), t, h, w), h, w, shadow=False)
        plate = random_background(self.clips, rng, t, h, w).float() / 255
        source = ((1 - subject_alpha) * plate + subject_alpha * subject_rgb) * 255
        source = source.round().clamp(0, 255).to(torch.uint8)
        pattern_rgb = render_pattern(pattern, BACKGROUND_COLORS[c1], BACKGROUND_COLORS[c2], t, h, w)
        edit_u8, alpha_u8, comp = _quantise_layers(source, pattern_rgb, 1 - subject_alpha)
        mask = ((1 - coarse_box_mask(subject_alpha)) * 255).to(torch.uint8)
        return LayeredSample(sample_id, "background_change", text, source, edit_u8, alpha_u8, comp, mask)

    def sample(self, seed: int, index: int, task: str) -> LayeredSample:
        rng = np.random.default_rng([seed, index, 0 if task == "object_addition" else 1])
        make = self.object_addition if task == "object_addition" else self.background_change
        return make(rng, f"{task[:2]}{index:06d}")


def build_dataset(out, per_task: int, seed: int, frames: int = 17, size: int = 64, progress=None) -> list[dict]:
    """Write `per_task` samples of each task to `out` (PNG folders + manifest.jsonl) and return the entries."""
    from pathlib import Path

    from .clips import load_background_clips
    from .layout import write_manifest, write_sample

    out = Path(out)
    if (out / "manifest.jsonl").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose a new --out (nothing is overwritten)")
    builder = SyntheticBuilder(load_background_clips(short_side=max(128, 2 * size)), frames, size, size)
    entries = []
    for index in range(per_task):
        for task in ("object_addition", "background_change"):
            entries.append(write_sample(out, builder.sample(seed, index, task)))
        if progress is not None:
            progress(index + 1, per_task)
    write_manifest(out, entries)
    return entries
