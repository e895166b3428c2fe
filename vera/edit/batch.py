"""`python -m vera edit --batch shots.jsonl`: many shots, each an edit of its own, shared over the
processes of a farm.

One JSON object per line: {"input": ..., "prompt": ..., "out": ..., "mask": ..., "options":
{"steps": 30, "seed": 2, ...}} (options are `edit` flags without the dashes; true for a switch).
Flags on the batch's own command line are every shot's defaults. Under torchrun (or any launcher
that sets RANK and WORLD_SIZE) process r edits shots r, r + N, ...: data parallel, no traffic
between processes. A shot whose --out already holds a finished run is skipped; a shot that fails
is recorded and the others still run. Each process writes its summary (what was edited, skipped,
failed, and the lines that could not be read) beside the batch file.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..media.files import save_json
from .stack import STACK_FILE

SHOT_KEYS = ("input", "prompt", "out", "mask", "options")


@dataclass(frozen=True)
class BatchShot:
    """One line of a batch: its number (from 1), the edit flags it sets, its output folder."""

    line: int
    flags: list[str]
    out: str


class _Strict(argparse.ArgumentParser):
    """An argument parser that raises instead of exiting (a bad shot must not end the batch)."""

    def error(self, message):
        raise ValueError(message)


def shot_parser(add_parser) -> argparse.ArgumentParser:
    """The edit parser (from `add_parser(sub)`) that returns only the flags given."""
    root = _Strict(prog="vera", add_help=False)
    add_parser(root.add_subparsers(dest="command"))
    edit = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    for action in edit.choices["edit"]._actions:
        action.default, action.required = argparse.SUPPRESS, False
    return root


def read_batch(path: str | Path) -> tuple[list[BatchShot], list[dict]]:
    """The shots of a batch file and its problems ([{"line", "error"}]): lines that are not a
    JSON object with a prompt and an out, unknown keys, and shots that share an --out (all of
    them refused, so no run overwrites another)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--batch {path}: cannot read it ({error})") from None
    shots, problems = [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            shots.append(_shot(number, text))
        except ValueError as error:
            problems.append({"line": number, "error": f"{path}:{number}: {error}"})
    by_out: dict[str, list[BatchShot]] = {}
    for shot in shots:
        by_out.setdefault(str(Path(shot.out).resolve()), []).append(shot)
    for out, same in by_out.items():
        if len(same) > 1:
            numbers = ", ".join(str(s.line) for s in same)
            problems += [{"line": s.line, "error": f"{path}:{s.line}: lines {numbers} all write "
                          f"--out {s.out}; give each shot its own"} for s in same]
    refused = {p["line"] for p in problems}
    return [s for s in shots if s.line not in refused], sorted(problems, key=lambda p: p["line"])


def _shot(number: int, text: str) -> BatchShot:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(data, dict):
        raise ValueError("a shot is a JSON object with \"prompt\" and \"out\"")
    unknown = sorted(set(data) - set(SHOT_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; a shot has {', '.join(SHOT_KEYS)}")
    for key in ("prompt", "out"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"\"{key}\" must be given as text")
    flags = []
    for key in ("input", "prompt", "out", "mask"):
        if data.get(key) is not None:
            flags += [f"--{key}", str(data[key])]
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError("\"options\" must be an object of edit flags, e.g. {\"steps\": 30}")
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag, str(value)]
    return BatchShot(number, flags, data["out"])


def finished(out: str | Path) -> bool:
    """Whether `out` holds a finished run (its stack.json is written last)."""
    return (Path(out) / STACK_FILE).is_file()


def run_batch(args, add_parser, run_edit) -> int:
    """Edit this process's share of the batch in `args.batch` with `run_edit(edit_args,
    alone=True)` (each shot whole in this process); the
    batch's own flags (`args`) are every shot's defaults. Returns 0 when every shot of this
    process was edited or skipped and the file had no bad lines, else 2."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    batch = Path(args.batch)
    shots, problems = read_batch(batch)
    parser = shot_parser(add_parser)
    base = {k: v for k, v in vars(args).items() if k not in ("batch", "func")}
    done = {"edited": [], "skipped": [], "failed": []}
    for shot in shots[rank::world]:
        entry = {"line": shot.line, "out": shot.out}
        if finished(shot.out):
            done["skipped"].append(entry)
            print(f"[{rank}] line {shot.line}: {shot.out} is finished; skipped", flush=True)
            continue
        start = time.perf_counter()
        try:
            given = vars(parser.parse_args(["edit", *shot.flags]))
            given.pop("command", None)
            run_edit(argparse.Namespace(**{**base, **given, "batch": None}), alone=True)
            done["edited"].append({**entry, "seconds": round(time.perf_counter() - start, 1)})
        except Exception as error:  # noqa: BLE001  (one shot's failure must not stop the rest)
            kind = type(error).__name__
            message = str(error) if isinstance(error, (ValueError, OSError)) else \
                traceback.format_exception_only(error)[-1].strip()
            done["failed"].append({**entry, "error": f"{kind}: {message}"})
            print(f"[{rank}] line {shot.line}: failed: {message}", flush=True)
    name = batch.stem + (f".summary.rank{rank}.json" if world > 1 else ".summary.json")
    summary = {"batch": str(batch.resolve()), "rank": rank, "world": world,
               "shots": len(shots), **done,
               "bad_lines": problems if rank == 0 else []}
    save_json(batch.with_name(name), summary)
    print(f"[{rank}] batch {batch}: {len(done['edited'])} edited, {len(done['skipped'])} "
          f"skipped, {len(done['failed'])} failed" + (f", {len(problems)} bad lines"
                                                       if problems and rank == 0 else "")
          + f"; summary {batch.with_name(name)}", flush=True)
    for problem in problems if rank == 0 else []:
        print(f"error: {problem['error']}", flush=True)
    return 0 if not done["failed"] and not (problems and rank == 0) else 2
