"""Readers of the sources' raw files into arrays, and the ``.npz`` files the workflow keeps.

One reader per built-in source (`datasets.SOURCES` names them): scikit-learn's bundled sets,
MNIST's npz, Fashion-MNIST's IDX files, CIFAR-10's pickled batches (through an unpickler that
builds NumPy arrays and nothing else) and the housing npz files split as Keras splits them.
``write_npz`` keeps numeric arrays only and writes atomically; ``load_npz`` reads without pickle.
No TensorFlow or Keras here.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .io import atomic_path

#: The split keras.datasets.{boston,california}_housing.load_data uses by default.
KERAS_TEST_SPLIT = 0.2


KERAS_SPLIT_SEED = 113


class DatasetError(RuntimeError):
    """A dataset could not be fetched, verified, converted or loaded."""


def read_digits(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """scikit-learn's bundled digits (no download): flat 64-pixel rows."""
    from sklearn.datasets import load_digits  # heavy import, only when needed

    bunch = load_digits()
    return {"x_train": np.asarray(bunch.data), "y_train": np.asarray(bunch.target)}


def read_diabetes(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """scikit-learn's bundled diabetes data (no download), scaled features."""
    from sklearn.datasets import load_diabetes  # heavy import, only when needed

    bunch = load_diabetes()
    return {"x_train": np.asarray(bunch.data), "y_train": np.asarray(bunch.target)}


def read_mnist(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """mnist.npz already holds Keras' four arrays; check and copy them."""
    path = raw["mnist.npz"]
    data = load_npz(path)
    arrays = {key: _require_key(data, key, path) for key in _SPLIT_KEYS}
    for split in ("train", "test"):
        _check_array(arrays[f"x_{split}"], f"x_{split} in {path}", ndim=3, dtype=np.uint8)
        _check_array(arrays[f"y_{split}"], f"y_{split} in {path}", ndim=1, dtype=np.uint8)
        _check_rows(arrays[f"x_{split}"], arrays[f"y_{split}"], f"{split} split of {path}")
    return arrays


def read_fashion_mnist(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
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


def read_cifar10(raw: Mapping[str, Path]) -> dict[str, np.ndarray]:
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


def read_housing(
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
