"""Writing files safely: every write goes to a temporary name beside its target and is renamed into
place, so a crash never leaves a half-written file and a reader never sees one."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process's umask, read without changing it (Linux); the usual 0o022 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


def as_if_created(path: str | Path, folder: bool = False) -> None:
    """Give a file or folder made by `tempfile` (private, 0600 / 0700) the permissions a plain
    `open` / `mkdir` would have given it, so outputs are as readable as any other file."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        as_if_created(tmp)
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


@contextmanager
def staged_folder(target: str | Path, replace: bool = False, name: str = "--out"):
    """Build a folder's contents in a hidden sibling, then rename it onto `target` only when the
    block succeeds: an interrupted or failed run leaves nothing that looks complete, and a reader
    never sees a half-written folder.

    Checked before the block runs (so before any compute): `target` must not be a file, must be
    empty unless `replace`, and its parent must be writable. With `replace`, the old folder is
    removed only after the new one is in place. `name` is what errors call the folder.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{name} {target} is a file, not a folder; choose another name")
    if target.is_dir() and any(target.iterdir()) and not replace:
        raise FileExistsError(
            f"{name} {target} already holds files; choose a new folder, or pass "
            "--overwrite to replace it (only once the new run is complete)"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
    except OSError as error:
        blocker = next((p for p in target.parents if p.is_file()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else error.strerror or error
        raise PermissionError(
            f"{name} {target}: cannot write into {target.parent} ({reason}); "
            "choose a folder you can write to"
        ) from None
    try:
        yield staging
        as_if_created(staging, folder=True)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(target, old)
        os.rename(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class ClosedOnExit:
    """For writers with `close()` (publish what was written) and `abort()` (discard it) that keep
    `_closed`: a `with` block closes them when it ends normally and aborts them on an error."""

    _closed = False

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.abort()
        elif not self._closed:
            self.close()
