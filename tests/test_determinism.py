"""Determinism: the same config trained twice on CPU, in two processes, gives byte-identical
history.csv and metrics.json apart from the fields grouped under `timing` and `host`; each
repeat derives its own seed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import prepared_digits
from test_resume import DRIVER, job

from hpstudy.ids import derive_seed
from hpstudy.plan import load_plan

CONFIG = """\
title: Determinism
repeats: 2
datasets:
  d: {source: digits, subsample: 120}
baselines:
  b:
    dataset: d
    model: {hidden: [12], dropout: {rate: 0.2}}
    optimizer: {name: adam, learning_rate: 0.01}
    training: {epochs: 3, batch_size: 16, seed: 11}
studies:
  s: {kind: ofat, baseline: b, factors: {model.activation: [tanh]}}
"""


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    """Every run of the config, trained by two processes at the same time."""
    root = tmp_path_factory.mktemp("determinism")
    (root / "config.yaml").write_text(CONFIG)
    plan = load_plan([str(root / "config.yaml")])
    data_spec = next(iter(plan.preps.values()))[1]
    prepared_digits(root, data_spec)
    cases = [
        {
            "spec": plan.experiments[run.experiment].spec,
            "data_path": str(root / "data.npz"),
            "seed": run.seed,
            "run": run.name,
            "experiment": run.experiment,
        }
        for run in plan.runs.values()
    ]
    procs = []
    for copy in ("a", "b"):
        jobs = [job(c, root / copy / c["experiment"] / c["run"]) for c in cases]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", DRIVER, json.dumps(jobs)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for proc in procs:
        out = proc.communicate()[0]
        assert proc.returncode == 0, out[-3000:]
    return root, plan


@pytest.mark.e2e
def test_same_config_gives_byte_identical_results(twice):
    root, plan = twice
    assert len(plan.runs) == 4  # 2 experiments x 2 repeats
    for key in plan.runs:
        a, b = root / "a" / key, root / "b" / key
        assert (a / "history.csv").read_bytes() == (b / "history.csv").read_bytes()
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
        # Only the documented timing and host facts may differ.
        assert set(ma) == set(mb) and {"timing", "host"} <= set(ma)
        for name in set(ma) - {"timing", "host"}:
            assert ma[name] == mb[name], name
        assert {"wall_seconds", "seconds_per_epoch"} <= set(ma["timing"])


@pytest.mark.e2e
def test_each_repeat_derives_its_own_seed(twice):
    root, plan = twice
    for exp in plan.experiments:
        r0, r1 = plan.runs[f"{exp}/r0"], plan.runs[f"{exp}/r1"]
        assert r0.seed == 11 and r1.seed == derive_seed(11, "repeat", 1) != 11
        m0 = json.loads((root / "a" / exp / "r0" / "metrics.json").read_text())
        m1 = json.loads((root / "a" / exp / "r1" / "metrics.json").read_text())
        assert (m0["seed"], m1["seed"]) == (r0.seed, r1.seed)
        h0 = (root / "a" / exp / "r0" / "history.csv").read_bytes()
        h1 = (root / "a" / exp / "r1" / "history.csv").read_bytes()
        assert h0 != h1  # another seed, another initialisation and Dropout draw


def test_derived_seeds_are_stable_and_distinct():
    seeds = [derive_seed(42, kind, i) for kind in ("repeat", "fold") for i in range(10)]
    assert seeds[0] == 42 and len(set(seeds)) == len(seeds)
    assert derive_seed(42, "repeat", 3) == derive_seed(42, "repeat", 3)
    assert all(0 <= s < 2**31 - 1 for s in seeds)
