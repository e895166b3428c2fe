"""Vera Save Layers: the layer files an artist takes into compositing, written into ComfyUI's output folder."""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from ..vera import layers
from ..vera.outputs import RGBA_FORMATS, write_layer_files
from . import host
from .layer_ops import as_alpha_frames
from .previews import layer_previews

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 100


def safe_prefix(prefix: str) -> tuple[Path, str]:
    """"shots/sh010 edit" -> (Path("shots"), "sh010_edit"). Every part is reduced to letters, digits, `.`, `_`
    and `-`; `..` and absolute paths are refused so nothing lands outside the output folder."""
    parts = [p for p in re.split(r"[\\/]+", prefix.strip()) if p not in ("", ".")]
    if prefix.strip().startswith(("/", "\\")) or any(p == ".." for p in parts) or re.match(r"^[A-Za-z]:", prefix):
        raise ValueError(f"filename_prefix {prefix!r}: use a relative name such as 'vera/shot010'; it must stay "
                         "inside ComfyUI's output folder")
    clean = [_UNSAFE.sub("_", p).strip("._") or "vera" for p in parts] or ["vera"]
    too_long = next((p for p in clean if len(p) > MAX_NAME), None)
    if too_long is not None:
        raise ValueError(f"filename_prefix: {too_long[:40]!r}... is {len(too_long)} characters; "
                         f"keep each folder and the name within {MAX_NAME} (file systems stop at "
                         "255 and Vera adds suffixes such as _edit_layer_rgba.webm)")
    return Path(*clean[:-1]) if len(clean) > 1 else Path(), clean[-1]


def next_run_folder(parent: Path, name: str) -> Path:
    """parent/name_00001, _00002, ...: one past the highest number already there."""
    pattern = re.compile(rf"^{re.escape(name)}_(\d{{5}})$")
    taken = [int(m.group(1)) for p in parent.glob(f"{name}_*") if (m := pattern.match(p.name))] if parent.is_dir() else []
    return parent / f"{name}_{max(taken, default=0) + 1:05d}"


def publish_folder(staging: Path, parent: Path, name: str) -> Path:
    """Rename a finished staging folder to the next free run folder (never onto an existing one)."""
    for _ in range(100):
        target = next_run_folder(parent, name)
        try:
            os.rename(staging, target)  # fails if target exists and is not empty
            return target
        except OSError:
            if not target.exists():
                raise
    raise RuntimeError(f"could not find a free folder name for {name} in {parent}")


class VeraSaveLayers:
    DESCRIPTION = ("Write the edit as compositing assets into ComfyUI's output folder, one new folder per run "
                   "(nothing is overwritten): the RGBA edit layer as PNGs plus ProRes 4444 .mov and/or WebM VP9 "
                   "with alpha, the alpha matte (PNGs + mp4) and the final composite (lossless PNGs + mp4).")
    CATEGORY = "Vera/layers"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "edit_layer": ("IMAGE", {"tooltip": "The edit layer (from Vera Decode Layers)."}),
                "alpha": ("MASK", {"tooltip": "The matte, 1 = edit layer opaque; stored as the RGBA alpha."}),
                "final": ("IMAGE", {"tooltip": "The final composite (from Vera Composite)."}),
                "filename_prefix": ("STRING", {"default": "vera/edit", "tooltip": (
                    "Subfolder/name inside the output folder; a numbered folder name_00001 is created per run. "
                    "Unsafe characters become '_'.")}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": (
                    "Frame rate written into the video files (Wan2.1 generates at 16 fps).")}),
                "rgba_format": (list(RGBA_FORMATS), {"default": "mov", "tooltip": (
                    "Edit layer video with alpha: mov = ProRes 4444 (editing apps), webm = VP9 with alpha "
                    "(browsers), both.")}),
            },
            "optional": {
                "source": ("IMAGE", {"tooltip": "The source frames, for the layer viewer's compare view only."}),
            },
        }

    def save(self, edit_layer, alpha, final, filename_prefix="vera/edit", fps=16.0, rgba_format="mov", source=None):
        if edit_layer.shape[:3] != final.shape[:3]:
            raise ValueError(f"edit_layer {tuple(edit_layer.shape)} and final {tuple(final.shape)} must have the same "
                             "frames and size")
        alpha4 = as_alpha_frames(alpha, edit_layer)
        subfolder, name = safe_prefix(filename_prefix)
        root = host.output_dir()
        parent = root / subfolder
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{name}.{uuid.uuid4().hex[:8]}.partial"
        try:
            write_layer_files(edit_layer[..., :3].float(), alpha4.float(), layers.to_uint8(final[..., :3].float()),
                              staging, fps, rgba_format, name=f"{name}_")
            folder = publish_folder(staging, parent, name)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        files = [dict(filename=p.name, subfolder=p.parent.relative_to(root).as_posix(), type="output")
                 for p in sorted(folder.rglob("*")) if p.is_file()]
        previews = layer_previews(source, edit_layer, alpha4, final)
        previews["folder"] = folder.relative_to(root).as_posix()
        return {"ui": {"vera_layers": [previews], "vera_files": files}}


NODES = {"VeraSaveLayers": ("Vera Save Layers", VeraSaveLayers)}
