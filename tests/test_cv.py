"""Cross-validation: fold runs in the plan, fold construction, ranking, and a real snakemake run."""

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import plan_of, planned_jobs, run_snakemake

from hpstudy import cv, prepare
from hpstudy.config import ConfigError
from hpstudy.ids import derive_seed, parse_run

BASE = {
    "datasets": {"d": {"source": "digits"}},
    "baselines": {
        "b": {
            "dataset": "d",
            "model": {"hidden": [16]},
            "optimizer": {"name": "sgd", "learning_rate": 0.05},
            "training": {"epochs": 3, "batch_size": 32, "seed": 7},
        }
    },
    "studies": {
        "select": {
            "kind": "cv",
            "baseline": "b",
            "cv": 3,
            "grid": {"model.hidden": [[8], [16]], "optimizer.learning_rate": [0.01, 0.1]},
        }
    },
}


# Planning ------------------------------------------------------------------------------------


def test_every_candidate_trains_once_per_fold():
    plan = plan_of(BASE)
    study = plan.studies["select"]
    assert study.cv == 3 and len(study.variants) == 4
    assert len(plan.runs) == 4 * 3  # no repeat runs: the winner's refit is planned by the graph
    for variant in study.variants:
        runs = study.runs[variant.label]
        assert [r.name for r in runs] == ["f0of3", "f1of3", "f2of3"]
        assert [r.seed for r in runs] == [derive_seed(7, "fold", i) for i in range(3)]
        assert all(r.kind == "fold" and r.repeat is None for r in runs)
        assert runs[1].dir == f"results/runs/{variant.experiment}/f1of3"
    described = study.describe()
    assert described["cv"] == 3
    assert described["variants"][0]["runs"][2] | {"seed": 0} == {
        "run": "f2of3",
        "repeat": None,
        "seed": 0,
        "split_seed": 42,  # the data split's: folds come from its training rows
        "dir": f"results/runs/{study.variants[0].experiment}/f2of3",
        "fold": 2,
        "folds": 3,
    }


def test_the_refit_is_run_r0_of_the_winning_experiment():
    plan = plan_of(BASE)
    exp = plan.studies["select"].variants[2].experiment
    refit = plan.find_run(exp, "r0")
    assert (refit.name, refit.repeat, refit.seed, refit.fold) == ("r0", 0, 7, None)
    assert refit.dir == f"results/runs/{exp}/r0"
    assert parse_run("f1of5") == {"fold": 1, "folds": 5} and parse_run("r2") == {"repeat": 2}
    for bad in ("f5of5", "x1", "f1"):
        with pytest.raises(ValueError, match="r<repeat> or f<fold>of<k>"):
            parse_run(bad)


def test_candidates_from_reference_factors_variants_and_grid():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["select"].update(
        reference=True,
        grid={"model.hidden": [[8]]},
        factors={"optimizer.name": ["adam"]},
        variants=[{"label": "wide", "set": {"model.hidden": [64]}}],
    )
    labels = [v.label for v in plan_of(cfg).studies["select"].variants]
    assert labels == ["baseline", "name=adam", "wide", "hidden=[8]"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"cv": 1}, r"studies\.select\.cv`: expected a number >= 2"),
        ({"cv": None}, r"studies\.select`: expected the keys cv"),
        ({"repeats": 2}, "no repeats in a cv study"),
        ({"grid": {"model.hidden": [[8]]}}, "at least 2 distinct candidates"),
    ],
)
def test_invalid_cv_studies_are_rejected(change, message):
    cfg = copy.deepcopy(BASE)
    for key, value in change.items():
        if value is None:
            cfg["studies"]["select"].pop(key)
        else:
            cfg["studies"]["select"][key] = value
    with pytest.raises(ConfigError, match=message):
        plan_of(cfg)


def test_cv_only_in_a_cv_study():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["select"]["kind"] = "grid"
    with pytest.raises(ConfigError, match="`cv` only in a study of kind cv"):
        plan_of(cfg)


# Folds -----------------------------------------------------------------------------------------


def prepared(n=120, classes=3, scaler="none"):
    """A prepared split whose feature 0 is the row's id (train 0.., val 1000.., test 2000..)."""
    rng = np.random.default_rng(0)
    out = {}
    for part, base, size in (("train", 0, n), ("val", 1000, 30), ("test", 2000, 30)):
        ids = np.arange(base, base + size, dtype=np.float32)
        out[f"x_{part}"] = np.stack([ids, rng.normal(size=size).astype(np.float32)], axis=1)
        out[f"y_{part}"] = np.resize(np.arange(classes), size).astype(np.int64)
    out["scaler_shift"] = np.zeros(2, np.float32)
    out["scaler_scale"] = np.ones(2, np.float32)
    data = {
        "task": "classification",
        "split": {"seed": 42, "stratify": True},
        "scaler": {"kind": scaler},
    }
    return out, data


def test_folds_are_disjoint_cover_the_training_split_and_are_stratified():
    y = np.array([0] * 60 + [1] * 30 + [2] * 15)
    folds = prepare.fold_indices(y, 3, seed=1, stratify=True)
    together = np.concatenate(folds)
    assert sorted(together) == list(range(len(y)))  # every row once
    for held in folds:
        assert np.bincount(y[held]).tolist() == [20, 10, 5]  # the class proportions of y
    again = prepare.fold_indices(y, 3, seed=1, stratify=True)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))  # seeded
    other = prepare.fold_indices(y, 3, seed=2, stratify=True)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))


def test_fold_arrays_use_the_training_split_only():
    arrays, data = prepared()
    seen_val = []
    for fold in range(4):
        out = prepare.fold_arrays(arrays, data, k=4, fold=fold)
        assert set(out) == {"x_train", "y_train", "x_val", "y_val"}  # no test rows
        train_ids, val_ids = out["x_train"][:, 0], out["x_val"][:, 0]
        assert train_ids.max() < 1000 and val_ids.max() < 1000  # neither val nor test rows
        assert not set(train_ids) & set(val_ids)
        assert sorted([*train_ids, *val_ids]) == list(range(120))
        assert np.array_equal(out["y_val"], arrays["y_train"][val_ids.astype(int)])
        seen_val.extend(val_ids)
    assert sorted(seen_val) == list(range(120))  # fold i validates on fold i, each row once


def test_a_fitted_scaler_is_refit_on_the_fold_training_rows():
    arrays, data = prepared(scaler="standard")
    raw_train = arrays["x_train"].copy()
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    arrays["x_train"] = (raw_train - mean) / std  # as the prepare step left it
    arrays["scaler_shift"], arrays["scaler_scale"] = mean, std
    out = prepare.fold_arrays(arrays, data, k=3, fold=0)
    assert np.allclose(out["x_train"].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(out["x_train"].std(axis=0), 1, atol=1e-4)
    held = prepare.fold_indices(arrays["y_train"], 3, 42, True)[0]
    fold_mean = np.delete(raw_train, held, axis=0).mean(axis=0)
    fold_std = np.delete(raw_train, held, axis=0).std(axis=0)
    assert np.allclose(out["x_val"], (raw_train[held] - fold_mean) / fold_std, atol=1e-4)


# Ranking ---------------------------------------------------------------------------------------


def study_of(task, labels, k=2):
    return {
        "name": "s",
        "task": task,
        "cv": k,
        "varied": [],
        "variants": [
            {
                "label": label,
                "experiment": f"e{i}",
                "values": {},
                "runs": [{"fold": f} for f in range(k)],
            }
            for i, label in enumerate(labels)
        ],
    }


def fold_metrics(column, scores, status="ok"):
    return {column: scores, "status": status}


def test_classification_ranks_by_mean_accuracy_higher_first():
    study = study_of("classification", ["a", "b", "c"])
    scores = {"a": [0.8, 0.9], "b": [0.95, 0.93], "c": [0.5, 0.6]}
    metrics = {
        (label, f): {"final_val_accuracy": s[f], "status": "ok"}
        for label, s in scores.items()
        for f in range(2)
    }
    ranking = cv.rank(study, metrics)
    assert ranking["candidate"].tolist() == ["b", "a", "c"]
    assert ranking["rank"].tolist() == [1, 2, 3]
    assert ranking["is_winner"].tolist() == [True, False, False]
    assert ranking.loc[0, "val_accuracy_mean"] == pytest.approx(0.94)
    assert ranking.loc[0, "val_accuracy_std"] == pytest.approx(np.std([0.95, 0.93], ddof=1))
    assert ranking.loc[1, "fold_1_val_accuracy"] == pytest.approx(0.9)
    chosen = cv.winner(study, ranking)
    assert (chosen["candidate"], chosen["experiment"], chosen["refit_dir"]) == (
        "b",
        "e1",
        "results/runs/e1/r0",
    )


def test_regression_ranks_by_mean_mae_lower_first_and_diverged_last():
    study = study_of("regression", ["a", "b", "c", "d"])
    scores = {"a": [3.0, 3.2], "b": [2.0, 2.6], "c": [1.0, None], "d": [2.1, 2.5]}
    metrics = {}
    for label, s in scores.items():
        for f in range(2):
            status = "diverged" if s[f] is None else "ok"
            metrics[(label, f)] = {"final_val_mae": s[f], "status": status}
    ranking = cv.rank(study, metrics)
    # b and d tie on the mean (2.3): the smaller std wins; c diverged in a fold: last
    assert ranking["candidate"].tolist() == ["d", "b", "a", "c"]
    assert math.isnan(ranking.loc[3, "val_mae_mean"])
    assert ranking.loc[3, "diverged_folds"] == 1
    assert ranking["is_winner"].tolist() == [True, False, False, False]


def test_no_winner_when_every_candidate_diverged():
    study = study_of("regression", ["a", "b"])
    metrics = {(x, f): {"final_val_mae": None, "status": "diverged"} for x in "ab" for f in (0, 1)}
    ranking = cv.rank(study, metrics)
    assert not ranking["is_winner"].any()
    with pytest.raises(RuntimeError, match="none can be chosen"):
        cv.winner(study, ranking)


# A real snakemake run ----------------------------------------------------------------------------

E2E = """\
title: Tiny CV and LR range
datasets:
  d: {source: digits, subsample: 160}
baselines:
  b:
    dataset: d
    model: {hidden: [16]}
    optimizer: {name: sgd, learning_rate: 0.05, momentum: 0.5}
    training: {epochs: 2, batch_size: 32}
studies:
  range:
    kind: lr_range
    baseline: b
    title: LR range test of b
    lr_range: {min_lr: 1.0e-4, max_lr: 10.0, iterations: 20, smoothing: 0.7}
  select:
    kind: cv
    baseline: b
    cv: 2
    title: Hidden layer size by 2-fold CV
    set: {optimizer.learning_rate: "lr_range:b"}
    grid:
      model.hidden: [[8], [16]]
"""


def dry_run(workdir: Path, config: str) -> tuple[dict, str]:
    """Jobs per rule of a dry run, and its text."""
    out = run_snakemake(workdir, "-n", config=config)
    text = out.stdout + out.stderr
    return planned_jobs(text), text


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cv_e2e")
    (workdir / "cfg.yaml").write_text(E2E)
    counts, text = dry_run(workdir, "cfg.yaml")
    # 2 candidates x 2 folds; the refit is added once the selection checkpoint has run
    assert counts["train"] == 4 and counts["select_cv"] == 1 and counts["lr_range"] == 1
    # the fold runs take their learning rate from the range test: it comes first in the graph
    (test,) = re.findall(r"results/lr_range/([0-9a-f]{10})/suggestion\.json", text)[:1]
    train_inputs = re.findall(r"rule train:\n\s+input: ([^\n]+)", text)
    assert len(train_inputs) == 4
    assert all(f"results/lr_range/{test}/suggestion.json" in line for line in train_inputs)
    run_snakemake(workdir, "--cores", "2", config="cfg.yaml")
    return workdir, test


@pytest.mark.e2e
def test_e2e_ranking_refit_and_runs_table(finished):
    workdir, _ = finished
    study_dir = workdir / "results/studies/select"
    ranking = pd.read_csv(study_dir / "cv_ranking.csv")
    assert len(ranking) == 2 and ranking["is_winner"].tolist() == [True, False]
    assert {"fold_0_val_accuracy", "fold_1_val_accuracy", "val_accuracy_mean"} <= set(ranking)
    winner = json.loads((study_dir / "cv_winner.json").read_text())
    assert winner["experiment"] == ranking.loc[0, "experiment"]
    refit = json.loads((workdir / winner["refit_dir"] / "metrics.json").read_text())
    assert refit["run"] == "r0" and refit["fold"] is None
    assert refit["test_accuracy"] is not None  # the refit, and only it, is evaluated on test
    runs = pd.read_csv(study_dir / "runs.csv")
    assert len(runs) == 5 and runs["is_refit"].tolist() == [False] * 4 + [True]
    folds = runs[~runs["is_refit"]]
    assert sorted(folds["run"]) == ["f0of2", "f0of2", "f1of2", "f1of2"]
    assert folds["test_accuracy"].isna().all()
    first = folds.iloc[0]
    fold_metrics = json.loads((study_dir / first["metrics"]).read_text())
    assert fold_metrics["fold"] == {"index": int(first["fold"]), "of": 2}
    assert not any(key.startswith("test_") for key in fold_metrics)
    row = runs[runs["is_refit"]].iloc[0]
    assert row["experiment"] == winner["experiment"] and row["run"] == "r0"


@pytest.mark.e2e
def test_e2e_learning_rate_comes_from_the_range_test(finished):
    workdir, test = finished
    curve = pd.read_csv(workdir / f"results/lr_range/{test}/lr_range.csv")
    assert list(curve.columns) == ["lr", "loss", "smoothed_loss"]
    assert curve["lr"].iloc[0] == pytest.approx(1e-4)
    assert np.allclose(np.diff(np.log(curve["lr"])), math.log(1e5) / 19)  # one factor per batch
    suggestion = json.loads((workdir / f"results/lr_range/{test}/suggestion.json").read_text())
    assert suggestion["iterations_run"] == len(curve) <= 20
    run_dir = next((workdir / "results/runs").glob("*/f0of2"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["learning_rate"]["source"] == f"lr_range:b@{test}"
    assert metrics["learning_rate"]["value"] == pytest.approx(suggestion["suggested_lr"])
    history = pd.read_csv(run_dir / "history.csv")
    assert history["learning_rate"].iloc[0] == pytest.approx(suggestion["suggested_lr"], rel=1e-6)
    assert (workdir / f"results/lr_range/{test}/lr_range.svg").stat().st_size > 0
    lr_runs = pd.read_csv(workdir / "results/studies/range/runs.csv")
    assert lr_runs.loc[0, "experiment"] == test
    assert lr_runs.loc[0, "suggested_lr"] == pytest.approx(suggestion["suggested_lr"])


@pytest.mark.e2e
def test_e2e_report_has_the_cv_and_lr_range_views(finished):
    workdir, test = finished
    html = (workdir / "results/report.html").read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    winner = json.loads((workdir / "results/studies/select/cv_winner.json").read_text())
    refit = json.loads((workdir / winner["refit_dir"] / "metrics.json").read_text())
    assert "Cross-validation: 2 folds, candidates ranked" in text
    assert f"Refit of the winner {winner['candidate']}" in text
    assert f"test accuracy {refit['test_accuracy']:.4g}" in text
    suggestion = json.loads((workdir / f"results/lr_range/{test}/suggestion.json").read_text())
    assert f"Suggested learning rate: {suggestion['suggested_lr']:.3g}" in text
    assert 'id="lr-range-range"' in html and "LR range test of b" in text
    assert 'lr_range:b"' in html  # where the fold runs' learning rate came from


@pytest.mark.e2e
def test_e2e_adding_a_candidate_trains_only_its_folds(finished):
    workdir, _ = finished
    counts, _ = dry_run(workdir, "cfg.yaml")
    assert "train" not in counts  # everything is done
    bigger = E2E.replace("model.hidden: [[8], [16]]", "model.hidden: [[8], [16], [4]]")
    (workdir / "cfg_more.yaml").write_text(bigger)
    counts, text = dry_run(workdir, "cfg_more.yaml")
    assert counts["train"] == 2 and counts["select_cv"] == 1 and "lr_range" not in counts
    new = set(re.findall(r"output: results/runs/([0-9a-f]{10})/(f[01]of2)/history\.csv", text))
    done = {p.parent.name for p in (workdir / "results/runs").glob("*/f0of2")}
    assert len(new) == 2 and len({exp for exp, _ in new}) == 1
    assert not {exp for exp, _ in new} & done
