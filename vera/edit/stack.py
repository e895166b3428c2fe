"""Layer stacks: a shot folder's source frames and its edits, each its own RGBA layer, in order.

Every run folder holds `stack.json`: where the source frames are (a lossless PNG copy inside the
folder, or the original file with start, count, stride and rate) and the layers bottom to top,
each an `edit_layer_rgba/` PNG sequence (straight alpha) with its prompt, settings and the source
frame its first frame lies on (`offset`). A one-edit run is a stack of one; `--over` makes a
stack of several. `render_frames` composites the stack again, frame by frame, with the same
arithmetic as the edit itself, so an unchanged stack renders bit-exactly to its
`final_composite/`.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import torch

from ..frames import layers
from ..media import video
from ..media.files import save_json

STACK_FILE = "stack.json"
STACK_VERSION = 1
SOURCE_FOLDER = "source"
SOURCE_PREFIX = "source"
LAYERS_FOLDER = "layers"
SOURCE_MODES = ("copy", "reference")


class StackError(ValueError):
    """A stack.json (or a run folder) that cannot be used, with the file named."""


@dataclass(frozen=True)
class StackSource:
    """The source frames every layer lines up with: `count` frames at `rate`, either the PNGs in
    `folder` (relative to the stack) or frames start, start + stride, ... of the file at `path`,
    centre part `crop` [top, left, height, width] (None: whole frames). size: [width, height]."""

    count: int
    rate: Fraction
    size: tuple[int, int]
    folder: str | None = None
    path: str | None = None
    start: int = 0
    stride: int = 1
    crop: tuple[int, int, int, int] | None = None

    def to_dict(self) -> dict:
        return {"folder": self.folder, "path": self.path, "start": self.start,
                "count": self.count, "stride": self.stride, "fps": str(self.rate),
                "fps_value": float(self.rate), "size": list(self.size),
                "crop": None if self.crop is None else list(self.crop)}

    def frames(self, root: Path) -> Iterator[torch.Tensor]:
        """uint8 `[H, W, 3]` source frames, one at a time."""
        if self.folder is not None:
            frames = video.iter_png_folder(root / self.folder, 0, self.count,
                                           f"{root / STACK_FILE}: source")
        else:
            frames = video.iter_frames(self.path, self.start, self.count,
                                       f"{root / STACK_FILE}: source", self.stride)
        for frame in frames:
            if self.crop is not None:
                top, left, height, width = self.crop
                frame = frame[top:top + height, left:left + width]
            yield frame[..., :3]


@dataclass(frozen=True)
class StackLayer:
    """One edit: `frames` RGBA PNGs (straight alpha) in `rgba` (a folder relative to the stack),
    the source frame its first frame lies on (`offset`), its prompt and settings file."""

    rgba: str
    frames: int
    prompt: str | None = None
    settings: str | None = None
    offset: int = 0
    name: str = "edit"

    def to_dict(self) -> dict:
        return {"name": self.name, "rgba": self.rgba, "frames": self.frames,
                "offset": self.offset, "prompt": self.prompt, "settings": self.settings}


@dataclass
class Stack:
    """A shot's source and its layers, bottom to top; `final`: the folder of the composited
    frames the run wrote (None: not rendered yet)."""

    source: StackSource
    layers: list[StackLayer] = field(default_factory=list)
    final: str | None = None

    def to_dict(self) -> dict:
        return {"version": STACK_VERSION, "compositing": layers.COMPOSITING,
                "source": self.source.to_dict(), "layers": [x.to_dict() for x in self.layers],
                "final": self.final}


def write_stack(root: str | Path, stack: Stack) -> Path:
    return save_json(Path(root) / STACK_FILE, stack.to_dict())


def read_stack(root: str | Path) -> Stack:
    """Read and check `root/stack.json`: its version, the source and every layer's frames are
    there, no layer is listed twice. Errors name the file and what to do."""
    root = Path(root)
    path = root / STACK_FILE
    if not path.is_file():
        raise StackError(f"{root}: no {STACK_FILE}; it is not a finished Vera run (a run writes "
                         f"{STACK_FILE} last, so an interrupted one has none; runs made before "
                         "layer stacks have none either: edit the shot again)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StackError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict) or data.get("version") != STACK_VERSION:
        found = data.get("version") if isinstance(data, dict) else None
        raise StackError(f"{path}: version {found!r} is not one this Vera reads "
                         f"({STACK_VERSION}); it was written by another version or edited")
    source = _read_source(data.get("source"), path)
    entries = data.get("layers")
    if not isinstance(entries, list) or not entries:
        raise StackError(f"{path}: 'layers' must be a list of at least one layer")
    stack = Stack(source, [_read_layer(entry, index, path) for index, entry in
                           enumerate(entries)], _field(data, "final", str, path, "the stack", None))
    seen: dict[str, int] = {}
    for index, layer in enumerate(stack.layers):
        key = (root / layer.rgba).resolve().as_posix()
        if key in seen:
            raise StackError(f"{path}: layers {seen[key]} and {index} are the same layer "
                             f"({layer.rgba}); a layer can be in a stack once (remove one)")
        seen[key] = index
        _check_layer_files(root, layer, index, path)
    _check_source_files(root, source, path)
    return stack


def _field(data: dict, key: str, kind, path: Path, where: str, default=...):
    value = data.get(key, default)
    if value is ...:
        raise StackError(f"{path}: {where} has no '{key}'")
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise StackError(f"{path}: {where} '{key}' is {value!r}, not a {kind.__name__}")
    return value


def _read_source(data, path: Path) -> StackSource:
    if not isinstance(data, dict):
        raise StackError(f"{path}: 'source' must say where the source frames are")
    folder = _field(data, "folder", str, path, "source", None)
    file = _field(data, "path", str, path, "source", None)
    if (folder is None) == (file is None):
        raise StackError(f"{path}: source needs exactly one of 'folder' (frames in the stack) "
                         "and 'path' (the original file)")
    count = _field(data, "count", int, path, "source")
    start = _field(data, "start", int, path, "source", 0)
    stride = _field(data, "stride", int, path, "source", 1)
    if count < 1 or start < 0 or stride < 1:
        raise StackError(f"{path}: source count {count}, start {start}, stride {stride}: count "
                         "and stride must be at least 1, start at least 0")
    try:
        rate = Fraction(_field(data, "fps", str, path, "source"))
        if rate <= 0:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise StackError(f"{path}: source fps {data.get('fps')!r} is not a rate such as "
                         "'24000/1001'") from None
    size = data.get("size")
    crop = data.get("crop")
    if not _ints(size, 2) or (crop is not None and not _ints(crop, 4)):
        raise StackError(f"{path}: source size {size!r} must be [width, height] and crop "
                         f"{crop!r} [top, left, height, width] or null")
    return StackSource(count, rate, tuple(size), folder, file, start, stride,
                       None if crop is None else tuple(crop))


def _ints(value, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))


def _read_layer(entry, index: int, path: Path) -> StackLayer:
    where = f"layer {index}"
    if not isinstance(entry, dict):
        raise StackError(f"{path}: {where} must be an object with 'rgba' and 'frames'")
    rgba = _field(entry, "rgba", str, path, where)
    frames = _field(entry, "frames", int, path, where)
    offset = _field(entry, "offset", int, path, where, 0)
    if frames < 1:
        raise StackError(f"{path}: {where} has {frames} frames; a layer has at least one")
    return StackLayer(rgba, frames, _field(entry, "prompt", str, path, where, None),
                      _field(entry, "settings", str, path, where, None), offset,
                      _field(entry, "name", str, path, where, f"layer {index}"))


def _check_layer_files(root: Path, layer: StackLayer, index: int, path: Path) -> None:
    folder = root / layer.rgba
    found = len(_pngs(folder)) if folder.is_dir() else 0
    if found < layer.frames:
        raise StackError(f"{path}: layer {index} ({layer.name}) needs {layer.frames} RGBA PNGs "
                         f"in {folder}, found {found}; restore the layer or remove it from the "
                         "list")


def _check_source_files(root: Path, source: StackSource, path: Path) -> None:
    if source.folder is not None:
        folder = root / source.folder
        found = len(_pngs(folder)) if folder.is_dir() else 0
        if found < source.count:
            raise StackError(f"{path}: the source needs {source.count} PNGs in {folder}, found "
                             f"{found}")
    elif not Path(source.path).exists():
        raise StackError(f"{path}: the source file {source.path} is not there; put it back or "
                         "correct 'path'")


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def composite_over(below: torch.Tensor, rgba: torch.Tensor) -> torch.Tensor:
    """uint8 `[H, W, 3]` under uint8 straight `[H, W, 4]` -> uint8 `[H, W, 3]`: the edit's own
    eq. 2 (exactly `below` where alpha is 0)."""
    edit, alpha = rgba[..., :3].float() / 255, rgba[..., 3:].float() / 255
    return layers.final_composite(below[None], edit[None], alpha[None])[0]


def render_frames(root: str | Path, stack: Stack) -> Iterator[torch.Tensor]:
    """The stack composited, uint8 `[H, W, 3]` per source frame: every layer over the source in
    order, each on the frames it covers (frame k of the source meets frame k - offset of a
    layer; layer frames before the source's first are skipped)."""
    root = Path(root)
    readers = [_LayerReader(root, layer) for layer in stack.layers]
    for index, frame in enumerate(stack.source.frames(root)):
        for reader in readers:
            rgba = reader.frame(index - reader.layer.offset)
            if rgba is None:
                continue
            if rgba.shape[:2] != frame.shape[:2]:
                raise StackError(f"{root / reader.layer.rgba}: layer {reader.layer.name} is "
                                 f"{rgba.shape[1]}x{rgba.shape[0]}, the source "
                                 f"{frame.shape[1]}x{frame.shape[0]}")
            frame = composite_over(frame, rgba)
        yield frame


class _LayerReader:
    """A layer's frames, by index (None outside the layer)."""

    def __init__(self, root: Path, layer: StackLayer):
        self.layer, self.files = layer, _pngs(root / layer.rgba)[:layer.frames]

    def frame(self, index: int) -> torch.Tensor | None:
        if not 0 <= index < self.layer.frames:
            return None
        frame = video.read_png(self.files[index])
        if frame.shape[-1] != 4:
            raise StackError(f"{self.files[index]}: a layer frame must be RGBA, it has "
                             f"{frame.shape[-1]} channels")
        return frame


def render_stack(root: str | Path, out: str | Path, overwrite: bool = False,
                 name: str = "DIR") -> dict:
    """Composite the stack in `root` into `out` (a new or empty folder; `overwrite` replaces
    one): final_composite/final_NNNNN.png and final_composite.mp4 at the source's exact rate with
    the sound of the run's own final composite mp4 (when it has one). Built beside `out` and
    renamed into place when complete. Returns what was written."""
    from ..media.files import staged_folder

    root, out = Path(root), Path(out)
    stack = read_stack(root)
    if out.resolve() == root.resolve():
        raise StackError(f"--out {out} is the stack {name} itself; render into another folder")
    audio, sound = None, final_video(root, stack)
    if sound is not None:
        audio = video.read_audio(sound, 0.0, stack.source.count / stack.source.rate)
    with staged_folder(out, overwrite) as staging:
        pngs = video.PngSequenceWriter(staging / "final_composite", "final",
                                       {"vera:compositing": layers.COMPOSITING})
        with video.VideoWriter(staging / "final_composite.mp4", stack.source.rate,
                               audio=audio) as mp4:
            for frame in render_frames(root, stack):
                pngs.write(frame[None])
                mp4.write(frame[None])
        save_json(staging / "render.json", {"stack": str(root.resolve()), "frames": pngs.count,
                                            "layers": [x.name for x in stack.layers],
                                            "fps": str(stack.source.rate)})
    return {"frames": pngs.count, "final_png": "final_composite/",
            "final_mp4": "final_composite.mp4"}


def final_video(root: Path, stack: Stack) -> Path | None:
    """The run's final composite mp4 beside its final PNG folder (it carries the shot's sound),
    or None."""
    if stack.final is None:
        return None
    path = Path(root) / (stack.final.rstrip("/") + ".mp4")
    return path if path.is_file() else None


def stack_over(earlier: str | Path, into: Path, stack: Stack) -> Stack:
    """Copy the layers of the finished run `earlier` into `into/layers/N/` (each layer's PNGs,
    its settings.json, and its matte and report.json where they sit beside them) and its source
    frames when it holds a copy, and return its stack re-pointed at the copies, for a new edit on
    top. `stack`: the earlier run's, as `read_stack` checked it."""
    earlier = Path(earlier)
    copied = []
    for number, layer in enumerate(stack.layers, start=1):
        target = into / LAYERS_FOLDER / str(number)
        target.mkdir(parents=True)
        rgba = f"{LAYERS_FOLDER}/{number}/{Path(layer.rgba).name}/"
        shutil.copytree(earlier / layer.rgba, into / rgba)
        home = (earlier / layer.rgba).parent
        for extra in ("alpha", "report.json"):
            if (home / extra).is_dir():
                shutil.copytree(home / extra, target / extra)
            elif (home / extra).is_file():
                shutil.copy2(home / extra, target / extra)
        settings = None
        if layer.settings is not None and (earlier / layer.settings).is_file():
            shutil.copy2(earlier / layer.settings, target / "settings.json")
            settings = f"{LAYERS_FOLDER}/{number}/settings.json"
        copied.append(replace(layer, rgba=rgba, settings=settings))
    source = stack.source
    if source.folder is not None:
        shutil.copytree(earlier / source.folder, into / SOURCE_FOLDER)
        source = replace(source, folder=f"{SOURCE_FOLDER}/")
    return Stack(source, copied)


def write_stack_folder(root: Path, source: torch.Tensor, rate, lower: list, top: StackLayer,
                       final: str, name: str = "") -> Stack:
    """A run's stack from frames in memory (ComfyUI): the source uint8 `[T, H, W, 3]` copied to
    {name}source/, each lower layer (straight RGBA uint8 `[T, H, W, 4]`, its settings.json
    record or None) to {LAYERS_FOLDER}/N/, `top` (already written) last. Returns the stack
    (`comp_scripts.finish_stack` writes its scripts and stack.json)."""
    root = Path(root)
    pngs = video.PngSequenceWriter(root / f"{name}{SOURCE_FOLDER}", SOURCE_PREFIX,
                                   {"vera:compositing": layers.COMPOSITING})
    for first in range(0, source.shape[0], 16):
        pngs.write(source[first:first + 16])
    stacked = []
    for number, (rgba, record) in enumerate(lower, start=1):
        home = root / LAYERS_FOLDER / str(number)
        video.PngSequenceWriter(home / "edit_layer_rgba", "edit").write(rgba)
        settings = None
        if record is not None:
            save_json(home / "settings.json", record)
            settings = f"{LAYERS_FOLDER}/{number}/settings.json"
        stacked.append(StackLayer(f"{LAYERS_FOLDER}/{number}/edit_layer_rgba/", rgba.shape[0],
                                  (record or {}).get("prompt"), settings, 0, f"edit {number}"))
    size = (int(source.shape[2]), int(source.shape[1]))
    stack = Stack(StackSource(int(source.shape[0]), video.exact_rate(rate), size,
                              folder=f"{name}{SOURCE_FOLDER}/"),
                  [*stacked, replace(top, name=f"edit {len(stacked) + 1}")], final)
    return stack

