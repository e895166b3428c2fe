"""Safe, checked access to .safetensors files: header parsing, truncation checks, atomic writes.

Only safetensors is read; nothing is ever unpickled.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import VeraError
from ..media.files import atomic_path

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(VeraError, ValueError):
    """A model file that cannot be used, with a message that says which file and what to do."""


@dataclass
class TensorEntry:
    """One tensor of a safetensors file, from its header: dtype name, shape, and where its bytes
    lie (`offsets` relative to the data section, which starts at `data_start`)."""

    dtype: str
    shape: tuple[int, ...]
    file: Path
    offsets: tuple[int, int] = (0, 0)
    data_start: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize


def _parse_entry(path: Path, name: str, info, data_start: int) -> TensorEntry:
    """Check one header entry completely; a damaged header never reaches safetensors' reader."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {name!r} in the header {what}; the file is "
                               "damaged or not a safetensors file: re-download or re-export it")

    if not isinstance(info, dict):
        raise bad(f"is {type(info).__name__}, not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise bad(f"has dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**40 for d in shape):
        raise bad(f"has shape {shape!r}, not a list of sizes")
    pair = isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
    if not pair or not 0 <= offsets[0] <= offsets[1]:
        raise bad(f"has data_offsets {offsets!r}, not [begin, end] with 0 <= begin <= end")
    entry = TensorEntry(dtype, tuple(shape), path, (offsets[0], offsets[1]), data_start)
    if offsets[1] - offsets[0] != entry.nbytes:
        raise bad(f"spans {offsets[1] - offsets[0]} bytes but {dtype} x {tuple(shape)} needs "
                  f"{entry.nbytes}")
    return entry


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse and fully check a safetensors header (entries, offsets without overlaps, metadata),
    and check the file holds every byte the header promises. Any problem is a CheckpointError
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: file is {size} bytes, too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(_MAX_HEADER, size - 8):
            raise CheckpointError(
                f"{path}: not a safetensors file or truncated (header length {header_len} bytes, "
                f"file {size} bytes); re-download or re-export the file"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON; the file is "
                              "damaged") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a JSON {type(header).__name__}, "
                              "not an object; the file is damaged or not a safetensors file")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise CheckpointError(f"{path}: the header's __metadata__ must map text to text; the "
                              "file is damaged")
    data_start = 8 + header_len
    entries = {name: _parse_entry(path, name, info, data_start) for name, info in header.items()}
    end = 0
    for name, entry in sorted(entries.items(), key=lambda item: item[1].offsets):
        if entry.offsets[0] < end:
            raise CheckpointError(f"{path}: tensor {name!r} overlaps the tensor before it in the "
                                  "file; the file is damaged: re-download or re-export it")
        end = max(end, entry.offsets[1])
    if data_start + end > size:
        raise CheckpointError(
            f"{path}: file is truncated: its header needs {data_start + end} bytes but it has "
            f"{size}; the download or copy did not finish: fetch the file again"
        )
    return entries, metadata


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """One tensor, read with a single `readinto` into a new CPU tensor of its stored dtype (the
    header was checked by `read_header`; nothing stays memory-mapped)."""
    raw = torch.empty(entry.nbytes, dtype=torch.uint8)
    with open(entry.file, "rb", buffering=0) as f:
        f.seek(entry.data_start + entry.offsets[0])
        if entry.nbytes and f.readinto(raw.numpy()) != entry.nbytes:
            raise CheckpointError(f"{entry.file}: the file ended while reading a tensor; it is "
                                  "truncated: fetch it again")
    return raw.view(DTYPES[entry.dtype]).reshape(entry.shape)


def load_tensors(entries: dict[str, TensorEntry], names=None) -> dict[str, torch.Tensor]:
    """Read the named tensors (all by default) on the CPU."""
    return {n: read_tensor(entries[n]) for n in (entries if names is None else names)}


def atomic_save(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file tensor by tensor (never a second copy of the whole state),
    atomically (see `vera.media.files.atomic_path`). Values are tensors, or lazy ones (anything
    with `shape`, `dtype` and `read()`, such as `vera.checkpoints.containers.TensorRef`) that are
    produced one at a time while writing. The header is padded to 8 bytes, as the format's own
    writer does."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    header, offset = {}, 0
    for key, tensor in tensors.items():
        if tensor.dtype not in names:
            raise ValueError(f"{key}: dtype {tensor.dtype} cannot be stored in safetensors")
        shape = tuple(tensor.shape)
        size = tensor.dtype.itemsize
        for dim in shape:
            size *= dim
        header[key] = {"dtype": names[tensor.dtype], "shape": list(shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key, tensor in tensors.items():
            data = tensor.read() if hasattr(tensor, "read") else tensor
            data = data.detach().to("cpu").contiguous()
            if list(data.shape) != header[key]["shape"] or data.dtype != tensor.dtype:
                raise ValueError(f"{key}: produced {data.dtype} {tuple(data.shape)}, announced "
                                 f"{tensor.dtype} {header[key]['shape']}")
            if data.numel():
                f.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
    return Path(path)

