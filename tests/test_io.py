"""Atomic writes (hpstudy.io): synced to the disk before and after the rename, UTF-8 in any locale."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

from hpstudy import io

SRC = Path(io.__file__).resolve().parents[1]


def test_text_is_utf8_whatever_the_locale(tmp_path):
    """Under LC_ALL=C without UTF-8 mode Python's default encoding is ASCII: "±" must still work."""
    code = (
        "import locale, sys; from hpstudy import io; print(locale.getpreferredencoding(False)); "
        "io.atomic_write_text(sys.argv[1], '0.93 \\u00b1 0.01\\n')"  # the command line is ASCII
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "summary.txt")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("ANSI_X3.4-1968", "US-ASCII", "ascii")  # the locale really is C
    assert (tmp_path / "summary.txt").read_bytes() == "0.93 ± 0.01\n".encode()


def _record_fsyncs(monkeypatch) -> list[str]:
    """Replace os.fsync by one that records what each call synced ("file" or "dir")."""
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_the_file_is_synced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    calls = _record_fsyncs(monkeypatch)
    renamed: list[int] = []
    real_replace = os.replace

    def replace(src, dst):
        renamed.append(len(calls))  # how many syncs had happened at the rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    io.atomic_write_text(tmp_path / "metrics.json", "{}\n")
    assert calls == ["file", "dir"] and renamed == [1]
    assert (tmp_path / "metrics.json").read_text() == "{}\n"


def test_every_atomic_writer_syncs(tmp_path, monkeypatch):
    calls = _record_fsyncs(monkeypatch)
    with io.atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"\x00")
    with io.atomic_path(tmp_path / "b.npz", suffix=".npz") as tmp:  # as training does
        np.savez(tmp, x=np.arange(3))
    assert calls == ["file", "dir", "file", "dir"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.npz"]  # no temp file left


def test_a_failed_block_leaves_nothing_and_syncs_nothing(tmp_path, monkeypatch):
    calls = _record_fsyncs(monkeypatch)
    (tmp_path / "kept.txt").write_text("old\n")
    try:
        with io.atomic_path(tmp_path / "kept.txt") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert calls == [] and [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
    assert (tmp_path / "kept.txt").read_text() == "old\n"
