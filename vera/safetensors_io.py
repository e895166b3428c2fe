"""Safe, checked access to .safetensors files: header parsing, truncation checks, atomic writes.

Only safetensors is read; nothing is ever unpickled.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .files import atomic_path

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A model file that cannot be used, with a message that says which file and what to do."""


@dataclass
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    file: Path

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse a safetensors header and check the file holds every byte the header promises."""
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
                f"{path}: not a safetensors file or truncated (header length {header_len} bytes, file {size} bytes); "
                "only .safetensors checkpoints are supported: re-download or re-export the file"
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON; the file is damaged") from None
    metadata = header.pop("__metadata__", None) or {}
    entries, data_end = {}, 0
    for name, info in header.items():
        entries[name] = TensorEntry(info["dtype"], tuple(info["shape"]), path)
        data_end = max(data_end, info["data_offsets"][1])
    if 8 + header_len + data_end > size:
        raise CheckpointError(
            f"{path}: file is truncated: its header needs {8 + header_len + data_end} bytes but it has {size}; "
            "the download or copy did not finish: fetch the file again"
        )
    return entries, metadata


def load_tensors(entries: dict[str, TensorEntry], names=None) -> dict[str, torch.Tensor]:
    """Read the named tensors (all by default) from the files their entries point to, on CPU."""
    names = list(entries) if names is None else list(names)
    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(entries[n].file, []).append(n)
    out = {}
    for file, keys in by_file.items():
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for k in keys:
                out[k] = f.get_tensor(k)
    return out


def atomic_save(tensors: dict[str, torch.Tensor], path: Path,
                metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (see `vera.files.atomic_path`)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
    return Path(path)
