"""Opening a checkpoint in any container, tensor by tensor, without reading what is not asked for.

Containers: one `.safetensors` file; sharded safetensors with their `*.index.json` (the index, a
shard, or the folder); a diffusers-style folder (`model_index.json` and a `transformer/`
subfolder, or just `config.json` with shards, whose head count is then used); `.pt` / `.pth` /
`.bin` / `.ckpt` through `torch.load(weights_only=True, mmap=True)` only, with the usual nesting
(`state_dict`, `model`, `module`, `ema`, ...) unwrapped. A file that needs arbitrary unpickling is
refused: unpickling can run code.

Safetensors tensors are read with one `readinto` each straight into a new tensor (see
`safetensors_io.read_tensor`), so reading never holds more than the tensor being read, and nothing
is memory-mapped behind the caller's back.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .safetensors_io import DTYPES, CheckpointError, TensorEntry, read_header, read_tensor

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NESTING_KEYS = (
    "ema",
    "model_ema",
    "ema_model",
    "state_dict",
    "model",
    "module",
    "net",
    "model_state_dict",
    "weights",
    "params",
)  # tried in this order; EMA first
PIPELINE_PARTS = (
    "vae",
    "text_encoder",
    "tokenizer",
    "scheduler",
    "image_encoder",
    "image_processor",
    "feature_extractor",
)


@dataclass
class TensorRef:
    """One tensor of a checkpoint: its shape and dtype without reading it; `read()` gives it on the
    CPU in its stored dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    read: Callable[[], torch.Tensor] = field(repr=False)

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for s in self.shape:
            n *= s
        return n


@dataclass
class Checkpoint:
    """An opened container. `tensors` keeps the stored order; `config` is a diffusers config.json
    (empty when there is none); `notes` say what was unwrapped or chosen, for `info --explain`."""

    path: Path
    container: str
    tensors: dict[str, TensorRef]
    metadata: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: t.shape for k, t in self.tensors.items()}


def _safetensor_refs(entries: dict[str, TensorEntry]) -> dict[str, TensorRef]:
    return {
        name: TensorRef(name, e.shape, DTYPES[e.dtype], (lambda e=e: read_tensor(e)))
        for name, e in entries.items()
    }


def _open_safetensors(path: Path) -> Checkpoint:
    entries, metadata = read_header(path)
    return Checkpoint(path, "safetensors", _safetensor_refs(entries), metadata)


def _open_shards(
    files: list[Path], path: Path, container: str, config: dict, weight_map: dict | None = None
) -> Checkpoint:
    """Shards of one model -> one Checkpoint; with an index, every tensor it lists must be in the
    shard it names."""
    tensors, metadata = {}, {}
    for file in files:
        entries, meta = read_header(file)
        duplicates = sorted(set(entries) & set(tensors))
        if duplicates:
            raise CheckpointError(
                f"{path}: tensor {duplicates[0]!r} is in more than one shard "
                f"({file.name} and another); the shards do not belong together"
            )
        tensors.update(_safetensor_refs(entries))
        metadata.update(meta)
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            shard = weight_map[missing[0]]
            raise CheckpointError(
                f"{path}: the index lists {len(missing)} tensors that no shard holds "
                f"(first: {missing[0]!r} in {shard}); a shard is missing or "
                "incomplete"
            )
    return Checkpoint(path, container, tensors, metadata, config)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: the {what} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: the {what} must be a JSON object")
    return data


def _open_index(index: Path) -> Checkpoint:
    data = _read_json(index, "shard index")
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: a shard index needs a weight_map of tensor -> shard file")
    files = []
    for name in dict.fromkeys(weight_map.values()):
        file = index.parent / str(name)
        if not file.is_file() or file.parent.resolve() != index.parent.resolve():
            raise CheckpointError(
                f"{index}: shard {name!r} is not beside the index; put every "
                "shard in the same folder"
            )
        files.append(file)
    folder = index.parent
    config = (
        _read_json(folder / "config.json", "config") if (folder / "config.json").is_file() else {}
    )
    return _open_shards(files, index, "sharded safetensors", config, weight_map)


def _open_folder(folder: Path) -> Checkpoint:
    if (folder / "model_index.json").is_file():
        parts = _read_json(folder / "model_index.json", "model index")
        models = [
            folder / name
            for name in parts
            if not name.startswith("_") and name not in PIPELINE_PARTS and (folder / name).is_dir()
        ]
        if not models:
            raise CheckpointError(
                f"{folder}: a diffusers pipeline folder without a transformer "
                "subfolder (model_index.json lists none)"
            )
        opened = [_open_folder(m) for m in models]
        if len(opened) == 1:
            only = opened[0]
            only.notes.insert(0, f"diffusers pipeline folder: read {models[0].name}/")
            return Checkpoint(
                folder,
                f"diffusers folder ({only.container})",
                only.tensors,
                only.metadata,
                only.config,
                only.notes,
            )
        tensors = {f"{m.name}.{k}": t for m, c in zip(models, opened) for k, t in c.tensors.items()}
        config = next((c.config for c in opened if c.config), {})
        note = f"diffusers pipeline folder: {', '.join(m.name for m in models)} (names prefixed)"
        return Checkpoint(folder, "diffusers folder", tensors, {}, config, [note])
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return _open_index(indexes[0])
    if len(indexes) > 1:
        raise CheckpointError(f"{folder}: {len(indexes)} shard indexes; point at one of them")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: folder has no .safetensors files")
    config = (
        _read_json(folder / "config.json", "config") if (folder / "config.json").is_file() else {}
    )
    return _open_shards(
        files, folder, "safetensors folder" if len(files) > 1 else "safetensors", config
    )


def _tensor_dicts(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in nested dicts, with dotted names."""
    out = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, torch.Tensor):
                out[name] = value
            elif isinstance(value, dict):
                out.update(_tensor_dicts(value, f"{name}."))
    return out


def _unwrap(obj, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A loaded pickle -> the state dict in it (nesting unwrapped), and what was chosen."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict; save "
            "model.state_dict() instead"
        )
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), []
    nested = {k: v for k, v in obj.items() if isinstance(v, dict) and _tensor_dicts(v)}
    for key in NESTING_KEYS:
        if key in nested:
            others = sorted(set(nested) - {key})
            note = f"state dict taken from {key!r}" + (
                f" (ignored: {', '.join(others)})" if others else ""
            )
            tensors, notes = _unwrap(nested[key], path)
            return tensors, [note, *notes]
    tensors = _tensor_dicts(obj)
    if not tensors:
        raise CheckpointError(
            f"{path}: holds no tensors (keys: {', '.join(map(str, list(obj)[:8]))})"
        )
    return tensors, ["tensors gathered from the whole file (no state_dict / model / ema key)"]


def _open_pickle(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: loading it would need arbitrary unpickling, which can run code, so it is not "
            f"loaded ({str(error).splitlines()[0][:200]}); save a plain state dict "
            "(torch.save(model.state_dict(), ...)) or convert it to .safetensors"
        ) from None
    except RuntimeError as error:
        if "mmap" in str(error) or "zip" in str(error).lower():
            raise CheckpointError(
                f"{path}: an old torch.save format that cannot be memory-mapped; "
                "re-save it with a current torch or convert it to .safetensors"
            ) from None
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({error})") from None
    except (EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged or not a torch checkpoint ({error})") from None
    tensors, notes = _unwrap(obj, path)
    refs = {k: TensorRef(k, tuple(v.shape), v.dtype, (lambda v=v: v)) for k, v in tensors.items()}
    return Checkpoint(path, "torch pickle (weights only, memory-mapped)", refs, {}, {}, notes)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open any supported container (see the module docstring); nothing is read but headers."""
    path = Path(path)
    if path.is_dir():
        return _open_folder(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.name.endswith(".index.json"):
        return _open_index(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return _open_pickle(path)
    for index in sorted(path.parent.glob("*.safetensors.index.json")):
        weight_map = _read_json(index, "shard index").get("weight_map")
        if isinstance(weight_map, dict) and path.name in weight_map.values():
            checkpoint = _open_index(index)
            checkpoint.notes.insert(0, f"{path.name} is one shard: read all of {index.name}")
            return checkpoint
    return _open_safetensors(path)
