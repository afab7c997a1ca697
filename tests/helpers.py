"""Helpers shared by the tests: the real snakemake command, planning, a prepared dataset.

`conftest.py` hands the common ones to tests as fixtures; module-level code (module-scoped
fixtures, constants) imports them from here.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

from hpstudy import config as config_mod
from hpstudy import datasets, prepare
from hpstudy.plan import Plan, make_plan

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# The smallest useful config: one digits baseline, one study of one variant (one run each).
TINY_CONFIG = {
    "datasets": {"d": {"source": "digits", "subsample": 200}},
    "baselines": {
        "b": {
            "dataset": "d",
            "model": {"hidden": [8]},
            "optimizer": {"name": "sgd", "learning_rate": 0.05},
            "training": {"epochs": 2, "batch_size": 32},
        }
    },
    "studies": {
        "lr": {"kind": "ofat", "baseline": "b", "factors": {"optimizer.learning_rate": [0.1]}}
    },
}


def run_snakemake(
    workdir: Path,
    *args: str,
    config: str | None = "config.yaml",
    snakefile: Path = ROOT / "Snakefile",
    check: bool = True,
    env: dict | None = None,
    timeout: float = 900,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """The real `snakemake` on `snakefile` in `workdir`, with `workdir/config` as --configfile.

    `check` fails the test on a non-zero exit, showing the end of stderr. `env` adds variables;
    `unset` drops those of the caller's environment whose names start with one of its prefixes.
    """
    cmd = [SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(workdir)]
    if config is not None:
        cmd += ["--configfile", str(workdir / config)]
    base = {k: v for k, v in os.environ.items() if not k.startswith(unset)} if unset else os.environ
    proc = subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})} if env is not None or unset else None,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(proc_or_text) -> dict:
    """Rule -> job count of a dry run's job table (empty when it plans nothing)."""
    text = (
        proc_or_text if isinstance(proc_or_text, str) else proc_or_text.stdout + proc_or_text.stderr
    )
    table = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"
    }


def plan_of(cfg: dict, files: tuple = ("test.yaml",)) -> Plan:
    """Validate a config dict (a copy: defaults are filled in) and plan it, as the workflow does."""
    return make_plan(config_mod.validate(copy.deepcopy(cfg), list(files)), list(files))


def cited_files(source: str) -> list[str]:
    """The history.csv paths an observation's `source` cites, braces expanded."""
    out = []
    for path in re.findall(r"[^\s,;]*(?:\{[^}]*\})?[^\s,;{]*history\.csv", source):
        m = re.fullmatch(r"(.*)\{(.*)\}(.*)", path)
        out += [f"{m[1]}{run}{m[3]}" for run in m[2].split(",")] if m else [path]
    return out


def prepared_digits(root: Path, data_spec: dict, source: str = "digits") -> Path:
    """digits (or another built-in `source`) converted and prepared under `data_spec` into
    `root/data.npz`, as the workflow does."""
    datasets.convert(source, None, root / f"{source}.npz")
    arrays = prepare.prepare(datasets.load_npz(root / f"{source}.npz"), data_spec)
    prepare.save(arrays, root / "data.npz", prepare.describe(arrays, data_spec))
    return root / "data.npz"
