"""One real, tiny workflow with a divergent learning rate and hostile names (see test_safety.py),
then what must hold of it: divergence is a result, parallel jobs share no file, a second
Snakemake on the same directory is refused, and a fresh clone or a touched script retrains nothing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, SNAKEMAKE, planned_jobs, run_snakemake

from hpstudy import figures

HOSTILE_STUDY = "$(touch pwned); rm -rf ../x \"q\" 'q'\nline2/../../escape"
# Two `$` make matplotlib parse a formula: a malformed one must not stop the figure job.
HOSTILE_LABEL = "<script>alert(1)</script> $(touch pwned2) `touch pwned3`; rm -rf / \" '\n$\\frac{"
HOSTILE_TITLE = "Report <script>alert('title')</script> $(touch pwned4)"

CONFIG = {
    "title": HOSTILE_TITLE,
    "datasets": {"d": {"source": "digits", "subsample": 120}},
    "baselines": {
        "b": {
            "dataset": "d",
            "model": {"hidden": [8]},
            "optimizer": {"name": "sgd", "learning_rate": 0.05},
            "training": {"epochs": 6, "batch_size": 10},
        }
    },
    "studies": {
        HOSTILE_STUDY: {
            "kind": "ofat",
            "baseline": "b",
            "factors": {"optimizer.learning_rate": [10.0]},  # diverges
            "variants": [{"label": HOSTILE_LABEL, "set": {"model.activation": "tanh"}}],
        }
    },
}


def snakemake(workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile", check=True):
    return run_snakemake(workdir, *args, snakefile=snakefile, check=check, timeout=600)


def listing(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.iterdir())


@functools.cache
def _run_hostile_workflow(base: Path) -> Path:
    workdir = base / "work"
    workdir.mkdir(parents=True)
    import yaml

    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG, allow_unicode=True))
    before = listing(base)
    proc = snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0  # a diverged run is a result, not a failure
    assert listing(base) == before  # nothing escaped the working directory
    return workdir


def hostile_workflow(tmp_path_factory) -> Path:
    """The finished workflow, run once per test session (shared with test_safety.py)."""
    return _run_hostile_workflow(tmp_path_factory.getbasetemp() / "hostile")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return hostile_workflow(tmp_path_factory)


def study_dir(workdir: Path) -> Path:
    (found,) = (workdir / "results" / "studies").iterdir()
    return found


# --------------------------------------------------------------------------- divergence


@pytest.mark.e2e
def test_divergence_is_recorded_and_the_workflow_goes_on(finished):
    runs = pd.read_csv(study_dir(finished) / "runs.csv")
    assert len(runs) == 3
    diverged = runs[runs["status"] == "diverged"]
    assert list(diverged["optimizer.learning_rate"].astype(float)) == [10.0]
    epoch = int(diverged["diverged_epoch"].iloc[0])
    assert 1 <= epoch < 6 and int(diverged["epochs_run"].iloc[0]) == epoch  # stopped there
    assert set(runs[runs["status"] == "ok"]["epochs_run"]) == {6}

    run_dir = study_dir(finished) / Path(diverged["metrics"].iloc[0]).parent
    metrics = json.loads((run_dir / "metrics.json").read_text())  # strict JSON: no NaN
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == epoch
    assert metrics["test_loss"] is None and metrics["test_accuracy"] is None
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(1, epoch + 1))  # kept up to that point
    assert not math.isfinite(history["loss"].iloc[-1] + history["val_loss"].iloc[-1])

    summary = pd.read_csv(study_dir(finished) / "summary.csv")
    assert summary.set_index("variant")["diverged"].to_dict()["learning_rate=10"] == 1
    html = (finished / "results" / "report.html").read_text()
    assert f"diverged at epoch {epoch}" in html and "diverged 1/1" in html


def test_figure_of_diverged_histories_does_not_crash(tmp_path):
    """All-NaN curves, a run that diverged at epoch 1 and a one-epoch history."""
    nan, inf = float("nan"), float("inf")

    def history(loss, val_loss, acc):
        n = len(loss)
        return pd.DataFrame(
            {"epoch": range(1, n + 1), "loss": loss, "val_loss": val_loss,
             "accuracy": acc, "val_accuracy": acc}
        )  # fmt: skip

    study = {
        "title": "diverged",
        "task": "classification",
        "variants": [
            {"label": "baseline", "is_reference": True},
            {"label": "all nan", "is_reference": False},
            {"label": "one epoch", "is_reference": False},
            {"label": "inf then nan", "is_reference": False},
            {"label": "costs $5, not $\\frac{", "is_reference": False},
        ],
    }
    histories = {
        "baseline": [history([1.0, 0.5, 0.4], [1.1, 0.6, 0.5], [0.5, 0.7, 0.8])],
        "all nan": [history([nan], [nan], [0.1])],
        "one epoch": [history([0.9], [1.0], [0.6])],
        "inf then nan": [history([2.0, inf, nan], [2.0, inf, nan], [0.2, 0.1, 0.1])] * 2,
        "costs $5, not $\\frac{": [history([1.0], [1.0], [0.5])],
    }
    for fmt in ("svg", "png"):
        out = tmp_path / f"curves.{fmt}"
        figures.plot_study(study, histories, out)
        assert out.stat().st_size > 1000
    svg = (tmp_path / "curves.svg").read_text()
    assert "diverged (last finite value)" in svg and "costs $5, not $\\frac{" in svg


def test_a_one_epoch_curve_is_drawn_as_a_marker(tmp_path, monkeypatch):
    """A line through a single point is invisible: a one-epoch run must still show."""
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path, dpi=110: drawn.update(fig=fig))
    one = pd.DataFrame(
        {"epoch": [1], "loss": [0.9], "val_loss": [1.0], "accuracy": [0.6], "val_accuracy": [0.5]}
    )
    study = {
        "title": "one epoch",
        "task": "classification",
        "variants": [{"label": "baseline", "is_reference": True}],
    }
    figures.plot_study(study, {"baseline": [one]}, tmp_path / "curves.svg")
    for ax in drawn["fig"].axes[:4]:
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
        assert any(line.get_marker() not in (None, "", "None") for line in curves), ax.get_title()


def test_every_log_axis_says_so(tmp_path, monkeypatch):
    """Regression losses spanning decades put loss and MAE on log axes; each label says it."""
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path, dpi=110: drawn.update(fig=fig))
    e = pd.Series(range(1, 51), dtype=float)
    h = pd.DataFrame({"epoch": e, "loss": 1e4 / e, "val_loss": 1e4 / e, "mae": 100 / e})
    h["val_mae"] = h["mae"]
    study = {
        "title": "decades",
        "task": "regression",
        "variants": [{"label": "baseline", "is_reference": True}],
    }
    figures.plot_study(study, {"baseline": [h]}, tmp_path / "curves.svg")
    labels = [(ax.get_yscale(), ax.get_ylabel()) for ax in drawn["fig"].axes[:4]]
    assert labels[0] == ("log", "loss (MSE, log scale)")
    assert all(scale == "log" and label.endswith("log scale)") for scale, label in labels)


# --------------------------------------------------------------------------- concurrency


@pytest.mark.e2e
def test_every_job_writes_its_own_files(finished):
    """No two jobs declare the same output; training's undeclared files stay in its run dir."""
    proc = snakemake(finished, "-n", "-F")
    outputs = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip().startswith("output:"):
            outputs += [p.strip() for p in line.split(":", 1)[1].split(",")]
    assert len(outputs) > 8
    assert len(outputs) == len(set(outputs))
    assert sum(p.endswith("runs.csv") for p in outputs) == 1
    assert sum(p.endswith("report.html") for p in outputs) == 1
    source = (ROOT / "src" / "hpstudy" / "training.py").read_text()
    assert 'Checkpoint(run_dir / "backup"' in source  # one backup directory per run


@pytest.mark.e2e
def test_a_second_snakemake_on_the_same_directory_is_refused(finished, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(finished, work, symlinks=True)
    first = subprocess.Popen(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile",
         str(work / "config.yaml"), "--cores", "1", "--forceall"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any((work / ".snakemake" / "locks").glob("*")):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = snakemake(work, "--cores", "1", "--forcerun", "report", check=False)
        assert first.poll() is None, "the first run ended before the second was tried"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    assert "cannot be locked" in second.stderr + second.stdout


# --------------------------------------------------------------------------- no surprise reruns


def fresh_clone(dest: Path) -> Path:
    """The workflow's files with new modification times, as a `git clone` gives them."""
    dest.mkdir(parents=True)
    for part in ("Snakefile", "workflow", "src", "profiles"):
        src = ROOT / part
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        if src.is_dir():
            shutil.copytree(src, dest / part, copy_function=shutil.copy, ignore=ignore)
        else:
            shutil.copy(src, dest / part)
    return dest


@pytest.mark.e2e
def test_fresh_clone_with_copied_results_plans_nothing(finished, tmp_path):
    assert "Nothing to be done" in snakemake(finished, "-n").stdout
    clone = fresh_clone(tmp_path / "clone")
    time.sleep(0.01)  # the clone's files are newer than every result
    # Results and Snakemake's metadata copied as `cp -a` / `rsync -a` do: times kept.
    for part in ("results", ".snakemake", "resources", "config.yaml"):
        if (finished / part).is_dir():
            shutil.copytree(finished / part, clone / part, symlinks=True)
        elif (finished / part).exists():
            shutil.copy2(finished / part, clone / part)
    shutil.rmtree(clone / ".snakemake" / "locks", ignore_errors=True)
    snakefile = clone / "Snakefile"
    dry = snakemake(clone, "-n", snakefile=snakefile)
    assert planned_jobs(dry) == {}, dry.stdout
    assert "Nothing to be done" in dry.stdout

    # Every training job of the workflow, as a first dry run in an empty directory plans them.
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy2(finished / "config.yaml", empty / "config.yaml")
    every = training_jobs(snakemake(empty, "-n"))
    assert every, every
    # A touched script (or `git pull` of an unrelated change) retrains nothing either...
    for script in ("train.py", "train_repeats.py", "train_group.py"):
        os.utime(clone / "workflow" / "scripts" / script)
    assert planned_jobs(snakemake(clone, "-n", snakefile=snakefile)) == {}
    # ...which is the workflow profile's doing: Snakemake's default triggers would retrain.
    default = snakemake(clone, "-n", "--workflow-profile", "none", snakefile=snakefile)
    assert training_jobs(default) == every
    # A real change of the training code is declared by bumping TRAINING_VERSION: new ids.
    init = clone / "src" / "hpstudy" / "__init__.py"
    init.write_text(re.sub(r"TRAINING_VERSION = \d+", "TRAINING_VERSION = 999", init.read_text()))
    bumped = training_jobs(snakemake(clone, "-n", snakefile=snakefile))
    assert sum(bumped.values()) == sum(every.values())  # the same jobs, with new ids


def training_jobs(dry) -> dict:
    """A dry run's training jobs by rule (a group's rule name holds its members' ids)."""
    out: dict = {}
    for rule, n in planned_jobs(dry).items():
        if rule.startswith("train"):
            kind = re.sub(r"^train_group_\w+$", "train_group", rule)
            out[kind] = out.get(kind, 0) + n
    return out


def test_workflow_profile_drops_only_the_code_trigger():
    import yaml

    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert sorted(profile["rerun-triggers"]) == ["input", "mtime", "params", "software-env"]
    assert profile["rerun-incomplete"] is True
    assert not any("lock" in key for key in profile)  # Snakemake's lock stays on
