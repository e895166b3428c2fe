"""Atomic writes and staged folders: complete or absent, never half-written, as readable as any file."""
import os

import pytest

from vera.media.files import atomic_path, save_json, staged_folder


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_write_is_all_or_nothing_with_ordinary_permissions(tmp_path):
    target = tmp_path / "out" / "report.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert not target.exists() and not list(target.parent.iterdir())
    save_json(target, {"psnr": float("inf"), "nan": float("nan")})
    assert target.read_text() == '{\n  "psnr": "inf",\n  "nan": "nan"\n}\n'
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask()


def test_staged_folder_appears_only_when_complete_and_replaces_only_when_asked(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out) as staging:
            (staging / "a.png").write_bytes(b"1")
            raise KeyboardInterrupt
    assert not out.exists() and not list(tmp_path.iterdir())
    with staged_folder(out) as staging:
        (staging / "a.png").write_bytes(b"1")
    assert (out / "a.png").read_bytes() == b"1"
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask()
    with pytest.raises(FileExistsError, match="already holds files.*--overwrite"):
        with staged_folder(out):
            pass
    with staged_folder(out, replace=True) as staging:
        (staging / "b.png").write_bytes(b"2")
    assert sorted(p.name for p in out.iterdir()) == ["b.png"] and len(list(tmp_path.iterdir())) == 1
