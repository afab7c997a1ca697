"""Tests for hpstudy.datasets against tiny files in the real formats, served locally."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakedata import (
    cifar_batch_bytes,
    cifar_rows,
    serve,
    sha256,
    write_cifar_tarball,
    write_raw,
)

from hpstudy import datasets as ds
from hpstudy import fetch, readers
from hpstudy.datasets import DatasetError

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build every raw file once; returns the directory and the arrays written."""
    root = tmp_path_factory.mktemp("origin")
    expected = write_raw(root, RNG)
    hashes = {p.name: sha256(p) for p in root.iterdir()}
    mnist_bytes = (root / "mnist.npz").stat().st_size
    return {"dir": root, "expected": expected, "sha256": hashes, "mnist_bytes": mnist_bytes}


# --------------------------------------------------------------------------- local HTTP server


@pytest.fixture(scope="module")
def server(raw: dict):
    """Serve the raw files on an ephemeral 127.0.0.1 port; yields the server."""
    with serve(raw["dir"]) as httpd:
        yield httpd


@pytest.fixture
def dead_url() -> str:
    """A base URL on a 127.0.0.1 port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror or hash overrides from the environment, and no proxy for loopback requests."""
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.delenv(ds.SHA256_OVERRIDES_ENV, raising=False)
    monkeypatch.delenv(fetch.DEADLINE_ENV, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def point(monkeypatch: pytest.MonkeyPatch, raw: dict):
    """point(name, base_url, sha256=None, size=None): make SOURCES[name] fetch from base_url.

    Files are pinned to the hashes of the fake raw files unless ``sha256`` says
    otherwise; they keep the real files' sizes (larger) as limits unless ``size`` says otherwise.
    """

    def _point(
        name: str, base_url: str, sha256: dict | None = None, size: dict | None = None
    ) -> ds.Source:
        source = ds.SOURCES[name]
        hashes = {f.name: raw["sha256"][f.name] for f in source.files}
        hashes.update(sha256 or {})
        patched = ds.with_overrides(source, base_url=base_url, sha256=hashes, size=size)
        monkeypatch.setitem(ds.SOURCES, name, patched)
        return patched

    return _point


# --------------------------------------------------------------------------- registry


def test_module_does_not_import_tensorflow_or_keras() -> None:
    code = (
        "import sys, hpstudy.datasets, hpstudy.fetch, hpstudy.readers; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(ds.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_get_source_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnst'") as info:
        ds.get_source("mnst")
    for name in ds.SOURCES:
        assert name in str(info.value)


def test_sources_pin_keras_origins_and_hashes() -> None:
    base = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
    pins = {f.name: (f.url, f.sha256) for source in ds.SOURCES.values() for f in source.files}
    assert pins["mnist.npz"] == (
        base + "mnist.npz",
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    )
    assert pins["boston_housing.npz"][1].startswith("f553886a1f8d")
    # Sizes as Keras' own downloads of these URLs report them ("<size>/<size>").
    sizes = {f.name: f.size for source in ds.SOURCES.values() for f in source.files}
    assert sizes == {
        "mnist.npz": 11490434,
        "train-labels-idx1-ubyte.gz": 29515,
        "train-images-idx3-ubyte.gz": 26421880,
        "t10k-labels-idx1-ubyte.gz": 5148,
        "t10k-images-idx3-ubyte.gz": 4422102,
        "cifar-10-python.tar.gz": 170498071,
        "boston_housing.npz": 57026,
        "california_housing.npz": 743530,
    }
    assert pins["california_housing.npz"][1].startswith("1a2e3a52e039")
    assert pins["cifar-10-python.tar.gz"] == (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    )
    fashion = {f.name: f for f in ds.SOURCES["fashion_mnist"].files}
    assert set(fashion) == {
        "train-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
    }
    assert all(f.url == base + f.name for f in fashion.values())
    assert fashion["train-images-idx3-ubyte.gz"].sha256.startswith("3aede38d6186")
    # Keras' small california is a slice of the same file, not a file of its own.
    assert ds.SOURCES["california_housing_small"].files == (ds.SOURCES["california_housing"].files)
    assert {n for n, s in ds.SOURCES.items() if not s.files} == ds.BUNDLED
    tasks = {s.task for s in ds.SOURCES.values()}
    assert tasks == {"classification", "regression"}


def test_raw_paths_are_what_download_writes(tmp_path: Path) -> None:
    assert ds.raw_paths("mnist", tmp_path) == [tmp_path / "mnist.npz"]
    assert len(ds.raw_paths("fashion_mnist", tmp_path)) == 4
    assert ds.raw_paths("digits", tmp_path) == []


def test_remote_file_rejects_malformed_hash() -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ds.RemoteFile("a.npz", "http://x/a.npz", "ABC", 10)
    with pytest.raises(ValueError, match="size of a.npz must be a positive int"):
        ds.RemoteFile("a.npz", "http://x/a.npz", "0" * 64, 0)


def test_with_overrides_rejects_unknown_file() -> None:
    with pytest.raises(ValueError, match="nope.gz"):
        ds.with_overrides(ds.SOURCES["mnist"], sha256={"nope.gz": "0" * 64})


def test_sha256_overrides_file_replaces_pins_for_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"mnist.npz": "a" * 64, "unrelated.gz": "b" * 64}))
    monkeypatch.setenv(ds.SHA256_OVERRIDES_ENV, str(pins))
    assert [f.sha256 for f in ds.get_source("mnist").files] == ["a" * 64]
    assert ds.get_source("cifar10") == ds.SOURCES["cifar10"]  # files not named keep their pins
    assert ds.SOURCES["mnist"].files[0].sha256.startswith("731c5ac6")  # the registry is untouched
    pins.write_text("{not json")
    with pytest.raises(DatasetError, match=ds.SHA256_OVERRIDES_ENV):
        ds.get_source("mnist")
    pins.write_text(json.dumps({"mnist.npz": "not a hash"}))
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ds.get_source("mnist")


# --------------------------------------------------------------------------- download + convert


def _assert_only(directory: Path, names: list[str]) -> None:
    """The directory holds exactly these files: no temp files left behind."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


def test_mnist_download_and_convert(tmp_path: Path, server, raw: dict, point) -> None:
    point("mnist", server.base_url)
    paths = fetch.download("mnist", tmp_path / "raw")
    assert paths == [tmp_path / "raw" / "mnist.npz"]
    assert sha256(paths[0]) == raw["sha256"]["mnist.npz"]
    _assert_only(tmp_path / "raw", ["mnist.npz"])

    out = ds.convert("mnist", tmp_path / "raw", tmp_path / "out" / "mnist.npz")
    arrays = ds.load_npz(out)
    assert sorted(arrays) == sorted(["x_train", "y_train", "x_test", "y_test"])
    for key, value in raw["expected"]["mnist"].items():
        np.testing.assert_array_equal(arrays[key], value)
        assert arrays[key].dtype == np.uint8
    _assert_only(tmp_path / "out", ["mnist.npz"])


def test_fashion_mnist_download_and_convert(tmp_path: Path, server, raw: dict, point) -> None:
    point("fashion_mnist", server.base_url)
    paths = fetch.download("fashion_mnist", tmp_path)
    assert [p.name for p in paths] == [f.name for f in ds.SOURCES["fashion_mnist"].files]
    arrays = ds.load_npz(ds.convert("fashion_mnist", tmp_path, tmp_path / "f.npz"))
    assert arrays["x_train"].shape == (4, 28, 28)
    assert arrays["y_test"].shape == (2,)
    for key, value in raw["expected"]["fashion_mnist"].items():
        np.testing.assert_array_equal(arrays[key], value)
        assert arrays[key].dtype == np.uint8


def test_cifar10_download_and_convert(tmp_path: Path, server, raw: dict, point) -> None:
    point("cifar10", server.base_url)
    fetch.download("cifar10", tmp_path)
    arrays = ds.load_npz(ds.convert("cifar10", tmp_path, tmp_path / "c.npz"))
    expected = raw["expected"]["cifar10"]
    assert arrays["x_train"].shape == (10, 32, 32, 3)
    assert arrays["x_test"].shape == (3, 32, 32, 3)
    assert arrays["x_train"].dtype == arrays["y_train"].dtype == np.uint8
    # Channels-last: the row whose red plane is 10, green 20 and blue 30.
    for x in (arrays["x_train"], arrays["x_test"]):
        assert (x[0, :, :, 0] == 10).all() and (x[0, :, :, 2] == 30).all()
    assert (arrays["x_train"][2, ..., 1] == 20).all()  # first row of data_batch_2
    np.testing.assert_array_equal(
        arrays["x_train"],
        expected["rows_train"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
    )
    np.testing.assert_array_equal(arrays["y_train"], expected["y_train"])
    np.testing.assert_array_equal(arrays["y_test"], expected["y_test"])
    assert arrays["y_train"].shape == (10,)


def test_cifar10_pickle_with_foreign_global_is_refused(tmp_path: Path, point) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    batches = {f"data_batch_{i}": cifar_batch_bytes(cifar_rows(1, RNG), [0]) for i in range(1, 6)}
    batches["test_batch"] = pickle.dumps({b"data": Exploit()}, protocol=3)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, batches)
    point("cifar10", "http://unused/", {tarball.name: sha256(tarball)})

    with pytest.raises(DatasetError, match="refusing to load global"):
        ds.convert("cifar10", tmp_path, tmp_path / "out" / "c.npz")
    assert not (tmp_path / "out" / "c.npz").exists()


def _keras_split(x: np.ndarray, y: np.ndarray, head: int | None = None):
    """The split as keras.datasets.*_housing.load_data computes it (read from its source)."""
    if head is not None:
        x, y = x[:head], y[:head]
    indices = np.arange(len(x))
    np.random.RandomState(113).shuffle(indices)
    cut = int(len(x) * (1 - 0.2))
    return x[indices[:cut]], y[indices[:cut]], x[indices[cut:]], y[indices[cut:]]


@pytest.mark.parametrize(
    ("name", "file", "head", "n_train", "n_test"),
    [
        ("boston_housing", "boston_housing", None, 16, 5),
        ("california_housing", "california_housing", None, 560, 140),
        ("california_housing_small", "california_housing", 600, 480, 120),
    ],
)
def test_housing_split_reproduces_keras(
    tmp_path: Path, server, raw: dict, point, name, file, head, n_train, n_test
) -> None:
    point(name, server.base_url)
    fetch.download(name, tmp_path)
    arrays = ds.load_npz(ds.convert(name, tmp_path, tmp_path / "out.npz"))
    source = raw["expected"][file]
    assert arrays["x_train"].shape == (n_train, source["x"].shape[1])
    assert arrays["y_test"].shape == (n_test,)
    assert arrays["x_train"].dtype == source["x"].dtype  # float64 boston, float32 california
    x_train, y_train, x_test, y_test = _keras_split(source["x"], source["y"], head)
    np.testing.assert_array_equal(arrays["x_train"], x_train)
    np.testing.assert_array_equal(arrays["y_train"], y_train)
    np.testing.assert_array_equal(arrays["x_test"], x_test)
    np.testing.assert_array_equal(arrays["y_test"], y_test)
    # A real shuffle happened, and every row is used exactly once.
    rows = len(source["x"]) if head is None else head
    assert not np.array_equal(arrays["x_train"], source["x"][:n_train])
    together = np.concatenate([arrays["y_train"], arrays["y_test"]])
    np.testing.assert_array_equal(np.sort(together), np.sort(source["y"][:rows]))


# --------------------------------------------------------------------------- failures


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, server, raw: dict, point) -> None:
    wrong = "0" * 64
    point("mnist", server.base_url, {"mnist.npz": wrong})
    dest = tmp_path / "raw"
    with pytest.raises(DatasetError) as info:
        fetch.download("mnist", dest)
    message = str(info.value)
    assert "checksum mismatch for mnist.npz" in message
    assert wrong in message and raw["sha256"]["mnist.npz"] in message
    _assert_only(dest, [])


def test_truncated_transfer_leaves_nothing(tmp_path: Path, server, point) -> None:
    point("mnist", server.base_url + "half/")
    with pytest.raises(DatasetError, match="checksum mismatch|could not fetch"):
        fetch.download("mnist", tmp_path)
    assert any(r.startswith("/half/") for r in server.requests)
    _assert_only(tmp_path, [])


def test_http_404_explains_how_to_provide_file(tmp_path: Path, server, point) -> None:
    point("mnist", server.base_url + "missing/")
    with pytest.raises(DatasetError, match="404"):
        fetch.download("mnist", tmp_path)
    _assert_only(tmp_path, [])


def test_unreachable_host_says_what_to_place_where(
    tmp_path: Path, dead_url: str, raw: dict, point
) -> None:
    point("fashion_mnist", dead_url)
    dest = tmp_path / "raw"
    with pytest.raises(DatasetError) as info:
        fetch.download("fashion_mnist", dest, timeout=5)
    message = str(info.value)
    first = ds.SOURCES["fashion_mnist"].files[0]
    assert str((dest / first.name).resolve()) in message
    assert first.sha256 in message
    # The other files of the dataset are listed too, with their hashes.
    assert all(f.sha256 in message for f in ds.SOURCES["fashion_mnist"].files)
    assert "mirror" in message and fetch.MIRROR_ENV in message
    _assert_only(dest, [])


def test_silent_host_times_out_with_instructions(tmp_path: Path, point) -> None:
    # A socket that accepts connections but never answers: the read must time out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        point("mnist", f"http://127.0.0.1:{silent.getsockname()[1]}/")
        with pytest.raises(DatasetError, match="timed out") as info:
            fetch.download("mnist", tmp_path, timeout=0.3)
    assert str((tmp_path / "mnist.npz").resolve()) in str(info.value)
    _assert_only(tmp_path, [])


def test_mirror_directory(tmp_path: Path, dead_url: str, raw: dict, point) -> None:
    point("fashion_mnist", dead_url)  # the origin is down; the mirror must be used
    paths = fetch.download("fashion_mnist", tmp_path, mirror=str(raw["dir"]))
    assert [sha256(p) for p in paths] == [raw["sha256"][p.name] for p in paths]
    _assert_only(tmp_path, [p.name for p in paths])


def test_mirror_directory_missing_file(tmp_path: Path, dead_url: str, point) -> None:
    point("mnist", dead_url)
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    with pytest.raises(DatasetError) as info:
        fetch.download("mnist", tmp_path / "raw", mirror=str(empty))
    assert str(empty / "mnist.npz") in str(info.value)
    assert str((tmp_path / "raw" / "mnist.npz").resolve()) in str(info.value)
    assert f"mirror in use, {empty}" in str(info.value)
    _assert_only(tmp_path / "raw", [])


def test_mirror_base_url(tmp_path: Path, dead_url: str, server, raw: dict, point) -> None:
    point("mnist", dead_url)
    before = len(server.requests)
    (path,) = fetch.download("mnist", tmp_path, mirror=server.base_url.rstrip("/"))
    assert sha256(path) == raw["sha256"]["mnist.npz"]
    assert server.requests[before:] == ["/mnist.npz"]


def test_mirror_from_environment(
    tmp_path: Path, dead_url: str, raw: dict, point, monkeypatch: pytest.MonkeyPatch
) -> None:
    point("boston_housing", dead_url)
    monkeypatch.setenv(fetch.MIRROR_ENV, str(raw["dir"]))
    (path,) = fetch.download("boston_housing", tmp_path)
    assert sha256(path) == raw["sha256"]["boston_housing.npz"]


def test_verified_file_is_not_fetched_again(tmp_path: Path, server, dead_url: str, point) -> None:
    point("mnist", server.base_url)
    (path,) = fetch.download("mnist", tmp_path)
    mtime = path.stat().st_mtime_ns
    point("mnist", dead_url)  # any fetch attempt would now fail
    assert fetch.download("mnist", tmp_path) == [path]
    assert path.stat().st_mtime_ns == mtime


def test_file_with_wrong_hash_is_fetched_again(tmp_path: Path, server, raw: dict, point) -> None:
    point("mnist", server.base_url)
    (tmp_path / "mnist.npz").write_bytes(b"stale or half-written")
    (path,) = fetch.download("mnist", tmp_path)
    assert sha256(path) == raw["sha256"]["mnist.npz"]
    _assert_only(tmp_path, ["mnist.npz"])


def test_convert_refuses_missing_or_altered_raw_file(tmp_path: Path, raw: dict, point) -> None:
    point("mnist", "http://unused/")
    with pytest.raises(DatasetError, match="missing raw file .*run download"):
        ds.convert("mnist", tmp_path, tmp_path / "out.npz")
    (tmp_path / "mnist.npz").write_bytes(b"not the pinned file")
    with pytest.raises(DatasetError, match=raw["sha256"]["mnist.npz"]):
        ds.convert("mnist", tmp_path, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
    with pytest.raises(DatasetError, match="needs raw_dir"):
        ds.convert("mnist", None, tmp_path / "out.npz")


# --------------------------------------------------------------------------- load_npz


def test_load_npz_truncated_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.arange(1000.0), y_train=np.arange(1000))
    assert ds.load_npz(path)["x_train"].shape == (1000,)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError) as info:
        ds.load_npz(path)
    assert str(path) in str(info.value)
    assert "delete it and rerun" in str(info.value)


def test_load_npz_rejects_garbage_and_missing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(DatasetError, match="garbage.npz"):
        ds.load_npz(garbage)
    with pytest.raises(DatasetError, match="does not exist"):
        ds.load_npz(tmp_path / "absent.npz")


def test_load_npz_refuses_object_arrays(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match="objects.npz"):
        ds.load_npz(path)


# --------------------------------------------------------------------------- bundled


def test_bundled_digits(tmp_path: Path) -> None:
    assert fetch.download("digits", tmp_path / "raw") == []
    arrays = ds.load_npz(ds.convert("digits", None, tmp_path / "digits.npz"))
    assert sorted(arrays) == ["x_train", "y_train"]
    assert arrays["x_train"].shape == (1797, 64)
    assert arrays["y_train"].shape == (1797,)
    assert set(np.unique(arrays["y_train"])) == set(range(10))
    assert 0 <= arrays["x_train"].min() and arrays["x_train"].max() == 16


def test_bundled_diabetes(tmp_path: Path) -> None:
    arrays = ds.load_npz(ds.convert("diabetes", None, tmp_path / "diabetes.npz"))
    assert sorted(arrays) == ["x_train", "y_train"]
    assert arrays["x_train"].shape == (442, 10)
    assert arrays["y_train"].dtype.kind == "f"
    _assert_only(tmp_path, ["diabetes.npz"])


# --------------------------------------------------------------------------- hostile origins


def test_a_trickling_server_fails_at_the_deadline(tmp_path: Path, server, point) -> None:
    """A byte every 0.25 s never trips the timeout per read; the deadline stops it."""
    point("mnist", server.base_url + "trickle/")
    start = time.monotonic()
    with pytest.raises(DatasetError) as info:
        fetch.download("mnist", tmp_path, timeout=5, deadline=1)
    assert time.monotonic() - start < 4
    message = str(info.value)
    assert "did not finish within its deadline of 1 s" in message and fetch.DEADLINE_ENV in message
    assert f"place mnist.npz at {(tmp_path / 'mnist.npz').resolve()}" in message
    _assert_only(tmp_path, [])


def test_a_server_trickling_its_headers_fails_at_the_deadline(
    tmp_path: Path, server, point, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fetch.DEADLINE_ENV, "1")  # the variable sets the deadline too
    point("mnist", server.base_url + "slow-headers/")
    start = time.monotonic()
    with pytest.raises(DatasetError, match="deadline of 1 s"):
        fetch.download("mnist", tmp_path, timeout=5)
    assert time.monotonic() - start < 4
    _assert_only(tmp_path, [])


def test_a_bad_deadline_variable_names_itself(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(fetch.DEADLINE_ENV, "soon")
    with pytest.raises(DatasetError, match=r"HPSTUDY_DOWNLOAD_DEADLINE.*Received: 'soon'"):
        fetch.download("mnist", tmp_path)


def test_the_default_deadline_grows_with_the_file() -> None:
    assert fetch.deadline_for(5148) == 300
    assert 25 * 60 < fetch.deadline_for(170498071) < 30 * 60  # CIFAR-10 at 100 kB/s


@pytest.mark.parametrize("where", ["announced", "streamed", "mirror directory"])
def test_an_oversized_file_is_refused(tmp_path: Path, server, raw: dict, point, where) -> None:
    size = {"mnist.npz": 1000}  # the stand-in is larger
    if where == "mirror directory":
        point("mnist", "http://unused/", size=size)
        mirror = str(raw["dir"])
    else:
        base = server.base_url + ("no-length/" if where == "streamed" else "")
        point("mnist", base, size=size)
        mirror = None
    with pytest.raises(DatasetError) as info:
        fetch.download("mnist", tmp_path / "raw", mirror=mirror)
    message = str(info.value)
    received = "more than 1000" if where != "announced" else f"{raw['mnist_bytes']} (its Content"
    assert "mnist.npz fetched from" in message and "is larger than its pinned size" in message
    assert f"expected 1000 bytes, received {received}" in message
    _assert_only(tmp_path / "raw", [])


def test_a_redirect_to_plain_http_on_another_host_is_refused(tmp_path: Path, server, point) -> None:
    point("mnist", server.base_url + "to-http/")
    before = len(server.requests)
    with pytest.raises(DatasetError) as info:
        fetch.download("mnist", tmp_path)
    message = str(info.value)
    assert "refused HTTP 302 redirect" in message and "http://localhost:" in message
    assert "only go to https, or stay on the same scheme and host" in message
    assert server.requests[before:] == ["/to-http/mnist.npz"]  # the target was never asked for
    _assert_only(tmp_path, [])


def test_a_redirect_on_the_same_host_is_followed(tmp_path: Path, server, raw, point) -> None:
    point("mnist", server.base_url + "moved/")
    before = len(server.requests)
    (path,) = fetch.download("mnist", tmp_path)
    assert sha256(path) == raw["sha256"]["mnist.npz"]
    assert server.requests[before:] == ["/moved/mnist.npz", "/mnist.npz"]


def test_stale_part_files_of_a_killed_download_are_removed(
    tmp_path: Path, server, raw, point
) -> None:
    point("mnist", server.base_url)
    stale = tmp_path / ".mnist.npz.4242.0badc0de.part"
    stale.write_bytes(b"half a download")
    (tmp_path / "notes.part").write_text("not ours")
    (path,) = fetch.download("mnist", tmp_path)
    assert sha256(path) == raw["sha256"]["mnist.npz"]
    _assert_only(tmp_path, ["mnist.npz", "notes.part"])


OVERRIDDEN = """
import logging, sys
logging.basicConfig(level=logging.WARNING)
from hpstudy import datasets
print(datasets.get_source("mnist").files[0].sha256)
"""


@pytest.mark.parametrize("in_tests", [False, True])
def test_hash_overrides_count_only_inside_the_test_suite(tmp_path: Path, in_tests: bool) -> None:
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"mnist.npz": "a" * 64}))
    env = {k: v for k, v in os.environ.items() if k != ds.TESTING_ENV}
    env.update(
        {ds.SHA256_OVERRIDES_ENV: str(pins), "PYTHONPATH": str(Path(ds.__file__).parents[1])}
    )
    if in_tests:
        env[ds.TESTING_ENV] = "tests/test_datasets.py::x (call)"
    proc = subprocess.run(
        [sys.executable, "-c", OVERRIDDEN], capture_output=True, text=True, env=env, check=True
    )
    pinned = ds.SOURCES["mnist"].files[0].sha256
    assert proc.stdout.strip() == ("a" * 64 if in_tests else pinned)
    if not in_tests:
        assert f"{ds.SHA256_OVERRIDES_ENV}={pins} is ignored" in proc.stderr
        assert "PYTEST_CURRENT_TEST" in proc.stderr


# --------------------------------------------------------------------------- hostile CIFAR pickles


class _Array:
    """Pickles as numpy does an ndarray, with whatever state it is given."""

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"), self.state)


def _cifar_with_test_batch(tmp_path: Path, point, test_batch: bytes) -> None:
    batches = {f"data_batch_{i}": cifar_batch_bytes(cifar_rows(1, RNG), [0]) for i in range(1, 6)}
    batches["test_batch"] = test_batch
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, batches)
    point("cifar10", "http://unused/", {tarball.name: sha256(tarball)})


@pytest.mark.parametrize(
    ("shape", "data", "held"),
    [
        ((10, 3072), b"\0" * 100, "(10, 3072) of uint8 (30720 bytes) but holds 100 bytes"),
        ((2**40, 3072), b"\0" * 100, "more than the 67108864 bytes a batch may hold"),
        ((2**62, 2**62), b"\0" * 100, "more than the 67108864 bytes a batch may hold"),
        ((-1, 3072), b"\0" * 100, "shape of non-negative ints, received shape (-1, 3072)"),
    ],
)
def test_a_cifar_pickle_with_a_lying_shape_is_refused(tmp_path, point, shape, data, held):
    state = (1, shape, np.dtype("u1"), False, data)
    lie = pickle.dumps({b"data": _Array(state), b"labels": [0]}, protocol=3)
    _cifar_with_test_batch(tmp_path, point, lie)
    with pytest.raises(DatasetError) as info:
        ds.convert("cifar10", tmp_path, tmp_path / "out" / "c.npz")
    message = str(info.value)
    assert "cannot unpickle cifar-10-batches-py/test_batch" in message and held in message
    assert not (tmp_path / "out" / "c.npz").exists()


def test_a_cifar_pickle_of_objects_is_refused(tmp_path, point):
    state = (1, (3,), np.dtype("O"), False, [1, 2, 3])
    _cifar_with_test_batch(tmp_path, point, pickle.dumps({b"data": _Array(state)}, protocol=3))
    with pytest.raises(DatasetError, match=r"expected a numeric array .* dtype dtype\('O'\)"):
        ds.convert("cifar10", tmp_path, tmp_path / "c.npz")


def test_a_cifar_pickle_that_asks_for_a_terabyte_is_a_dataset_error(tmp_path, point):
    # BINBYTES8 announcing 2**40 bytes: the unpickler's allocation fails with MemoryError.
    bomb = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc"
    _cifar_with_test_batch(tmp_path, point, bomb)
    with pytest.raises(DatasetError, match="cannot unpickle .*test_batch.*: out of memory"):
        ds.convert("cifar10", tmp_path, tmp_path / "c.npz")


def test_cifar_members_above_the_cap_are_not_read(
    tmp_path: Path, raw: dict, point, monkeypatch: pytest.MonkeyPatch
) -> None:
    point("cifar10", "http://unused/")
    monkeypatch.setattr(readers, "CIFAR_MEMBER_MAX_BYTES", 1000)
    shutil.copy(raw["dir"] / "cifar-10-python.tar.gz", tmp_path)
    with pytest.raises(DatasetError) as info:
        ds.convert("cifar10", tmp_path, tmp_path / "c.npz")
    assert "data_batch_1" in str(info.value)
    assert "expected at most 1000 bytes" in str(info.value)


def test_a_server_trickling_its_tls_handshake_fails_at_the_deadline(tmp_path: Path, point) -> None:
    """The deadline also covers https before any HTTP is spoken (the socket is watched from the
    moment it connects): a TLS record header, then one byte every 0.25 s."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def trickle() -> None:
            conn, _ = listener.accept()
            with conn, contextlib.suppress(OSError):
                conn.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record of 16 KiB follows...
                for _ in range(40):
                    time.sleep(0.25)
                    conn.sendall(b"\x00")

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        point("mnist", f"https://127.0.0.1:{port}/")
        start = time.monotonic()
        with pytest.raises(DatasetError, match="deadline of 1 s"):
            fetch.download("mnist", tmp_path, timeout=5, deadline=1)
        assert time.monotonic() - start < 4
        thread.join(timeout=15)
    _assert_only(tmp_path, [])
