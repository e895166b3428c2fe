"""`python -m vera edit --batch shots.jsonl`: each process's share of the shots, finished shots
skipped, a failing shot and bad lines recorded while the others run, under torchrun too."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vera.__main__ import main
from vera.edit.batch import read_batch
from vera.edit.bundle import tiny_available

pytestmark = pytest.mark.skipif(not tiny_available(), reason="vera-tiny weights are not in "
                                                             "this checkout")
PROMPT = "add a large red circle moving from left to right"


def _batch(tmp_path) -> Path:
    lines = [
        {"prompt": PROMPT, "out": str(tmp_path / "one"), "options": {"steps": 2}},
        "{not json",
        {"prompt": PROMPT, "out": str(tmp_path / "bad"), "options": {"steps": 0}},
        {"prompt": PROMPT, "out": str(tmp_path / "same")},
        {"prompt": "another", "out": str(tmp_path / "same")},
        {"prompt": PROMPT, "out": str(tmp_path / "two"), "options": {"steps": 2, "seed": 3,
                                                                     "window_fuse": "pyramid"}},
        {"prompt": PROMPT, "out": str(tmp_path / "x"), "colour": "red"},
    ]
    path = tmp_path / "shots.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_bad_lines_are_named_by_number_and_shared_outs_refused(tmp_path):
    shots, problems = read_batch(_batch(tmp_path))
    assert [s.line for s in shots] == [1, 3, 6]
    errors = {p["line"]: p["error"] for p in problems}
    assert set(errors) == {2, 4, 5, 7}
    assert "shots.jsonl:2: not JSON" in errors[2]
    assert "lines 4, 5 all write --out" in errors[4] and "lines 4, 5" in errors[5]
    assert "unknown keys ['colour']" in errors[7]


def test_each_process_edits_its_share_and_a_failing_shot_does_not_stop_the_rest(
        tmp_path, monkeypatch, capsys):
    batch = _batch(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")  # lines 3 (fails)
    assert main(["edit", "--batch", str(batch)]) == 2
    ones = json.loads((tmp_path / "shots.summary.rank1.json").read_text())
    assert [x["line"] for x in ones["failed"]] == [3] and not ones["edited"]
    assert "steps" in ones["failed"][0]["error"] and not (tmp_path / "bad").exists()
    monkeypatch.setenv("RANK", "0")  # lines 1 and 6, and the bad lines reported
    assert main(["edit", "--batch", str(batch), "--frames", "9"]) == 2
    zero = json.loads((tmp_path / "shots.summary.rank0.json").read_text())
    assert [x["line"] for x in zero["edited"]] == [1, 6]
    assert [x["line"] for x in zero["bad_lines"]] == [2, 4, 5, 7]
    settings = json.loads((tmp_path / "two" / "settings.json").read_text())
    assert (settings["seed"], settings["steps"], settings["window_fuse"]) == (3, 2, "pyramid")
    assert settings["frames"] == 9  # the batch's own flag, every shot's default
    out = capsys.readouterr().out
    assert "[0] batch" in out and "2 edited, 0 skipped, 0 failed, 4 bad lines" in out
    stamp = (tmp_path / "one" / "stack.json").stat().st_mtime_ns
    assert main(["edit", "--batch", str(batch)]) == 2  # again: the finished shots are skipped
    again = json.loads((tmp_path / "shots.summary.rank0.json").read_text())
    assert [x["line"] for x in again["skipped"]] == [1, 6] and not again["edited"]
    assert (tmp_path / "one" / "stack.json").stat().st_mtime_ns == stamp


def test_a_batch_under_torchrun_shares_the_shots(tmp_path):
    lines = [{"prompt": PROMPT, "out": str(tmp_path / f"shot{i}"), "options": {"steps": 2}}
             for i in range(3)]
    batch = tmp_path / "farm.jsonl"
    batch.write_text("\n".join(map(json.dumps, lines)))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vera", "edit",
                           "--batch", str(batch), "--frames", "5"], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads((tmp_path / f"farm.summary.rank{r}.json").read_text())
                 for r in range(2)]
    assert [[x["line"] for x in s["edited"]] for s in summaries] == [[1, 3], [2]]
    assert all((tmp_path / f"shot{i}" / "stack.json").is_file() for i in range(3))


def test_batch_flags_that_clash_are_refused(tmp_path, capsys):
    batch = _batch(tmp_path)
    assert main(["edit", "--batch", str(batch), "--prompt", "x"]) == 2
    assert "each shot gives its own prompt" in capsys.readouterr().err
    assert main(["edit", "--prompt", "x"]) == 2
    assert "--out needed (or --batch FILE" in capsys.readouterr().err
