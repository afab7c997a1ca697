"""Helpers shared by the tests that run the workflow or its training jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hpstudy import datasets, prepare

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def run_snakemake(workdir: Path, config: str, *args: str) -> subprocess.CompletedProcess:
    """The real `snakemake` on this repository's Snakefile, in `workdir`; fails the test on error."""
    cmd = [
        SNAKEMAKE,
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / config),
        *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def prepared_digits(root: Path, data_spec: dict) -> Path:
    """digits converted and prepared under `data_spec` into `root/data.npz`, as the workflow does."""
    datasets.convert("digits", None, root / "digits.npz")
    arrays = prepare.prepare(datasets.load_npz(root / "digits.npz"), data_spec)
    prepare.save(arrays, root / "data.npz", prepare.describe(arrays, data_spec))
    return root / "data.npz"
