"""Atomic file writes: a killed job never leaves a file that looks complete.

Nor does a power cut: the file's bytes reach the disk (fsync) before the rename makes them the
file, and the directory, which records the rename, is synced after it. Text is UTF-8 whatever
the locale.

A job's output (`redirect_output`) and how it stops when asked to (`stop_on_sigterm`,
`finish_first`) live here too: both are about what a job leaves behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import tempfile
import threading
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


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8 (whatever the locale: "±" under LC_ALL=C too), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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

    def excepthook_terminated(kind, exc, tb):
        if not issubclass(kind, Terminated):
            return excepthook(kind, exc, tb)
        for stream in (log, terminal):  # one line: what happened, what was kept, what comes next
            with contextlib.suppress(OSError, ValueError):
                stream.write(f"{exc}\n")
                stream.flush()

    sys.excepthook = excepthook_terminated
    return log


class Terminated(BaseException):
    """The job was asked to stop: SIGTERM, from a cluster's time limit, `scancel`, a preemption
    or a shutdown. A BaseException, like KeyboardInterrupt, so no `except Exception` holds it up.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


NOTHING_KEPT = "nothing of it is complete, and the retry or a rerun starts it again"


def _raise_terminated(signum, frame):
    raise Terminated(f"Terminated by {signal.Signals(signum).name}: {NOTHING_KEPT}.")


def stop_on_sigterm() -> None:
    """From now on, SIGTERM stops this job at once: Python raises Terminated in the main thread
    at its next step (within the batch being trained), so `atomic_path` drops a half-written
    file, and the process exits with status 1 and the one line `redirect_output` prints.

    Without this the default action kills the process where it stands; SLURM sends SIGKILL
    `KillWait` seconds (30 by default) after SIGTERM.
    """
    signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def _sigterm_held():
    """Hold a SIGTERM back while the block runs; yields (the signals received, the handler
    that was in place). Signals reach the main thread only, so elsewhere nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield [], None
        return
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received, previous
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def finish_first():
    """Hold a SIGTERM back while the block runs (a finished run's outputs being written), then
    let the job end normally: throwing a finished run away for its last second would cost all
    of it. The block must be short next to SLURM's `KillWait`.
    """
    with _sigterm_held() as (received, _):
        yield
    if received:
        print("SIGTERM arrived while the outputs were written: they were finished first.")


@contextlib.contextmanager
def sigterm_after():
    """Hold a SIGTERM back while the block runs (an epoch's backup being written and counted),
    then deliver it: the job stops right after, and what it says it kept is what is on disk.
    """
    with _sigterm_held() as (received, previous):
        yield
    if received:
        if callable(previous):
            previous(signal.SIGTERM, None)  # stop_on_sigterm's handler raises Terminated
        else:
            signal.raise_signal(signal.SIGTERM)  # the default action, or nothing if ignored
