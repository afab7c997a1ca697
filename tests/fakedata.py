"""Small stand-ins for the remote dataset files, in the real formats, and a local HTTP server.

Shared by the dataset unit tests (tests/test_datasets.py) and the workflow tests that download
through Snakemake (tests/test_download_graph.py, tests/test_seeds.py).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Rows of each stand-in: (train, test) for the image sets, images per batch and test images for
#: CIFAR-10 (five training batches), all rows for the housing sets (Keras splits them 80/20).
SMALL = {
    "mnist": (5, 3),
    "fashion_mnist": (4, 2),
    "cifar10": (2, 3),
    "boston_housing": 21,
    "california_housing": 700,  # more than the 600 rows of the "small" version
}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hashes(root: Path) -> dict[str, str]:
    """{file name: sha256} of every file in `root`: the shape HPSTUDY_SHA256_OVERRIDES reads."""
    return {p.name: sha256(p) for p in sorted(Path(root).iterdir()) if p.is_file()}


def idx_gz(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def cifar_batch_bytes(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR python batch: a dict with bytes keys, as the official files have."""
    batch = {
        b"batch_label": b"fake batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [b"img_%d.png" % i for i in range(len(labels))],
    }
    # Protocol 3 stores bytes natively, so only numpy's own globals appear.
    return pickle.dumps(batch, protocol=3)


def write_cifar_tarball(path: Path, batches: dict[str, bytes]) -> None:
    """A .tar.gz laid out like cifar-10-python.tar.gz."""
    with tarfile.open(path, "w:gz") as tar:
        for member, payload in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def cifar_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3072) uint8 rows; row 0 has red=10, green=20, blue=30 everywhere."""
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10, 20, 30
    return data


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Class labels 0..9 where every class appears once n >= 10 (stratified splits need it)."""
    return rng.permutation(np.arange(n) % 10).astype(np.uint8)


def write_raw(root: Path, rng: np.random.Generator, sizes: dict | None = None) -> dict:
    """Write every remote file of hpstudy.datasets into `root`; return the arrays written."""
    sizes = {**SMALL, **(sizes or {})}
    expected: dict[str, dict[str, np.ndarray]] = {}

    n_train, n_test = sizes["mnist"]
    mnist = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": _labels(rng, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": _labels(rng, n_test),
    }
    np.savez(root / "mnist.npz", **mnist)
    expected["mnist"] = mnist

    n_train, n_test = sizes["fashion_mnist"]
    fashion = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": _labels(rng, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": _labels(rng, n_test),
    }
    idx_gz(root / "train-images-idx3-ubyte.gz", fashion["x_train"])
    idx_gz(root / "train-labels-idx1-ubyte.gz", fashion["y_train"])
    idx_gz(root / "t10k-images-idx3-ubyte.gz", fashion["x_test"])
    idx_gz(root / "t10k-labels-idx1-ubyte.gz", fashion["y_test"])
    expected["fashion_mnist"] = fashion

    per_batch, n_test = sizes["cifar10"]
    train_rows = [cifar_rows(per_batch, rng) for _ in range(5)]
    train_labels = [_labels(rng, per_batch).tolist() for _ in range(5)]
    test_rows, test_labels = cifar_rows(n_test, rng), _labels(rng, n_test).tolist()
    batches = {
        f"data_batch_{i + 1}": cifar_batch_bytes(rows, labels)
        for i, (rows, labels) in enumerate(zip(train_rows, train_labels, strict=True))
    }
    batches["test_batch"] = cifar_batch_bytes(test_rows, test_labels)
    batches["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"]}, protocol=3)
    write_cifar_tarball(root / "cifar-10-python.tar.gz", batches)
    expected["cifar10"] = {
        "rows_train": np.concatenate(train_rows),
        "y_train": np.concatenate(train_labels).astype(np.uint8),
        "rows_test": test_rows,
        "y_test": np.array(test_labels, np.uint8),
    }

    n = sizes["boston_housing"]
    boston = {"x": rng.normal(size=(n, 13)), "y": rng.uniform(5, 50, size=n)}  # k$
    np.savez(root / "boston_housing.npz", **boston)
    expected["boston_housing"] = boston

    n = sizes["california_housing"]
    california = {
        "x": rng.normal(size=(n, 8)).astype(np.float32),
        "y": rng.uniform(15_000, 500_000, size=n).astype(np.float32),  # dollars, as Keras'
    }
    np.savez(root / "california_housing.npz", **california)
    expected["california_housing"] = california
    return expected


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, and misbehaves under these prefixes of a file's name:

    /half/ sends half the bytes, then hangs up; /trickle/ sends a byte every TRICKLE_PAUSE
    seconds (at most TRICKLE_BYTES, so a test cannot hang on it); /slow-headers/ does the same
    with its status line; /no-length/ sends the file without a Content-Length; /moved/ redirects
    to the file on this host; /to-http/ redirects to it on http://localhost (another host name).
    """

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        prefix, _, name = self.path.lstrip("/").partition("/")
        if prefix == "moved":
            self._redirect(f"/{name}")
        elif prefix == "to-http":
            self._redirect(f"http://localhost:{self.server.server_address[1]}/{name}")
        elif prefix in ("half", "trickle", "slow-headers", "no-length"):
            payload = (Path(self.directory) / name).read_bytes()
            try:
                getattr(self, "_" + prefix.replace("-", "_"))(payload)
            except OSError:  # the client gave up: what these tests expect
                pass
            self.close_connection = True
        else:
            super().do_GET()

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _half(self, payload: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])

    def _trickle(self, payload: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self._drip(payload[:TRICKLE_BYTES])

    def _slow_headers(self, payload: bytes) -> None:
        self._drip(b"HTTP/1.0 200 OK\r\n"[:TRICKLE_BYTES])

    def _no_length(self, payload: bytes) -> None:
        self.wfile.write(b"HTTP/1.0 200 OK\r\n\r\n" + payload)  # ends when the connection does

    def _drip(self, data: bytes) -> None:
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            time.sleep(TRICKLE_PAUSE)

    def log_message(self, *args: object) -> None:
        pass  # keep pytest output clean


#: /trickle/ and /slow-headers/: one byte every TRICKLE_PAUSE s, at most TRICKLE_BYTES of them.
TRICKLE_PAUSE = 0.25
TRICKLE_BYTES = 40


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    """Serve `directory` on an ephemeral 127.0.0.1 port; the server has `base_url`, `requests`."""
    handler = functools.partial(Handler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
