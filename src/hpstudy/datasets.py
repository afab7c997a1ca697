"""Dataset sources: pinned downloads and conversion to one canonical ``.npz``.

Every remote file is pinned by SHA-256 and size and fetched to a temporary file
next to its final path, so a final path only ever holds verified bytes. A
download stops as soon as it exceeds the pinned size, must finish within a
deadline (not only a timeout per read), and follows a redirect only to https or
within the scheme and host it was sent to. ``convert``
turns the raw files into a plain ``.npz`` (numeric arrays only, no pickle)
with the keys ``x_train, y_train, x_test, y_test``, shaped and typed as Keras'
own ``keras.datasets.*.load_data`` returns them (labels are flattened to
``(N,)``). The bundled scikit-learn sets have no canonical test split, so
they hold only ``x_train, y_train`` (the full data).

This module deliberately does not import TensorFlow or Keras: the download and
convert jobs must run in a light environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.client
import json
import logging
import math
import os
import pickle
import re
import secrets
import socket
import ssl
import struct
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .io import atomic_path

log = logging.getLogger(__name__)

#: Environment variable read by :func:`download` when ``mirror`` is None.
MIRROR_ENV = "HPSTUDY_DATA_MIRROR"

#: TEST-ONLY. Path to a JSON file ``{"<file name>": "<sha256>", ...}`` whose hashes replace the
#: pinned ones in :func:`get_source`, so the end-to-end tests can serve small stand-in files in
#: the real formats. It is honoured only while :data:`TESTING_ENV` is set, that is inside the
#: test suite, and ignored (with a warning) anywhere else: it would switch off the protection
#: the pins give.
SHA256_OVERRIDES_ENV = "HPSTUDY_SHA256_OVERRIDES"
#: Set by pytest while a test runs, and inherited by the processes a test starts (Snakemake and
#: its jobs). Its presence is what makes :data:`SHA256_OVERRIDES_ENV` count.
TESTING_ENV = "PYTEST_CURRENT_TEST"

#: Seconds one file's download may take in all, overriding the default of :func:`deadline_for`.
DEADLINE_ENV = "HPSTUDY_DOWNLOAD_DEADLINE"
#: The default deadline: at least this many seconds, and enough for this many bytes a second.
DEADLINE_MIN_SECONDS = 300.0
DEADLINE_MIN_RATE = 100_000

#: Where Keras 3.15 itself fetches its datasets from.
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

#: The split keras.datasets.{boston,california}_housing.load_data uses by default.
KERAS_TEST_SPLIT = 0.2
KERAS_SPLIT_SEED = 113
#: keras' california_housing.load_data(version="small") keeps the first rows.
CALIFORNIA_SMALL_ROWS = 600

_CHUNK = 1 << 20
# Opening or reading an origin: URLError, HTTPError, timeouts, refused or reset
# connections and missing mirror files are all OSError; a short or malformed
# HTTP response is an HTTPException.
_FETCH_ERRORS = (OSError, http.client.HTTPException)
_USER_AGENT = "hpstudy-datasets (+urllib)"


class DatasetError(RuntimeError):
    """A dataset could not be fetched, verified, converted or loaded."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its local name, origin URL, pinned SHA-256 and size in bytes.

    A download stops as soon as it exceeds ``size``; a shorter one fails the hash check.
    """

    name: str
    url: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        # A typo in a pinned hash would otherwise only surface as a confusing
        # "checksum mismatch" after a long download.
        digest = self.sha256
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ValueError(
                f"sha256 of {self.name} must be 64 lowercase hex digits, got {digest!r}"
            )
        if Path(self.name).name != self.name:
            raise ValueError(f"file name must not contain a directory, got {self.name!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"size of {self.name} must be a positive int, got {self.size!r}")


@dataclass(frozen=True)
class Source:
    """A dataset: its task, the files to fetch (none when bundled), a summary and its reader.

    Everything the workflow knows about a source is declared here, once: the schema's enum and
    the components registry (hpstudy.components) are derived from :data:`SOURCES`.
    """

    name: str
    task: str  # "classification" | "regression"
    files: tuple[RemoteFile, ...]
    n_classes: int | None
    description: str
    # For the planner's memory estimate (config.estimate_memory), before any file is read:
    features: int  # values per row once flattened: the model's input width
    rows: int  # rows in all, training and test
    # Verified raw files (file name -> path; empty when bundled) -> the dataset's arrays.
    read: Callable[[Mapping[str, Path]], dict[str, np.ndarray]]


#: The source of a user's own file (hpstudy.userdata); its task is the dataset's `task` key.
FILE_SOURCE = "file"


def task_of(ds: dict) -> str:
    """The task of a config's dataset: its source's, or its own `task` for a user's file."""
    return ds["task"] if ds["source"] == FILE_SOURCE else TASKS[ds["source"]]


def get_source(name: str) -> Source:
    """Return the registered source ``name``; ValueError naming the valid names otherwise.

    Inside the test suite only, its pinned hashes are replaced by those of the
    ``HPSTUDY_SHA256_OVERRIDES`` file when that variable is set (see :data:`SHA256_OVERRIDES_ENV`).
    """
    try:
        source = SOURCES[name]
    except KeyError:
        valid = ", ".join(sorted(SOURCES))
        raise ValueError(f"unknown dataset {name!r}; expected one of: {valid}") from None
    overrides = _sha256_overrides()
    mine = {f.name: overrides[f.name] for f in source.files if f.name in overrides}
    if mine:
        log.warning(
            "%s: sha256 pins of %s replaced from %s (test-only)",
            name,
            sorted(mine),
            os.environ[SHA256_OVERRIDES_ENV],
        )
        source = with_overrides(source, sha256=mine)
    return source


def _sha256_overrides() -> dict[str, str]:
    """The ``{file name: sha256}`` mapping of the test-only overrides file, or {} when unset.

    Outside the test suite (no ``PYTEST_CURRENT_TEST``) the variable is ignored with a warning.
    """
    path = os.environ.get(SHA256_OVERRIDES_ENV)
    if not path:
        return {}
    if not os.environ.get(TESTING_ENV):
        log.warning(
            "%s=%s is ignored: it is honoured only inside the test suite (where pytest sets %s); "
            "the pinned sha256 values apply. Unset it.",
            SHA256_OVERRIDES_ENV,
            path,
            TESTING_ENV,
        )
        return {}
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{SHA256_OVERRIDES_ENV}={path}: expected a readable JSON file mapping file names "
            f"to sha256 hex digests. Received: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise DatasetError(
            f"{SHA256_OVERRIDES_ENV}={path}: expected a JSON object of file name -> sha256 "
            f"strings. Received: {mapping!r}"
        )
    return mapping


def with_overrides(
    source: Source,
    *,
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    size: Mapping[str, int] | None = None,
) -> Source:
    """Copy of ``source`` whose files come from ``base_url`` and/or carry other hashes or sizes.

    Meant for tests and private re-hosts: put the result into ``SOURCES`` (e.g.
    with ``monkeypatch.setitem``) to make :func:`download` and :func:`convert`
    use it. A file given another hash keeps its pinned size as the limit unless
    ``size`` names it too.
    """
    sha256, size = dict(sha256 or {}), dict(size or {})
    unknown = (set(sha256) | set(size)) - {f.name for f in source.files}
    if unknown:
        raise ValueError(
            f"sha256 or size overrides for files {sorted(unknown)} that {source.name} does not "
            f"have; its files are {[f.name for f in source.files]}"
        )
    files = tuple(
        dataclasses.replace(
            f,
            url=_join_url(base_url, f.name) if base_url else f.url,
            sha256=sha256.get(f.name, f.sha256),
            size=size.get(f.name, f.size),
        )
        for f in source.files
    )
    return dataclasses.replace(source, files=files)


def raw_paths(name: str, dest_dir: str | Path) -> list[Path]:
    """The final paths :func:`download` produces for ``name`` (empty when bundled)."""
    return [Path(dest_dir) / f.name for f in get_source(name).files]


# --------------------------------------------------------------------------- download


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    name: str,
    dest_dir: str | Path,
    mirror: str | None = None,
    timeout: float = 60.0,
    deadline: float | None = None,
) -> list[Path]:
    """Fetch and verify every file of source ``name`` into ``dest_dir``.

    ``mirror`` (else the ``HPSTUDY_DATA_MIRROR`` environment variable) replaces
    the origin: a local directory holding the files under their names, or a
    base URL the names are appended to. Files already present with the pinned
    hash are kept; temporary files left by a killed download are removed first.
    Whether this returns or raises, every file at a final path has its pinned
    SHA-256. Returns the final paths, in the source's order.

    ``timeout`` bounds each network operation; ``deadline`` (else the
    ``HPSTUDY_DOWNLOAD_DEADLINE`` environment variable, else :func:`deadline_for`
    the file's size) bounds each file's whole download, in seconds. A redirect
    is followed only to an https URL, or to the same scheme and host as the URL
    that was redirected.
    """
    source = get_source(name)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if deadline is None:
        deadline = _deadline_from_env()
    paths = []
    for remote in source.files:
        final = dest / remote.name
        _remove_stale_parts(final)
        if not _have_verified(final, remote):
            seconds = deadline if deadline is not None else deadline_for(remote.size)
            _fetch(source, remote, final, mirror, timeout, seconds)
        paths.append(final)
    return paths


def deadline_for(size: int) -> float:
    """The default time one file of ``size`` bytes may take: 100 kB/s, and never under 5 min."""
    return max(DEADLINE_MIN_SECONDS, size / DEADLINE_MIN_RATE)


def _deadline_from_env() -> float | None:
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise DatasetError(
            f"Expected ${DEADLINE_ENV} to be a number of seconds > 0 (the time one file's "
            f"download may take). Received: {text!r}"
        )
    return seconds


def _remove_stale_parts(final: Path) -> None:
    """Remove the temporary files (see :func:`_temp_path`) a killed download of ``final`` left."""
    stale = re.compile(rf"\.{re.escape(final.name)}\.\d+\.[0-9a-f]{{8}}\.part")
    for path in final.parent.iterdir():
        if stale.fullmatch(path.name):
            log.warning("removing %s, left by an interrupted download", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _have_verified(final: Path, remote: RemoteFile) -> bool:
    """True when ``final`` exists with the pinned hash; removes it when it has another."""
    if not final.exists():
        return False
    received = sha256_file(final)
    if received == remote.sha256:
        log.info("%s already present and verified", final)
        return True
    # Removed rather than kept: convert() would refuse it anyway, and this
    # keeps the promise that a final path only ever holds the pinned bytes.
    log.warning(
        "%s has sha256 %s, expected %s; removing it and fetching again",
        final,
        received,
        remote.sha256,
    )
    final.unlink()
    return False


def _fetch(
    source: Source,
    remote: RemoteFile,
    final: Path,
    mirror: str | None,
    timeout: float,
    deadline: float,
) -> None:
    """Stream one file to a temp file beside ``final``, verify it, then rename it."""
    origin = _origin_of(remote, mirror)
    log.info("fetching %s from %s", remote.name, origin)
    tmp = _temp_path(final)
    watchdog = _Watchdog(deadline)
    progress = {"received": 0}

    def failed(exc: BaseException) -> DatasetError:
        if watchdog.expired:
            exc = _DeadlineExceeded(
                f"the download did not finish within its deadline of {deadline:g} s "
                f"({progress['received']} of {remote.size} bytes received); for a slow link set "
                f"{DEADLINE_ENV} to more seconds"
            )
        return _unreachable(source, remote, final, mirror, exc)

    try:
        with open(tmp, "xb") as out:
            # Only errors from opening or reading the origin mean "unreachable";
            # a failing write (e.g. a full disk) propagates as itself.
            try:
                stream = _open_origin(origin, timeout, watchdog)
            except _FETCH_ERRORS as exc:
                raise failed(exc) from exc
            with stream:
                _refuse_declared_size(stream, remote, origin, final)
                digest = _copy(stream, out, remote, (origin, final), watchdog, failed, progress)
            out.flush()
            os.fsync(out.fileno())
        if digest != remote.sha256:
            if watchdog.expired:  # the deadline cut the transfer short
                raise failed(TimeoutError())
            raise DatasetError(
                f"checksum mismatch for {remote.name} fetched from {origin}: "
                f"expected sha256 {remote.sha256}, received {digest} "
                f"({progress['received']} bytes, pinned size {remote.size}). Nothing was written "
                f"to {final}; the transfer was truncated or the file differs from the pinned version."
            )
        os.replace(tmp, final)
    finally:
        watchdog.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info("verified %s (sha256 %s)", final, remote.sha256)


def _copy(stream, out, remote: RemoteFile, where: tuple, watchdog, failed, progress) -> str:
    """Copy `stream` to `out` chunk by chunk within the size pin and the deadline; the SHA-256."""
    digest = hashlib.sha256()
    read = getattr(stream, "read1", stream.read)  # what has arrived, not a full chunk
    while True:
        if watchdog.expired:
            raise failed(TimeoutError())
        try:
            chunk = read(_CHUNK)
        except _FETCH_ERRORS as exc:
            raise failed(exc) from exc
        if not chunk:
            return digest.hexdigest()
        progress["received"] += len(chunk)
        if progress["received"] > remote.size:
            raise _too_large(remote, *where, f"more than {remote.size}")
        digest.update(chunk)
        out.write(chunk)


def _refuse_declared_size(stream: object, remote: RemoteFile, origin: str, final: Path) -> None:
    """Fail before reading when the server announces more bytes than the pinned size."""
    headers = getattr(stream, "headers", None)
    declared = headers.get("Content-Length", "") if headers is not None else ""
    if declared.strip().isdigit() and int(declared) > remote.size:
        raise _too_large(remote, origin, final, f"{int(declared)} (its Content-Length)")


def _too_large(remote: RemoteFile, origin: str, final: Path, received: str) -> DatasetError:
    return DatasetError(
        f"{remote.name} fetched from {origin} is larger than its pinned size: expected "
        f"{remote.size} bytes, received {received} bytes. Stopped reading; nothing was written "
        f"to {final}. The origin (or mirror) serves another file than the pinned one "
        f"(sha256 {remote.sha256}): check it, or place the pinned file there by hand."
    )


class _DeadlineExceeded(TimeoutError):
    """A download that did not finish within its deadline."""


class _Watchdog:
    """Ends a download at its deadline, wherever it blocks.

    A timeout per read lets a server that sends a byte every few seconds hold a download forever.
    At the deadline this shuts down the sockets it watches (each connection's, from the moment
    it is connected: TLS handshake, headers and body), so a blocked read returns at once.
    """

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self._fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self._end

    def watch(self, sock: socket.socket) -> None:
        # A duplicate descriptor: shutting it down stops the connection even after TLS has
        # taken over the original socket object.
        dup = sock.dup()
        with self._lock:
            self._sockets.append(dup)
            fired = self._fired
        if fired:
            self._shutdown(dup)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


class _WatchedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket a :class:`_Watchdog` can shut down."""

    watchdog: _Watchdog

    def connect(self) -> None:
        super().connect()
        self.watchdog.watch(self.sock)


# HTTPSConnection.connect() calls super().connect(), which this order makes
# _WatchedHTTPConnection's: the plain socket is watched before the TLS handshake starts.
class _WatchedHTTPSConnection(http.client.HTTPSConnection, _WatchedHTTPConnection):
    pass


def _watched(cls: type, watchdog: _Watchdog) -> Callable[..., http.client.HTTPConnection]:
    """A factory of `cls` connections that `watchdog` watches, for urllib's do_open()."""

    def connect(*args: object, **kwargs: object) -> http.client.HTTPConnection:
        connection = cls(*args, **kwargs)
        connection.watchdog = watchdog
        return connection

    return connect


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(_WatchedHTTPConnection, self.watchdog), req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        self.context = ssl.create_default_context()  # verifies certificates, as urlopen does
        super().__init__(context=self.context)
        self.watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connect = _watched(_WatchedHTTPSConnection, self.watchdog)
        return self.do_open(connect, req, context=self.context)


class _HttpsRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an https URL, or within the redirected URL's scheme and host.

    So an https origin is never downgraded to http, and a plain-http mirror can move a file
    around on its own host but cannot send the download to another one.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        same = (new.scheme, new.hostname, new.port) == (old.scheme, old.hostname, old.port)
        if new.scheme != "https" and not same:
            fp.close()
            raise urllib.error.URLError(
                f"refused HTTP {code} redirect from {req.full_url} to {newurl}: a redirect may "
                "only go to https, or stay on the same scheme and host"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _origin_of(remote: RemoteFile, mirror: str | None) -> str:
    """Where to read ``remote`` from: the mirror's copy, else its pinned URL."""
    if not mirror:
        return remote.url
    if _is_url(mirror):
        return _join_url(mirror, remote.name)
    return str(Path(mirror).expanduser() / remote.name)


def _is_url(location: str) -> bool:
    """A mirror with a scheme (http://, https://, file://) is a URL, else a directory."""
    return "://" in location


def _join_url(base: str, name: str) -> str:
    """``base`` with exactly one slash before ``name``."""
    return base.rstrip("/") + "/" + name


def _open_origin(
    origin: str, timeout: float, watchdog: _Watchdog
) -> contextlib.AbstractContextManager[BinaryIO]:
    """Open a URL (a timeout per operation, the watchdog's deadline) or a local file for reading."""
    if _is_url(origin):
        request = urllib.request.Request(origin, headers={"User-Agent": _USER_AGENT})
        opener = urllib.request.build_opener(
            _WatchedHTTPHandler(watchdog), _WatchedHTTPSHandler(watchdog), _HttpsRedirects()
        )
        return opener.open(request, timeout=timeout)
    return open(origin, "rb")


def _temp_path(final: Path) -> Path:
    """A unique hidden name beside ``final``, so os.replace stays on one filesystem."""
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _unreachable(
    source: Source,
    remote: RemoteFile,
    final: Path,
    mirror: str | None,
    exc: BaseException,
) -> DatasetError:
    """A DatasetError explaining a failed fetch and how to provide the file by hand."""
    origin = _origin_of(remote, mirror)
    lines = [
        f"could not fetch {remote.name} for dataset {source.name!r} from {origin}: {exc}",
        "Without network access, provide the file yourself:",
        f"  place {remote.name} at {final.resolve()}",
        f"  with sha256 {remote.sha256} ({remote.size} bytes)",
        f"  (original URL: {remote.url})",
    ]
    others = [f for f in source.files if f.name != remote.name]
    if others:
        lines.append(f"This dataset also needs, in {final.parent.resolve()}:")
        lines += [f"  {f.name}  sha256 {f.sha256}  {f.size} bytes  ({f.url})" for f in others]
    if mirror:
        lines.append(f"Or put these files in the mirror in use, {mirror}.")
    else:
        lines.append(
            "Or set the mirror option (download(..., mirror=...), the workflow's "
            f"mirror setting, or the {MIRROR_ENV} environment variable) to a directory "
            "holding these files or to a base URL they can be fetched from "
            "(http://host/path/ + file name)."
        )
    return DatasetError("\n".join(lines))


# --------------------------------------------------------------------------- convert


def convert(name: str, raw_dir: str | Path | None, out_npz: str | Path) -> Path:
    """Convert the verified raw files of ``name`` in ``raw_dir`` into ``out_npz``.

    ``raw_dir`` may be None for the bundled datasets. The output is written
    atomically and holds only numeric arrays.
    """
    source = get_source(name)
    if not source.files:
        arrays = source.read({})
    else:
        if raw_dir is None:
            raise DatasetError(f"dataset {name!r} needs raw_dir (the download directory), got None")
        arrays = source.read(_verified_raw_files(source, Path(raw_dir)))
    out = write_npz(arrays, Path(out_npz))
    shapes = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items())
    log.info("wrote %s: %s", out, shapes)
    return out


def _verified_raw_files(source: Source, raw_dir: Path) -> dict[str, Path]:
    """Map file name -> path after checking each raw file exists with its pinned hash."""
    paths = {}
    for remote in source.files:
        path = raw_dir / remote.name
        if not path.is_file():
            raise DatasetError(
                f"missing raw file {path} for dataset {source.name!r}; "
                f"run download({source.name!r}, {str(raw_dir)!r}) first "
                f"(or place it there: sha256 {remote.sha256})"
            )
        received = sha256_file(path)
        if received != remote.sha256:
            raise DatasetError(
                f"raw file {path} has sha256 {received}, expected {remote.sha256}; "
                "delete it and rerun the download step"
            )
        paths[remote.name] = path
    return paths


def _load_digits(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """scikit-learn's bundled digits (no download): flat 64-pixel rows."""
    from sklearn.datasets import load_digits  # heavy import, only when needed

    bunch = load_digits()
    return {"x_train": np.asarray(bunch.data), "y_train": np.asarray(bunch.target)}


def _load_diabetes(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """scikit-learn's bundled diabetes data (no download), scaled features."""
    from sklearn.datasets import load_diabetes  # heavy import, only when needed

    bunch = load_diabetes()
    return {"x_train": np.asarray(bunch.data), "y_train": np.asarray(bunch.target)}


def _convert_mnist(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """mnist.npz already holds Keras' four arrays; check and copy them."""
    path = raw["mnist.npz"]
    data = load_npz(path)
    arrays = {key: _require_key(data, key, path) for key in _SPLIT_KEYS}
    for split in ("train", "test"):
        _check_array(arrays[f"x_{split}"], f"x_{split} in {path}", ndim=3, dtype=np.uint8)
        _check_array(arrays[f"y_{split}"], f"y_{split} in {path}", ndim=1, dtype=np.uint8)
        _check_rows(arrays[f"x_{split}"], arrays[f"y_{split}"], f"{split} split of {path}")
    return arrays


def _convert_fashion_mnist(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """Parse the four gzipped IDX files as Keras does: uint8 (N, 28, 28) and (N,)."""
    arrays = {
        "x_train": _read_idx(raw["train-images-idx3-ubyte.gz"], ndim=3),
        "y_train": _read_idx(raw["train-labels-idx1-ubyte.gz"], ndim=1),
        "x_test": _read_idx(raw["t10k-images-idx3-ubyte.gz"], ndim=3),
        "y_test": _read_idx(raw["t10k-labels-idx1-ubyte.gz"], ndim=1),
    }
    for split in ("train", "test"):
        _check_rows(arrays[f"x_{split}"], arrays[f"y_{split}"], f"fashion_mnist {split} split")
    return arrays


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with ``ndim`` dimensions."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot decompress {path}: {exc}; delete it and rerun") from exc
    header = 4 + 4 * ndim
    # IDX magic: two zero bytes, type code 0x08 (unsigned byte), number of dims.
    expected_magic = bytes([0, 0, 0x08, ndim])
    if raw[:4] != expected_magic or len(raw) < header:
        raise DatasetError(
            f"{path} is not a {ndim}-d uint8 IDX file: expected magic {expected_magic.hex()}, "
            f"received {raw[:4].hex()} ({len(raw)} bytes after gunzip)"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise DatasetError(
            f"{path}: header declares shape {dims} ({int(np.prod(dims))} bytes), "
            f"received {data.size} bytes of data"
        )
    return data.reshape(dims).copy()  # copy: frombuffer views are read-only


def _convert_cifar10(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """Read the python-pickle batches from the tarball: uint8 (N, 32, 32, 3), labels (N,)."""
    path = raw["cifar-10-python.tar.gz"]
    try:
        with tarfile.open(path, "r:gz") as tar:
            train = [_cifar_batch(tar, f"data_batch_{i}", path) for i in range(1, 6)]
            test = _cifar_batch(tar, "test_batch", path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; delete it and rerun") from exc
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": test[0],
        "y_test": test[1],
    }


#: The largest CIFAR batch read (the official ones are about 31 MB each). The tarball's hash is
#: checked first, so this only bounds what a tampered or stand-in file can make us allocate.
CIFAR_MEMBER_MAX_BYTES = 64 << 20

# The only globals a pickled ndarray needs, under numpy 1 and numpy 2 names.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    The CIFAR batches are the one input that is a pickle by format. They are
    only ever read from the tarball whose SHA-256 was just checked, and this
    class also refuses every global outside ``_PICKLE_GLOBALS``, so even a
    tampered file cannot run code. Arrays are built as :class:`_CheckedArray`,
    whose state must be numeric, of a size under the cap, and declare exactly
    the bytes it holds.
    """

    def find_class(self, module: str, name: str) -> object:
        """Resolve only the allowed numpy globals."""
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from a dataset pickle"
            )
        if name == "ndarray":
            return _CheckedArray
        return _np_reconstruct() if name == "_reconstruct" else getattr(np, name)


class _CheckedArray(np.ndarray):
    """The array a dataset pickle builds: its pickled state is checked before numpy reads it."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError(f"unexpected ndarray state of type {type(state).__name__}")
        shape, dtype, _, data = state[-4:]
        ok_shape = isinstance(shape, tuple) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        )
        if not ok_shape or not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
            raise pickle.UnpicklingError(
                f"expected a numeric array with a shape of non-negative ints, "
                f"received shape {shape!r} and dtype {dtype!r}"
            )
        declared = math.prod(shape) * dtype.itemsize
        if declared > CIFAR_MEMBER_MAX_BYTES:
            raise pickle.UnpicklingError(
                f"array declares shape {shape} of {dtype} ({declared} bytes), more than the "
                f"{CIFAR_MEMBER_MAX_BYTES} bytes a batch may hold"
            )
        present = len(data) if isinstance(data, (bytes, bytearray)) else None
        if present != declared:
            held = f"{present} bytes" if present is not None else type(data).__name__
            raise pickle.UnpicklingError(
                f"array declares shape {shape} of {dtype} ({declared} bytes) but holds {held}"
            )
        super().__setstate__(state)


def _np_reconstruct() -> object:
    """numpy's ndarray rebuild helper, without touching the deprecated numpy.core."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _cifar_batch(tar: tarfile.TarFile, member: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch as channels-last uint8 images and flat uint8 labels."""
    name = f"cifar-10-batches-py/{member}"
    try:
        info = tar.getmember(name)
    except KeyError:
        info = None
    if info is None or not info.isfile():
        raise DatasetError(f"{path} has no regular file {name}; expected the official tarball")
    if info.size > CIFAR_MEMBER_MAX_BYTES:
        raise DatasetError(
            f"{name} in {path}: expected at most {CIFAR_MEMBER_MAX_BYTES} bytes (the official "
            f"batches are about 31 MB), received a member of {info.size} bytes; delete the "
            "tarball and rerun the download"
        )
    with tar.extractfile(info) as fh:
        # encoding="bytes": the batches were pickled by Python 2, so their
        # keys and the arrays' raw buffers must stay bytes (as Keras reads them).
        try:
            batch = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
        except Exception as exc:  # any malformed pickle, MemoryError included
            kind = "out of memory" if isinstance(exc, MemoryError) else str(exc)
            raise DatasetError(
                f"cannot unpickle {name} in {path}: {kind}; expected the official tarball "
                "(delete it and rerun the download)"
            ) from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{name} in {path}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DatasetError(f"{name} in {path}: expected labels 0..255, received {exc}") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{name} in {path}: expected uint8 data of shape (N, 3072), "
            f"received {data.dtype} {data.shape}"
        )
    # Rows are 1024 red, then green, then blue values: (N, 3, 32, 32) -> channels-last.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    _check_rows(images, labels, f"{name} in {path}")
    return images, labels


def _convert_housing(
    raw: Mapping[str, Path], file_name: str, head: int | None = None
) -> dict[str, np.ndarray]:
    """Split an x/y npz exactly as keras.datasets.*_housing.load_data does.

    Keras keeps the first ``head`` rows (california "small"), shuffles the row
    indices with ``np.random.RandomState(113)``, and cuts at
    ``int(len(x) * (1 - 0.2))``; dtypes are kept as stored.
    """
    path = raw[file_name]
    data = load_npz(path)
    x, y = _require_key(data, "x", path), _require_key(data, "y", path)
    _check_rows(x, y, str(path))
    if head is not None:
        if len(x) < head:
            raise DatasetError(f"{path}: expected at least {head} rows, received {len(x)}")
        x, y = x[:head], y[:head]
    indices = np.arange(len(x))
    np.random.RandomState(KERAS_SPLIT_SEED).shuffle(indices)
    x, y = x[indices], y[indices]
    cut = int(len(x) * (1 - KERAS_TEST_SPLIT))  # same expression as Keras, same rounding
    return {
        "x_train": x[:cut],
        "y_train": y[:cut],
        "x_test": x[cut:],
        "y_test": y[cut:],
    }


_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")

# --------------------------------------------------------------------------- the sources


def _keras_file(name: str, sha256: str, size: int) -> RemoteFile:
    """A file hosted next to Keras' own dataset files."""
    return RemoteFile(name, KERAS_ORIGIN + name, sha256, size)


# The sizes are those Keras' own downloads report ("Downloading data from <url>" then
# "<size>/<size>") for these very URLs.
_CALIFORNIA = _keras_file(
    "california_housing.npz",
    "1a2e3a52e0398de6463aebe6f4a8da34fb21fbb6b934cf88c3425e766f2a1a6f",
    743530,
)

# Keras 3.15 does not verify the Fashion-MNIST files, so these are pinned here.
# They are the SHA-256 values tensorflow/datasets lists for the same four files
# (tensorflow_datasets/url_checksums/fashion_mnist.txt, with sizes 29515, 26421880,
# 5148 and 4422102 bytes) and that other public code pins alongside Zalando's
# published MD5s; a later keras-team/keras revision of fashion_mnist.py pins the
# same values for these storage.googleapis.com URLs.
_FASHION_MNIST_SHA256 = {
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
}
_FASHION_MNIST_SIZE = {
    "train-labels-idx1-ubyte.gz": 29515,
    "train-images-idx3-ubyte.gz": 26421880,
    "t10k-labels-idx1-ubyte.gz": 5148,
    "t10k-images-idx3-ubyte.gz": 4422102,
}

SOURCES: dict[str, Source] = {
    "digits": Source(
        "digits",
        "classification",
        (),
        10,
        "scikit-learn's bundled 8x8 digits: 1797 rows x 64 float64 pixels (0..16), int64 labels.",
        features=64,
        rows=1797,
        read=_load_digits,
    ),
    "diabetes": Source(
        "diabetes",
        "regression",
        (),
        None,
        "scikit-learn's bundled diabetes data: 442 rows x 10 scaled float64 features.",
        features=10,
        rows=442,
        read=_load_diabetes,
    ),
    "mnist": Source(
        "mnist",
        "classification",
        (
            _keras_file(
                "mnist.npz",
                "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
                11490434,
            ),
        ),
        10,
        "MNIST digits: 60000/10000 uint8 images (N, 28, 28), uint8 labels.",
        features=784,
        rows=70000,
        read=_convert_mnist,
    ),
    "fashion_mnist": Source(
        "fashion_mnist",
        "classification",
        tuple(
            _keras_file(name, digest, _FASHION_MNIST_SIZE[name])
            for name, digest in _FASHION_MNIST_SHA256.items()
        ),
        10,
        "Fashion-MNIST: 60000/10000 uint8 images (N, 28, 28), uint8 labels.",
        features=784,
        rows=70000,
        read=_convert_fashion_mnist,
    ),
    "cifar10": Source(
        "cifar10",
        "classification",
        (
            RemoteFile(
                "cifar-10-python.tar.gz",
                CIFAR10_ORIGIN,
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                170498071,
            ),
        ),
        10,
        "CIFAR-10: 50000/10000 uint8 images (N, 32, 32, 3) channels-last, uint8 labels.",
        features=3072,
        rows=60000,
        read=_convert_cifar10,
    ),
    "boston_housing": Source(
        "boston_housing",
        "regression",
        (
            _keras_file(
                "boston_housing.npz",
                "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5",
                57026,
            ),
        ),
        None,
        "Boston housing: 506 rows x 13 features, Keras' split (seed 113, 20% test): 404/102.",
        features=13,
        rows=506,
        read=functools.partial(_convert_housing, file_name="boston_housing.npz"),
    ),
    "california_housing": Source(
        "california_housing",
        "regression",
        (_CALIFORNIA,),
        None,
        "California housing: 20640 rows x 8 features, Keras' split (seed 113, 20% test).",
        features=8,
        rows=20640,
        read=functools.partial(_convert_housing, file_name="california_housing.npz"),
    ),
    "california_housing_small": Source(
        "california_housing_small",
        "regression",
        # Keras' version="small" has no file of its own: it keeps the first
        # 600 rows of california_housing.npz before shuffling.
        (_CALIFORNIA,),
        None,
        "First 600 rows of California housing, Keras' small split (seed 113): 480/120.",
        features=8,
        rows=600,
        read=functools.partial(
            _convert_housing, file_name="california_housing.npz", head=CALIFORNIA_SMALL_ROWS
        ),
    ),
}


#: Source name -> task ("classification" or "regression").
TASKS = {name: source.task for name, source in SOURCES.items()}

#: Sources whose data ships with scikit-learn: nothing to download.
BUNDLED = frozenset(name for name, source in SOURCES.items() if not source.files)


def _require_key(data: Mapping[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    """``data[key]``, or a DatasetError listing the keys that are there."""
    if key not in data:
        raise DatasetError(f"{path}: expected an array named {key!r}, found {sorted(data)}")
    return data[key]


def _check_array(array: np.ndarray, what: str, ndim: int, dtype: type) -> None:
    """Raise unless ``array`` has ``ndim`` dimensions and ``dtype``."""
    if array.ndim != ndim or array.dtype != dtype:
        raise DatasetError(
            f"{what}: expected a {ndim}-d {np.dtype(dtype)} array, "
            f"received {array.ndim}-d {array.dtype} {array.shape}"
        )


def _check_rows(x: np.ndarray, y: np.ndarray, what: str) -> None:
    """Raise unless features and targets have the same number of rows."""
    if len(x) != len(y):
        raise DatasetError(f"{what}: {len(x)} feature rows but {len(y)} targets")


# --------------------------------------------------------------------------- npz files


def write_npz(arrays: Mapping[str, np.ndarray], out: Path) -> Path:
    """Write numeric arrays to ``out`` atomically (`io.atomic_path`: synced, then renamed)."""
    for key, array in arrays.items():
        # Only plain numbers: object arrays would be pickled into the file.
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            kind = getattr(array, "dtype", type(array).__name__)
            raise DatasetError(f"array {key!r}: expected a numeric ndarray, received {kind}")
    # Uncompressed: these are read far more often than written, and zlib would cost seconds
    # per load for CIFAR-10.
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return out


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` (no pickle) into a dict.

    A missing, truncated or corrupt file raises DatasetError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; run the step that produces it first")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            raise DatasetError(f"{path}: expected an .npz archive, received a single .npy array")
        with data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise DatasetError(
            f"{path} could not be read as an .npz file ({type(exc).__name__}: {exc}). "
            "It is probably truncated or corrupt (e.g. an interrupted write or copy): "
            "delete it and rerun the step that produces it."
        ) from exc
