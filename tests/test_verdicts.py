"""Verdicts in the study tables: recomputed independently, "best" only when detectably better,
CV candidates tied with the winner, observations stated only when most repeats agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from hpstudy import analysis, cv, observations


def study_of(labels, task="classification"):
    variants = [
        {"label": lab, "experiment": f"e{i}", "is_reference": i == 0, "values": {}, "runs": []}
        for i, lab in enumerate(labels)
    ]
    return {"name": "s", "task": task, "varied": [], "variants": variants}


def runs_of(scores: dict, metric="accuracy") -> pd.DataFrame:
    rows = []
    for label, values in scores.items():
        for r, v in enumerate(values):
            rows.append(
                {"variant": label, "run": f"r{r}", "status": "ok", f"best_val_{metric}": v,
                 f"test_{metric}": v - 0.01, "best_epoch": 5, "final_train_val_gap": 0.1,
                 "seconds_per_epoch": 0.01, "params": 10}
            )  # fmt: skip
    return pd.DataFrame(rows)


SCORES = {
    "baseline": [0.900, 0.905, 0.895, 0.902, 0.898],
    "much better": [0.950, 0.955, 0.948, 0.952, 0.951],
    "noisy higher": [0.880, 0.940, 0.905, 0.930, 0.890],
    "worse": [0.850, 0.855, 0.848, 0.851, 0.853],
}


def test_summary_verdicts_recomputed_from_the_runs_with_scipy_and_statsmodels():
    summary = analysis.summary_table(runs_of(SCORES), study_of(list(SCORES)))
    base = SCORES["baseline"]
    others = [k for k in SCORES if k != "baseline"]
    tests = [stats.ttest_ind(SCORES[k], base, equal_var=False) for k in others]
    adjusted = multipletests([t.pvalue for t in tests], method="holm")[1]
    rows = summary.set_index("variant")
    for k, t, p_adj in zip(others, tests, adjusted):
        ci = t.confidence_interval(0.95)
        assert rows.loc[k, "delta_mean"] == pytest.approx(np.mean(SCORES[k]) - np.mean(base))
        assert rows.loc[k, "delta_ci_low"] == pytest.approx(ci.low)
        assert rows.loc[k, "delta_ci_high"] == pytest.approx(ci.high)
        assert rows.loc[k, "p_value"] == pytest.approx(t.pvalue)
        assert rows.loc[k, "p_adjusted"] == pytest.approx(p_adj)
        expected = "no detectable difference"
        if p_adj < 0.05:
            expected = "better" if np.mean(SCORES[k]) > np.mean(base) else "worse"
        assert rows.loc[k, "verdict"] == expected
    assert rows.loc["much better", "verdict"] == "better"
    assert rows.loc["worse", "verdict"] == "worse"
    assert rows.loc["noisy higher", "verdict"] == "no detectable difference"
    assert rows.loc["noisy higher", "seeds_needed"] > 5
    assert pd.isna(rows.loc["baseline", "verdict"])
    assert list(summary.loc[summary["is_best"], "variant"]) == ["much better"]


def test_no_best_when_the_highest_mean_is_within_the_noise():
    scores = {k: SCORES[k] for k in ("baseline", "noisy higher")}
    summary = analysis.summary_table(runs_of(scores), study_of(list(scores)))
    assert not summary["is_best"].any()


def test_a_single_run_gets_no_verdict_and_no_best():
    scores = {"baseline": [0.90], "higher": [0.99]}
    summary = analysis.summary_table(runs_of(scores), study_of(list(scores)))
    assert summary.set_index("variant").loc["higher", "verdict"] == "single run"
    assert not summary["is_best"].any()


def test_lower_is_better_for_mae():
    scores = {"baseline": [50.0, 51.0, 49.5, 50.5], "lower": [40.0, 40.5, 39.8, 40.2]}
    summary = analysis.summary_table(runs_of(scores, "mae"), study_of(list(scores), "regression"))
    row = summary.set_index("variant").loc["lower"]
    assert row["delta_mean"] < 0 and row["verdict"] == "better" and row["is_best"]


def test_cv_candidates_statistically_tied_with_the_winner():
    study = {"name": "c", "task": "classification", "cv": 4, "varied": [], "variants": [
        {"label": lab, "experiment": lab, "values": {}, "is_reference": False,
         "runs": [{"run": f"f{i}of4", "fold": i} for i in range(4)]}
        for lab in ("a", "b", "c")]}  # fmt: skip
    folds = {"a": [0.90, 0.91, 0.92, 0.905], "b": [0.899, 0.912, 0.918, 0.904],
             "c": [0.60, 0.61, 0.62, 0.605]}  # fmt: skip
    metrics = {
        (lab, i): {"status": "ok", "final_val_accuracy": v}
        for lab, values in folds.items()
        for i, v in enumerate(values)
    }
    ranking = cv.rank(study, metrics).set_index("candidate")
    assert ranking.loc["a", "vs_winner"] == "winner"
    assert ranking.loc["b", "vs_winner"] == "tied with the winner"
    assert ranking.loc["c", "vs_winner"] == "worse than the winner"


def history(epochs: int, minimum: int | None, seed: int) -> pd.DataFrame:
    """A val loss falling to `minimum` then rising by 40% (overfitting), or falling throughout."""
    e = np.arange(1, epochs + 1)
    rng = np.random.default_rng(seed)
    if minimum is None:
        val = 1.0 / e
    else:
        val = np.where(
            e <= minimum, 1.0 - 0.5 * e / minimum, 0.5 + 0.4 * (e - minimum) / (epochs - minimum)
        )
    val = val + rng.normal(0, 1e-4, epochs)
    return pd.DataFrame({"epoch": e, "loss": val * 0.5, "val_loss": val, "val_accuracy": 1 - val,
                         "accuracy": 1 - val / 2})  # fmt: skip


def test_overfitting_is_stated_with_its_repeat_count_only_when_most_repeats_show_it():
    study = study_of(["baseline"])
    most = [history(100, 40, 0), history(100, 45, 1), history(100, None, 2)]
    notes = observations.observe(study, {"baseline": most})
    text = next(o.text for o in notes if o.rule == "overfitting")
    assert "in 2 of 3 repeats" in text and "epochs 40–45" in text
    few = [history(100, 40, 0), history(100, None, 1), history(100, None, 2)]
    assert not [
        o for o in observations.observe(study, {"baseline": few}) if o.rule == "overfitting"
    ]
