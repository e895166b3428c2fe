"""Writing files safely: every write goes to a temporary name beside its target and is renamed into
place, so a crash never leaves a half-written file and a reader never sees one."""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def json_safe(value):
    """Non-finite floats -> "inf" / "-inf" / "nan" (JSON has none of them), tuples -> lists,
    recursively; so every file we write is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def save_json(path: str | Path, data, indent: int | None = 2) -> Path:
    """Write `data` as JSON atomically (see `json_safe`); other objects are written as str()."""
    text = json.dumps(json_safe(data), indent=indent, default=str, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def relative_to(path: str | Path | None, root: str | Path) -> str | None:
    """`path` as recorded in a run's files: relative to `root`, with POSIX separators (`../` where
    it lies outside). Keeps machine-specific absolute paths out of files that are shared."""
    if path is None:
        return None
    path, root = Path(path), Path(root)
    try:
        return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()
