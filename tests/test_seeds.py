"""One config per seed study (config/seed_00X.yaml): what each plans, and each run end to end.

The end-to-end runs use small stand-in files in the real formats (tests/fakedata.py), served from
127.0.0.1 through the config's `data_mirror`, with their hashes given through the test-only
HPSTUDY_SHA256_OVERRIDES file, and an overlay config that shrinks epochs and rows.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fakedata import hashes, serve, write_raw
from helpers import run_snakemake

from hpstudy import datasets as ds
from hpstudy import prepare
from hpstudy.config import ConfigError
from hpstudy.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]

# Seed -> ({study: number of variants}, unique experiments, train jobs). A train job is a run: an
# experiment with a repeat, or a CV candidate with a fold (the CV refit is planned after the
# selection). Seeds 003 and 004 include the cross-validation and range-test studies.
EXPECTED = {
    "seed_000": ({"l2_strength": 5, "learning_rate": 4}, 8, 8),
    "seed_001": ({"penalty": 3, "dropout": 2}, 5, 5),
    "seed_002": (
        {
            "layers": 3,
            "learning_rate": 3,
            "batch_size": 3,
            "activation": 3,
            "momentum": 3,
            "l2": 3,
            "dropout": 3,
        },
        15,
        15,
    ),
    "seed_003": (
        {"mnist": 1, "california": 2, "grid_cv": 27, "mnist_lr_range": 0, "mnist_suggested_lr": 2},
        31,
        58,
    ),
    "seed_004": ({"optimizer": 2, "optimizer_cv": 2, "structure_cv": 18}, 18, 92),
}
DOWNLOADS = {
    "seed_000": {"mnist"},
    "seed_001": {"fashion_mnist"},
    "seed_002": {"cifar10"},
    "seed_003": {"mnist", "california_housing"},
    "seed_004": {"boston_housing"},
}


def seed_file(seed: str) -> Path:
    return ROOT / "config" / f"{seed}.yaml"


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Without the caller's HPSTUDY_ settings, the local server not behind a proxy."""
    local = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    return run_snakemake(workdir, *args, config=None, check=False, env={**local, **(env or {})},
                         unset=("HPSTUDY_",))  # fmt: skip


def job_counts(text: str) -> dict[str, int]:
    """The dry run's job table: {rule: count}."""
    table = text.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


# --------------------------------------------------------------------------- planning


@pytest.mark.parametrize("seed", sorted(EXPECTED))
def test_plan_of_each_seed(seed: str) -> None:
    plan = load_plan([seed_file(seed)])
    studies, n_experiments, n_runs = EXPECTED[seed]
    assert {s.name: len(s.variants) for s in plan.studies.values()} == studies
    assert len(plan.experiments) == n_experiments
    assert len(plan.runs) == n_runs
    assert {r.repeat for r in plan.runs.values() if r.kind == "repeat"} == {0}  # trained once


@pytest.mark.e2e
@pytest.mark.parametrize("seed", sorted(EXPECTED))
def test_snakemake_dry_run_plans_exactly_the_seed(seed: str, tmp_path: Path) -> None:
    # The default config sits where the Snakefile looks for it; --configfile must replace it,
    # not be merged with it (the default's studies would be planned too).
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    proc = snakemake(tmp_path, "-n", "--configfile", str(seed_file(seed)))
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    studies, _, n_runs = EXPECTED[seed]
    # Every run once: alone (`train`), or a tower of a group of experiments (hpstudy.groups).
    fused, groups = load_plan([seed_file(seed)]).training_jobs(lambda exp, run: None)
    assert fused == {}  # trained once: no experiment has repeats to fuse
    assert sum(n for rule, n in counts.items() if rule.startswith("train_group_")) == len(groups)
    assert counts.get("train", 0) + sum(g.towers for g in groups) == n_runs
    assert counts["aggregate_study"] == len(studies)
    assert {r.removeprefix("download_") for r in counts if r.startswith("download_")} == (
        DOWNLOADS[seed]
    )


def test_seed_002_is_the_notebook() -> None:
    plan = load_plan([seed_file("seed_002")])
    specs = {
        (s.name, v.label): plan.experiments[v.experiment].spec
        for s in plan.studies.values()
        for v in s.variants
    }
    assert "validation = test split" in plan.config["title"]  # the report's title says so
    main = specs[("layers", "baseline")]
    assert main["data"]["split"]["validation"] == "test"
    assert main["data"]["scaler"] == {"kind": "divide", "by": 256.0}
    assert main["model"]["hidden"] == [32, 16, 64, 32, 16, 64]
    assert main["optimizer"] == {
        "name": "sgd",
        "learning_rate": 0.01,
        "momentum": 0.45,
        "nesterov": False,
    }
    assert main["training"]["epochs"] == 500 and main["training"]["batch_size"] == 256
    assert main["training"]["seed"] == 42
    depths = sorted(len(spec["model"]["hidden"]) for (s, _), spec in specs.items() if s == "layers")
    assert depths == [2, 6, 20]
    l2 = specs[("l2", "l2=0.5 + dropout 0.2")]["model"]
    assert l2["regularizer"] == {"l1": 0.0, "l2": 0.5, "layers": "output", "bias": True}
    assert l2["dropout"] == {"rate": 0.2, "layers": "all"}
    linear = specs[("activation", "linear (he_normal)")]["model"]
    assert (linear["activation"], linear["initializer"]) == ("linear", "he_normal")
    lrs = sorted(
        spec["optimizer"]["learning_rate"] for (s, _), spec in specs.items() if s == "learning_rate"
    )
    assert lrs == [0.0005, 0.01, 0.05]


def test_seed_003_splits_and_models() -> None:
    plan = load_plan([seed_file("seed_003")])
    by_study = {
        s.name: [plan.experiments[v.experiment].spec for v in s.variants]
        for s in plan.studies.values()
    }
    (mnist,) = by_study["mnist"]
    assert mnist["data"]["split"]["validation"] == 5000
    assert mnist["data"]["split"]["validation_rows"] == "head"
    assert mnist["data"]["scaler"]["kind"] == "divide" and mnist["data"]["scaler"]["by"] == 255.0
    assert mnist["model"]["hidden"] == [300, 100]
    mlp, wide = by_study["california"]
    assert mlp["data"]["scaler"]["target_by"] == 100000.0
    assert mlp["model"]["hidden"] == [500] and mlp["model"]["kind"] == "mlp"
    assert wide["model"]["kind"] == "wide_deep" and wide["model"]["hidden"] == [30, 30]
    assert wide["optimizer"]["learning_rate"] == 0.001 and wide["training"]["seed"] == 2


# --------------------------------------------------------------------------- target scaling


def test_target_by_divides_regression_targets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    canonical = {"x_train": rng.normal(size=(40, 3)), "y_train": rng.uniform(1e4, 5e5, size=40)}
    split = {"test": 0.25, "validation": 0.25, "validation_rows": "random", "stratify": False}
    data = {
        "source": "california_housing",
        "task": "regression",
        "split": {**split, "seed": 0},
        "scaler": {"kind": "standard", "by": 255.0},
        "subsample": 0,
    }
    plain = prepare.prepare(canonical, data)
    scaled = prepare.prepare(canonical, {**data, "scaler": {**data["scaler"], "target_by": 1e5}})
    for part in prepare.SPLITS:
        np.testing.assert_allclose(scaled[f"y_{part}"] * 1e5, plain[f"y_{part}"], rtol=1e-6)
        np.testing.assert_array_equal(scaled[f"x_{part}"], plain[f"x_{part}"])


def test_target_by_is_refused_for_classification(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "datasets: {m: {source: mnist, scaler: {kind: divide, target_by: 10}}}\n"
        "baselines: {b: {dataset: m}}\n"
        "studies: {s: {kind: ofat, baseline: b, factors: {training.epochs: [2]}}}\n"
    )
    with pytest.raises(ConfigError, match=r"datasets\.m\.scaler\.target_by.*classification"):
        load_plan([config])


# --------------------------------------------------------------------------- end to end

# Rows of the stand-ins: enough for seed 003's 5000 head rows of MNIST held out for validation,
# and for stratified splits with every class present.
STANDIN_SIZES = {
    "mnist": (5100, 40),
    "fashion_mnist": (100, 20),
    "cifar10": (20, 30),
    "boston_housing": 120,
    "california_housing": 700,
}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The stand-ins served on 127.0.0.1, and the env that pins their hashes (test-only)."""
    root = tmp_path_factory.mktemp("mirror")
    write_raw(root, np.random.default_rng(3), STANDIN_SIZES)
    pins = tmp_path_factory.mktemp("pins") / "sha256.json"
    pins.write_text(json.dumps(hashes(root)))
    with serve(root) as httpd:
        yield httpd, {ds.SHA256_OVERRIDES_ENV: str(pins)}


def baseline_value(baseline: dict, path: str, values: list):
    """The baseline's value at a dotted path if it is one of `values`, else the first value."""
    node = baseline
    for part in path.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if node in values else values[0]


def tiny_overlay(seed: str) -> dict:
    """Overrides that keep every study of the seed, each with the fewest runs that still compare.

    One epoch on 64 training rows; each one-factor study keeps its reference and its last value
    (the most extreme one); a CV study keeps two candidates and two folds; a range test the
    shortest ramp. Snakemake merges mappings and replaces lists, so the lists are cut here.
    A CV grid keeps the baseline's own value of each key where it has one (else the first) and
    two values of its last key, so its candidates often are other studies' (trained once).
    """
    config = yaml.safe_load(seed_file(seed).read_text())
    studies = {}
    for name, study in config["studies"].items():
        small: dict = {}
        cv = study["kind"] == "cv"
        if study.get("factors"):
            small["factors"] = {key: values[-1:] for key, values in study["factors"].items()}
        if study.get("variants"):
            small["variants"] = study["variants"][:2] if cv else study["variants"][-1:]
        if study.get("grid"):
            base = config["baselines"][study["baseline"]]
            *keys, last = study["grid"]
            small["grid"] = {k: [baseline_value(base, k, study["grid"][k])] for k in keys}
            small["grid"][last] = study["grid"][last][:2]
        if cv:
            small["cv"] = 2
        if "training.epochs" in study.get("set", {}):
            small["set"] = {"training.epochs": 1}
        if study["kind"] == "lr_range":
            small["lr_range"] = {"iterations": 10}
        studies[name] = small
    return {
        "datasets": {name: {"subsample": 64} for name in config["datasets"]},
        "baselines": {name: {"training": {"epochs": 1}} for name in config["baselines"]},
        "studies": studies,
    }


@pytest.fixture(scope="module")
def seed_runs(mirror, tmp_path_factory) -> dict:
    """Every seed config run end to end: {seed: (workdir, overlay, completed process)}.

    Three runs at a time, each one job at a time: a single run leaves a core idle while it
    downloads, prepares or waits on its last job, so this keeps both cores busy.
    """
    server, env = mirror

    def run(seed: str):
        workdir = tmp_path_factory.mktemp(seed)
        overlay = workdir / "tiny.yaml"
        overlay.write_text(yaml.safe_dump(tiny_overlay(seed)))
        proc = snakemake(
            workdir,
            "--cores", "1",
            "--configfile", str(seed_file(seed)), str(overlay),
            "--config", f"data_mirror={server.base_url}",
            env=env,
        )  # fmt: skip
        return workdir, overlay, proc

    seeds = sorted(EXPECTED)
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(seeds, pool.map(run, seeds)))


@pytest.mark.e2e
@pytest.mark.parametrize("seed", sorted(EXPECTED))
def test_seed_runs_end_to_end(seed: str, seed_runs: dict) -> None:
    workdir, overlay, proc = seed_runs[seed]
    assert proc.returncode == 0, proc.stderr[-4000:]

    plan = load_plan([seed_file(seed), overlay])
    for run in plan.runs.values():
        assert (workdir / run.dir / "metrics.json").exists(), run.dir
    html = (workdir / "results/report.html").read_text()
    assert html_escape(plan.config["title"]) in html
    for study in plan.studies.values():
        if study.kind == "lr_range":
            assert f'id="lr-range-{study.slug}"' in html
            assert list((workdir / "results/lr_range").glob("*/suggestion.json"))
            continue
        assert f'id="study-{study.slug}"' in html
        table = pd.read_csv(workdir / study.dir / "runs.csv")
        assert set(table["variant"]) == {v.label for v in study.variants}
        assert set(table["status"]) == {"ok"}
    for source in DOWNLOADS[seed]:
        assert (workdir / "resources/datasets" / f"{source}.npz").exists()
