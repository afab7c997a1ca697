"""Atomic file writes: a killed job never leaves a file that looks complete.

Nor does a power cut: the file's bytes reach the disk (fsync) before the rename makes them the
file, and the directory, which records the rename, is synced after it. Text is UTF-8 whatever
the locale.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which races with other threads.
_UMASK = _read_umask()


def _fsync_path(path: str | Path, directory: bool = False) -> None:
    """Flush a file's (or a directory's) data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot sync a directory (EINVAL); the rename is then as durable as
        # the file system makes it.
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    The block writes and closes the file; it is then synced to the disk, renamed, and the
    directory synced, so after a crash or power loss `path` holds either its old or its new
    content in full.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix + ".tmp"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600; give it the mode a plain open() would, so results
        # stay readable by the group on a shared cluster.
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8 (whatever the locale: "±" under LC_ALL=C too), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def redirect_output(log_path: str | Path):
    """Send this process's stdout and stderr, Python's and the C libraries', to `log_path`.

    Snakemake scripts call this first, so Keras' progress lines and TensorFlow's own messages
    land in the rule's log instead of interleaving on the terminal.
    """
    import sys
    import traceback

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log

    def excepthook(kind, exc, tb):
        # The whole traceback goes to the log; the terminal, where Snakemake only says "check
        # the log", gets what went wrong (our errors say what to do about it).
        traceback.print_exception(kind, exc, tb, file=log)
        log.flush()
        with contextlib.suppress(OSError, ValueError):
            terminal.write(f"{kind.__name__}: {exc}\n(the traceback is in {log_path})\n")
            terminal.flush()

    sys.excepthook = excepthook
    return log
