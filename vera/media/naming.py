"""Where a run's files go: file-name tokens, safe folder names, a new numbered folder per run.

    expand_tokens("shots/%date:yyyy-MM-dd%/%Vera Sampler.seed%", when, size=(480, 832), graph=g)
    subfolder, name = safe_prefix("shots/2026-11-22/42")  # -> (Path("shots/2026-11-22"), "42")
    folder = publish_folder(staging, output / subfolder, name)  # output/shots/.../42_00001
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 100
# the date parts ComfyUI's frontend understands in %date:...%, longest first
_DATE_PARTS = (("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("M", "%-m"), ("dd", "%d"), ("d", "%-d"),
               ("hh", "%H"), ("h", "%-H"), ("mm", "%M"), ("m", "%-M"), ("ss", "%S"), ("s", "%-S"))
_SIMPLE = {"year": "%Y", "month": "%m", "day": "%d", "hour": "%H", "minute": "%M", "second": "%S"}
_TOKEN = re.compile(r"%([^%]+)%")


def _date(fmt: str, when: time.struct_time) -> str:
    out, i = [], 0
    while i < len(fmt):
        part = next(((k, v) for k, v in _DATE_PARTS if fmt.startswith(k, i)), None)
        if part is None:
            out.append(fmt[i])
            i += 1
            continue
        code = part[1]
        value = time.strftime(code.replace("-", ""), when)
        out.append(value.lstrip("0") or "0" if code.startswith("%-") else value)
        i += len(part[0])
    return "".join(out)


def _graph_value(graph: dict | None, node: str, widget: str) -> str | None:
    """The value of input `widget` on the node titled (or of class) `node` in an API-format prompt;
    None when there is no such node or the input is a link."""
    for entry in (graph or {}).values():
        title = (entry.get("_meta") or {}).get("title")
        if node in (title, entry.get("class_type")):
            value = (entry.get("inputs") or {}).get(widget)
            return None if isinstance(value, (list, dict)) or value is None else str(value)
    return None


def expand_tokens(prefix: str, when: time.struct_time | None = None,
                  size: tuple[int, int] | None = None, graph: dict | None = None) -> str:
    """Replace the tokens core ComfyUI save nodes understand: %date:yyyy-MM-dd% (also hh, mm, ss,
    M, d, ...), %year% %month% %day% %hour% %minute% %second%, %width% %height% (size is
    (height, width)), and %Node title.input% from the prompt graph. Unknown tokens stay as text
    (and then become '_' in the folder name)."""
    when = when or time.localtime()

    def replace(match: re.Match) -> str:
        token = match.group(1)
        if token.startswith("date:"):
            return _date(token[5:], when)
        if token in _SIMPLE:
            return time.strftime(_SIMPLE[token], when)
        if token in ("width", "height") and size is not None:
            return str(size[1] if token == "width" else size[0])
        if "." in token:
            node, _, widget = token.rpartition(".")
            value = _graph_value(graph, node, widget)
            if value is not None:
                return value
        return match.group(0)

    return _TOKEN.sub(replace, prefix)


def safe_prefix(prefix: str) -> tuple[Path, str]:
    """"shots/sh010 edit" -> (Path("shots"), "sh010_edit"). Every part is reduced to letters,
    digits, `.`, `_` and `-`; `..` and absolute paths are refused so nothing lands outside the
    output folder."""
    parts = [p for p in re.split(r"[\\/]+", prefix.strip()) if p not in ("", ".")]
    if (prefix.strip().startswith(("/", "\\")) or any(p == ".." for p in parts)
            or re.match(r"^[A-Za-z]:", prefix)):
        raise ValueError(f"filename_prefix {prefix!r}: use a relative name such as "
                         "'vera/shot010'; it must stay inside ComfyUI's output folder")
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
    taken = ([int(m.group(1)) for p in parent.glob(f"{name}_*") if (m := pattern.match(p.name))]
             if parent.is_dir() else [])
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
