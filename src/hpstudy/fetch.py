"""Pinned downloads: a hardened HTTP(S) client for the dataset sources' files.

Every remote file is pinned by SHA-256 and size (`datasets.RemoteFile`) and fetched to a
temporary file next to its final path, so a final path only ever holds verified bytes. A
download stops as soon as it exceeds the pinned size, must finish within a deadline (not only a
timeout per read), and follows a redirect only to https or within the scheme and host it was
sent to. A mirror (a directory or a base URL) replaces the origin on a machine without internet.
No TensorFlow or Keras here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import math
import os
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .datasets import RemoteFile, Source, get_source, join_url
from .io import sha256_file
from .readers import DatasetError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


#: Environment variable read by :func:`download` when ``mirror`` is None.
MIRROR_ENV = "HPSTUDY_DATA_MIRROR"


#: Seconds one file's download may take in all, overriding the default of :func:`deadline_for`.
DEADLINE_ENV = "HPSTUDY_DOWNLOAD_DEADLINE"


#: The default deadline: at least this many seconds, and enough for this many bytes a second.
DEADLINE_MIN_SECONDS = 300.0


DEADLINE_MIN_RATE = 100_000


# Opening or reading an origin: URLError, HTTPError, timeouts, refused or reset
# connections and missing mirror files are all OSError; a short or malformed
# HTTP response is an HTTPException.
_FETCH_ERRORS = (OSError, http.client.HTTPException)


_USER_AGENT = "hpstudy-datasets (+urllib)"


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
        return join_url(mirror, remote.name)
    return str(Path(mirror).expanduser() / remote.name)


def _is_url(location: str) -> bool:
    """A mirror with a scheme (http://, https://, file://) is a URL, else a directory."""
    return "://" in location


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
