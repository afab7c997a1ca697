"""The real `snakemake` command on a tiny config: outputs, report, and incremental re-planning."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_snakemake

# One `train` job per run (each with its own train.log), as with `execution.fuse_experiments`
# off; tests/test_groups.py runs the same kind of change through fused experiments.
CONFIG = """\
title: Tiny e2e study
execution: {fuse_experiments: false}
datasets:
  d: {source: digits, subsample: 240}
  r: {source: diabetes}
baselines:
  b:
    dataset: d
    model: {hidden: [16, 8]}
    optimizer: {name: sgd, learning_rate: 0.05, momentum: 0.5}
    training: {epochs: 4, batch_size: 64}
  reg:
    dataset: r
    model: {hidden: [8]}
    optimizer: {name: adam, learning_rate: 0.01}
    training: {epochs: 3, batch_size: 32}
studies:
  lr:
    kind: ofat
    baseline: b
    factors: {optimizer.learning_rate: [0.01]}
  act:
    kind: ofat
    baseline: b
    variants:
      - label: tanh (glorot_uniform)
        set: {model.activation: tanh, model.initializer: glorot_uniform}
  wide:
    kind: ofat
    baseline: reg
    factors: {model.kind: [wide_deep]}
"""


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, check=check)


def planned(workdir: Path, rule: str) -> int:
    """How many jobs of `rule` a dry run plans (0 when there is nothing to do)."""
    out = snakemake(workdir, "-n")
    text = out.stdout + out.stderr
    match = re.search(rf"^{rule}\s+(\d+)\s*$", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    (workdir / "config.yaml").write_text(CONFIG)
    assert planned(workdir, "train") == 5  # 2 shared baselines... b, lr=0.01, tanh, reg, wide
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.mark.e2e
def test_outputs_of_every_run_and_study(finished):
    runs = sorted((finished / "results" / "runs").glob("*/r0"))
    assert len(runs) == 5
    for run in runs:
        for name in ("history.csv", "timing.csv", "metrics.json", "model.keras", "train.log"):
            assert (run / name).exists(), run / name
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "ok"
        assert metrics["seed"] == 42 and metrics["params"] > 0
        history = pd.read_csv(run / "history.csv")
        assert list(history["epoch"]) == list(range(1, len(history) + 1))
        assert {"loss", "val_loss", "learning_rate"} <= set(history.columns)
        assert "Epoch" in (run / "train.log").read_text()  # Keras' progress lines
    table = pd.read_csv(finished / "results/studies/lr/runs.csv")
    assert list(table["variant"]) == ["baseline", "learning_rate=0.01"]
    assert {
        "experiment",
        "repeat",
        "optimizer.learning_rate",
        "best_val_accuracy",
        "test_accuracy",
    } <= set(table.columns)
    for rel in table["history"]:
        assert (finished / "results/studies/lr" / rel).exists()
    wide = pd.read_csv(finished / "results/studies/wide/runs.csv")
    assert {"best_val_mae", "test_mae"} <= set(wide.columns)
    hist = pd.read_csv(finished / "results/studies/wide" / wide["history"][0])
    assert {"mse", "val_mse", "mae", "val_mae", "rmse", "val_rmse"} <= set(hist.columns)


@pytest.mark.e2e
def test_report_is_self_contained_with_a_section_per_study(finished):
    html = (finished / "results/report.html").read_text()
    for slug in ("lr", "act", "wide"):
        assert f'id="study-{slug}"' in html
    assert html.count("<img") >= 3
    assert "data:image/" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert "Tiny e2e study" in html


@pytest.mark.e2e
def test_nothing_to_do_then_one_change_trains_exactly_one_run(finished):
    assert planned(finished, "train") == 0
    assert (
        "Nothing to be done" in snakemake(finished, "-n").stdout + snakemake(finished, "-n").stderr
    )
    config = finished / "config.yaml"
    original = config.read_text()
    try:
        config.write_text(original.replace("[0.01]", "[0.02]"))
        assert planned(finished, "train") == 1
        assert planned(finished, "aggregate_study") == 1  # only that study
        assert planned(finished, "report") == 1
        # A change of the shared baseline retrains it once, though two studies use it.
        config.write_text(original.replace("momentum: 0.5", "momentum: 0.6"))
        assert planned(finished, "train") == 3  # the baseline, lr=0.01 and tanh all derive from it
    finally:
        config.write_text(original)
    assert planned(finished, "train") == 0


@pytest.mark.e2e
def test_bad_config_stops_before_any_job(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG.replace("activation: tanh", "activation: tahn"))
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert "studies.act.variants[0].set" in err and "model.activation" in err
    assert "config.yaml" in err and "one of relu" in err and "'tahn'" in err
    assert not (tmp_path / "results").exists()
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)
