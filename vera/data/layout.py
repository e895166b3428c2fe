"""The layered sample format on disk, and a loader that validates every sample.

A dataset is a folder with `manifest.jsonl`, one JSON object per line:

    {"id": "000012", "task": "object_addition", "instruction": "add a red ball moving from left to right",
     "source": "000012/source", "edit": "000012/edit", "alpha": "000012/alpha",
     "composite": "000012/composite", "mask": "000012/mask", "fps": 16}

Each video path (relative to the dataset folder) is a folder of PNG frames (sorted by name) or a
video file PyAV can read. Use lossless storage (PNG, FFV1): lossy codecs break the compositing check.
`alpha` and `mask` are grey (1 = edit layer opaque / region that may change); `mask` may be null.
`edit` only has to be meaningful where alpha > 0: the loader fills the rest with a Gaussian-smoothed
copy of the composite (the paper's rule for training targets).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from .. import VeraError
from ..frames import layers
from ..frames.geometry import frame_count_problem, size_problem
from ..media.files import atomic_path
from ..media.video import read_frames, write_png_sequence
from ..model.config import BRANCHES

TASKS = ("object_addition", "background_change")
VIDEO_KEYS = ("source", *BRANCHES)  # the layers a sample stores, besides its optional mask
EDIT_FILL_SIGMA = 8.0


class SampleError(VeraError, ValueError):
    """A dataset sample that cannot be used; the message names the sample and what is wrong."""


@dataclass
class LayeredSample:
    """One training/test sample. Videos are uint8 `[T, H, W, 3]`, mattes uint8 `[T, H, W, 1]`."""

    id: str
    task: str
    instruction: str
    source: torch.Tensor
    edit: torch.Tensor
    alpha: torch.Tensor
    composite: torch.Tensor
    mask: torch.Tensor | None = None
    fps: float = 16.0

    def float_layers(self, fill_sigma: float = EDIT_FILL_SIGMA) -> dict[str, torch.Tensor]:
        """Float [0, 1] frames; `edit` filled where alpha == 0 with the smoothed composite."""
        f = lambda x: x.float() / 255
        out = dict(source=f(self.source), alpha=f(self.alpha), composite=f(self.composite))
        out["edit"] = layers.fill_edit_layer(f(self.edit), out["alpha"], out["composite"], fill_sigma)
        if self.mask is not None:
            out["mask"] = f(self.mask)
        return out


def sample_path(root: Path, value, sample_id: str, key: str) -> Path:
    """A manifest path, confined to the dataset folder: relative, no `..`, and (symlinks resolved)
    inside `root`; so a downloaded dataset cannot read other files on the machine."""
    if not isinstance(value, str) or not value.strip():
        raise SampleError(f"sample {sample_id}: {key} must be a relative path (text), got "
                          f"{value!r}")
    relative = PurePosixPath(value.replace("\\", "/"))
    inside = (root / relative).resolve().is_relative_to(root.resolve())
    climbs = relative.is_absolute() or ".." in relative.parts or re.match(r"^[A-Za-z]:", value)
    if climbs or not inside:
        raise SampleError(f"sample {sample_id}: {key} path {value!r} leaves the dataset folder; "
                          "paths must be relative to the folder that holds manifest.jsonl and stay "
                          "inside it")
    return root / relative


def _read_frames(path: Path, sample_id: str, key: str) -> torch.Tensor:
    if not path.exists():
        raise SampleError(f"sample {sample_id}: {key} path {path} does not exist")
    try:
        return read_frames(path, name=key)[0]
    except Exception as err:  # PyAV and Pillow raise many types for unreadable files
        raise SampleError(f"sample {sample_id}: {key} at {path} cannot be read ({err})") from err


def _as_matte(frames: torch.Tensor, sample_id: str, key: str) -> torch.Tensor:
    if frames.shape[-1] == 1:
        return frames
    spread = (frames.int().amax(-1) - frames.int().amin(-1)).max().item()
    if spread > 2:
        raise SampleError(f"sample {sample_id}: {key} must be a grey matte, but its channels differ by up to {spread} levels")
    return frames[..., :1]


def check_consistency(sample: LayeredSample, tolerance: float = 2 / 255) -> None:
    """Raise SampleError unless shapes agree, frames are 1 + 4k, sizes are multiples of 16, and the
    composite equals (1 - alpha) * source + alpha * edit within `tolerance` (max over pixels)."""
    sid = sample.id
    if sample.task not in TASKS:
        raise SampleError(f"sample {sid}: task {sample.task!r} is not one of {TASKS}")
    if not sample.instruction.strip():
        raise SampleError(f"sample {sid}: the instruction text is empty")
    shape = tuple(sample.source.shape[:3])
    for key in (*BRANCHES, "mask"):
        frames = getattr(sample, key)
        if frames is not None and tuple(frames.shape[:3]) != shape:
            raise SampleError(f"sample {sid}: {key} has (frames, height, width) {tuple(frames.shape[:3])} but source has {shape}")
    for problem in (frame_count_problem(shape[0]), size_problem(*shape[1:])):
        if problem:
            raise SampleError(f"sample {sid}: bad {problem}")
    f = lambda x: x.float() / 255
    a = f(sample.alpha)
    expected = layers.composite(f(sample.source), f(sample.edit), a)
    error = (expected - f(sample.composite)).abs().amax().item()
    if error > tolerance:
        raise SampleError(
            f"sample {sid}: composite differs from (1 - alpha) * source + alpha * edit by up to {error * 255:.1f} levels "
            f"(tolerance {tolerance * 255:.1f}); check that alpha is straight (not premultiplied) and 1 = edit layer, "
            "and that the files are stored losslessly"
        )


def load_manifest(root: str | Path) -> list[dict]:
    root = Path(root)
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{root}: not a layered dataset (no manifest.jsonl); see vera/data/layout.py for the format")
    try:
        text = manifest.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise SampleError(f"{manifest}: not UTF-8 text (byte {err.start}); save it as UTF-8 JSON "
                          "lines") from None
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise SampleError(f"{manifest} line {n}: not valid JSON "
                              f"({getattr(err, 'msg', 'nested too deeply')})") from None
        if not isinstance(entry, dict):
            raise SampleError(f"{manifest} line {n}: a sample must be a JSON object, got "
                              f"{type(entry).__name__}")
        missing = [k for k in ("id", "task", "instruction", *VIDEO_KEYS) if k not in entry]
        if missing:
            raise SampleError(f"{manifest} line {n} (sample {entry.get('id', '?')}): missing "
                              f"{', '.join(missing)}")
        for key in ("id", "task", "instruction"):
            if not isinstance(entry[key], str):
                raise SampleError(f"{manifest} line {n}: {key} must be text, got {entry[key]!r}")
        for key in (*VIDEO_KEYS, "mask"):
            if entry.get(key) is not None:
                sample_path(root, entry[key], entry["id"], key)
        fps = entry.get("fps", 16.0)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < 1000:
            raise SampleError(f"{manifest} line {n}: fps must be a number above 0, got {fps!r}")
        entries.append(entry)
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SampleError(f"{manifest}: sample id {dup!r} appears more than once")
    return entries


def load_sample(root: str | Path, entry: dict, tolerance: float = 2 / 255) -> LayeredSample:
    """Read and validate one manifest entry."""
    root, sid = Path(root), str(entry["id"])
    path = lambda key: sample_path(root, entry[key], sid, key)
    videos = {k: _read_frames(path(k), sid, k) for k in VIDEO_KEYS}
    mask = _read_frames(path("mask"), sid, "mask") if entry.get("mask") else None
    for key in ("source", "edit", "composite"):
        if videos[key].shape[-1] != 3:
            raise SampleError(f"sample {sid}: {key} must be RGB, got {videos[key].shape[-1]} channel(s)")
    sample = LayeredSample(
        sid, entry["task"], entry["instruction"], videos["source"], videos["edit"], _as_matte(videos["alpha"], sid, "alpha"),
        videos["composite"], None if mask is None else _as_matte(mask, sid, "mask"), float(entry.get("fps", 16.0)),
    )
    check_consistency(sample, tolerance)
    return sample


def write_sample(root: str | Path, sample: LayeredSample) -> dict:
    """Write a sample's PNG folders under root/<id>/ and return its manifest entry (not yet appended)."""
    root = Path(root)
    entry = dict(id=sample.id, task=sample.task, instruction=sample.instruction, fps=sample.fps)
    for key in (*VIDEO_KEYS, "mask"):
        frames = getattr(sample, key)
        if frames is None:
            entry[key] = None
            continue
        write_png_sequence(frames, root / sample.id / key, key)
        entry[key] = f"{sample.id}/{key}"
    return entry


def write_manifest(root: str | Path, entries: list[dict]) -> Path:
    path = Path(root) / "manifest.jsonl"
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path
