"""The library's layering (pyproject.toml's import-linter contracts) holds, and the check bites."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=where, capture_output=True,
                          text=True, timeout=300)


def test_every_import_contract_is_kept():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def _copy_sources(to: Path) -> None:
    """vera/, nodes/ and pyproject.toml, Python sources only (no weights)."""
    python_only = shutil.ignore_patterns("*.safetensors", "*.json", "*.png", "__pycache__")
    for package in ("vera", "nodes"):
        shutil.copytree(ROOT / package, to / package, ignore=python_only)
    shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")


def _break(path: Path, line: str) -> None:
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, marker + line + "\n", 1))


BREAKS = [  # (module, the import added to it, what lint-imports must then report)
    ("model/mot.py", "from ..edit import pipeline",
     ["wings, from the command line down to the ground BROKEN",
      "vera.model.mot -> vera.edit.pipeline"]),
    ("frames/layers.py", "import folder_paths", ["vera.frames.layers -> folder_paths"]),
    ("media/video.py", "from nodes import host",
     ["never imports the pack's ComfyUI adapters (nodes/) BROKEN"]),
]


@pytest.mark.parametrize("module, line, reported", BREAKS, ids=[b[0] for b in BREAKS])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, reported):
    _copy_sources(tmp_path)
    _break(tmp_path / "vera" / module, line + "  # noqa: F401")
    run = lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    for text in reported:
        assert text in run.stdout, run.stdout


def test_the_top_of_vera_holds_only_the_command_line_and_the_wings():
    modules = sorted(p.name for p in (ROOT / "vera").glob("*.py"))
    assert len(modules) <= 8, modules
    wings = sorted(p.parent.name for p in (ROOT / "vera").glob("*/__init__.py"))
    for wing in wings:
        doc = (ROOT / "vera" / wing / "__init__.py").read_text()
        assert doc.startswith('"""') and len(doc.split('"""')[1].strip()) > 80, wing
