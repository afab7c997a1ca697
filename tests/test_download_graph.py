"""Downloads inside the Snakemake graph: one rule per remote source, verified files, clear errors.

The stand-in files (tests/fakedata.py) are served from 127.0.0.1 and reached through the
config's `data_mirror`, as a cluster without internet would reach its own mirror.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fakedata import hashes, serve, write_raw
from helpers import run_snakemake

from hpstudy import datasets as ds

MNIST_PIN = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

MNIST_CONFIG = """\
datasets:
  m: {source: mnist, split: {test: canonical, validation: 0.2}}
baselines:
  b: {dataset: m, training: {epochs: 1}}
studies:
  s: {kind: ofat, baseline: b, factors: {optimizer.learning_rate: [0.1]}}
"""
# The same, plus a dataset bundled with scikit-learn (no download).
CONFIG = (
    MNIST_CONFIG.replace("baselines:", "  d: {source: digits}\nbaselines:").replace(
        "studies:", "  bd: {dataset: d, training: {epochs: 1}}\nstudies:"
    )
    + "  sd: {kind: ofat, baseline: bd, factors: {optimizer.learning_rate: [0.1]}}\n"
)


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("origin")
    write_raw(root, np.random.default_rng(1))
    return root


@pytest.fixture(scope="module")
def server(origin: Path):
    with serve(origin) as httpd:
        yield httpd


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(CONFIG)
    return tmp_path


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """One core, without the caller's HPSTUDY_ settings, the local server not behind a proxy."""
    local = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    return run_snakemake(
        workdir, "--cores", "1", *args, check=False, timeout=300, env={**local, **(env or {})},
        unset=("HPSTUDY_",),
    )  # fmt: skip


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.mark.e2e
def test_one_download_rule_per_remote_source_of_the_config(workdir: Path) -> None:
    proc = snakemake(workdir, "--list-rules")
    assert proc.returncode == 0, proc.stderr
    rules = set(proc.stdout.split())
    assert "download_mnist" in rules and "convert_dataset" in rules
    assert not {r for r in rules if r.startswith("download_")} - {"download_mnist"}
    # The dry run fetches mnist.npz into its own directory before converting; digits, bundled
    # with scikit-learn, is converted without any download.
    proc = snakemake(workdir, "-n", "resources/datasets/mnist.npz", "resources/datasets/digits.npz")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^download_mnist\s+1\s*$", out, re.MULTILINE)
    assert re.search(r"^convert_dataset\s+2\s*$", out, re.MULTILINE)
    assert "resources/datasets/mnist/mnist.npz" in out


@pytest.mark.e2e
def test_download_and_convert_through_the_mirror(
    workdir: Path, server, origin: Path, tmp_path_factory
) -> None:
    overrides = tmp_path_factory.mktemp("pins") / "sha256.json"
    overrides.write_text(json.dumps(hashes(origin)))
    env = {ds.SHA256_OVERRIDES_ENV: str(overrides)}
    target = "resources/datasets/mnist.npz"
    proc = snakemake(workdir, target, "--config", f"data_mirror={server.base_url}", env=env)
    assert proc.returncode == 0, proc.stderr
    assert files_under(workdir / "resources") == ["datasets/mnist.npz", "datasets/mnist/mnist.npz"]
    assert "/mnist.npz" in server.requests
    converted = ds.load_npz(workdir / target)
    np.testing.assert_array_equal(converted["x_train"], np.load(origin / "mnist.npz")["x_train"])
    # The mirror says where files come from, not what they are (they are pinned): changing it
    # must not fetch, convert or retrain anything again.
    proc = snakemake(workdir, "-n", target, "--config", "data_mirror=/elsewhere", env=env)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_checksum_mismatch_fails_clearly_and_leaves_nothing(workdir: Path, server, origin) -> None:
    (workdir / "config.yaml").write_text(MNIST_CONFIG)
    # The whole workflow, without overrides: the stand-in is not the real MNIST file.
    proc = snakemake(workdir, "--config", f"data_mirror={server.base_url}")
    assert proc.returncode != 0
    message = f"checksum mismatch for mnist.npz fetched from {server.base_url}mnist.npz"
    assert message in proc.stderr
    assert f"expected sha256 {MNIST_PIN}, received {hashes(origin)['mnist.npz']}" in proc.stderr
    assert "Error in rule download_mnist" in proc.stderr
    assert files_under(workdir / "resources") == []
    assert message in (workdir / "results/logs/datasets/mnist.download.log").read_text()
    assert not list((workdir / "results").glob("runs/*/r*"))  # nothing was trained


@pytest.mark.e2e
def test_unreachable_mirror_says_which_file_to_place_where(workdir: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    proc = snakemake(workdir, "resources/datasets/mnist.npz", "--config", f"data_mirror={dead}")
    assert proc.returncode != 0
    final = (workdir / "resources/datasets/mnist/mnist.npz").resolve()
    assert f"could not fetch mnist.npz for dataset 'mnist' from {dead}mnist.npz" in proc.stderr
    assert f"place mnist.npz at {final}" in proc.stderr
    assert f"with sha256 {MNIST_PIN}" in proc.stderr
    assert f"Or put these files in the mirror in use, {dead}" in proc.stderr
    log = (workdir / "results/logs/datasets/mnist.download.log").read_text()
    assert f"place mnist.npz at {final}" in log and f"with sha256 {MNIST_PIN}" in log
    assert files_under(workdir / "resources") == []
