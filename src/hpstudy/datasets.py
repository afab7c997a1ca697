"""Dataset sources: the registry of every built-in dataset, and conversion to one ``.npz``.

Each source (:data:`SOURCES`) declares its task, its remote files pinned by SHA-256 and size
(none for the bundled scikit-learn sets), its sizes for the planner and its reader
(`hpstudy.readers`). `hpstudy.fetch` downloads the files; ``convert`` checks their hashes and
turns them into a plain ``.npz`` (numeric arrays only, no pickle) with the keys ``x_train,
y_train, x_test, y_test``, shaped and typed as Keras' own ``keras.datasets.*.load_data`` returns
them (labels are flattened to ``(N,)``). The bundled scikit-learn sets have no canonical test
split, so they hold only ``x_train, y_train`` (the full data).

This module deliberately does not import TensorFlow or Keras: the download and convert jobs
must run in a light environment.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import sha256_file

# The errors and the npz files of every dataset stage, where callers have always found them.
from .readers import DatasetError as DatasetError
from .readers import load_npz as load_npz
from .readers import (
    read_cifar10,
    read_diabetes,
    read_digits,
    read_fashion_mnist,
    read_housing,
    read_mnist,
)
from .readers import write_npz as write_npz

log = logging.getLogger(__name__)


#: TEST-ONLY. Path to a JSON file ``{"<file name>": "<sha256>", ...}`` whose hashes replace the
#: pinned ones in :func:`get_source`, so the end-to-end tests can serve small stand-in files in
#: the real formats. It is honoured only while :data:`TESTING_ENV` is set, that is inside the
#: test suite, and ignored (with a warning) anywhere else: it would switch off the protection
#: the pins give.
SHA256_OVERRIDES_ENV = "HPSTUDY_SHA256_OVERRIDES"


#: Set by pytest while a test runs, and inherited by the processes a test starts (Snakemake and
#: its jobs). Its presence is what makes :data:`SHA256_OVERRIDES_ENV` count.
TESTING_ENV = "PYTEST_CURRENT_TEST"


#: Where Keras 3.15 itself fetches its datasets from.
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


CIFAR10_ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


#: keras' california_housing.load_data(version="small") keeps the first rows.
CALIFORNIA_SMALL_ROWS = 600


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
    # For the planner's memory estimate (checks.estimate_memory), before any file is read:
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
            url=join_url(base_url, f.name) if base_url else f.url,
            sha256=sha256.get(f.name, f.sha256),
            size=size.get(f.name, f.size),
        )
        for f in source.files
    )
    return dataclasses.replace(source, files=files)


def raw_paths(name: str, dest_dir: str | Path) -> list[Path]:
    """The final paths :func:`download` produces for ``name`` (empty when bundled)."""
    return [Path(dest_dir) / f.name for f in get_source(name).files]


def join_url(base: str, name: str) -> str:
    """``base`` with exactly one slash before ``name``."""
    return base.rstrip("/") + "/" + name


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
        read=read_digits,
    ),
    "diabetes": Source(
        "diabetes",
        "regression",
        (),
        None,
        "scikit-learn's bundled diabetes data: 442 rows x 10 scaled float64 features.",
        features=10,
        rows=442,
        read=read_diabetes,
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
        read=read_mnist,
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
        read=read_fashion_mnist,
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
        read=read_cifar10,
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
        read=functools.partial(read_housing, file_name="boston_housing.npz"),
    ),
    "california_housing": Source(
        "california_housing",
        "regression",
        (_CALIFORNIA,),
        None,
        "California housing: 20640 rows x 8 features, Keras' split (seed 113, 20% test).",
        features=8,
        rows=20640,
        read=functools.partial(read_housing, file_name="california_housing.npz"),
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
            read_housing, file_name="california_housing.npz", head=CALIFORNIA_SMALL_ROWS
        ),
    ),
}


#: Source name -> task ("classification" or "regression").
TASKS = {name: source.task for name, source in SOURCES.items()}


#: Sources whose data ships with scikit-learn: nothing to download.
BUNDLED = frozenset(name for name, source in SOURCES.items() if not source.files)
