"""k-fold cross-validation: candidate ranking, the winner and the study tables.

No TensorFlow here. A cv study trains every candidate once per fold: fold i's model trains on the
training split without fold i and is validated on fold i (`prepare.fold_arrays` builds the
folds, from the training split only, the same for every candidate). The candidates are ranked
by the mean (± std) over folds of the validation metric at the end of training, as
scikit-learn's GridSearchCV scores the fitted model; the winner is refit on the whole training
split as run `r0` of its experiment and is the only model evaluated on the test split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis, statistics
from .io import atomic_path, atomic_write_text
from .stages import StudyInfo
from .tasks import GREATER_IS_BETTER, delta_range, metric_of


def score_column(task: str) -> str:
    """The metrics.json key a fold is scored by: the validation metric after the last epoch."""
    return f"final_val_{metric_of(task)}"


def rank(study: StudyInfo, metrics: dict) -> pd.DataFrame:
    """One row per candidate, best first, from `metrics[(label, fold)]` (each fold's metrics.json).

    A diverged fold scores NaN, so its candidate has no mean and ranks after every finite one.
    Ties on the mean go to the smaller std, then to the config order.
    """
    metric = metric_of(study["task"])
    higher = GREATER_IS_BETTER[metric]
    column = score_column(study["task"])
    k = study["cv"]
    rows = []
    for order, variant in enumerate(study["variants"]):
        scores, diverged = [], 0
        for run in variant["runs"]:
            m = metrics[(variant["label"], run["fold"])]
            ok = m.get("status") == "ok" and m.get(column) is not None
            diverged += m.get("status") == "diverged"
            scores.append(float(m[column]) if ok else math.nan)
        values = np.asarray(scores, dtype=float)
        finite = bool(np.isfinite(values).all())
        row = {"candidate": variant["label"], "experiment": variant["experiment"]}
        for path in study["varied"]:
            row[path] = analysis.shown_value(path, variant["values"].get(path), m)
        row.update(
            {
                "folds": k,
                f"val_{metric}_mean": float(values.mean()) if finite else math.nan,
                f"val_{metric}_std": float(values.std(ddof=1)) if finite and k > 1 else math.nan,
                **{f"fold_{i}_val_{metric}": values[i] for i in range(len(values))},
                "diverged_folds": diverged,
                "_order": order,
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    mean = table[f"val_{metric}_mean"]
    table["_key"] = -mean if higher else mean
    table = table.sort_values(
        ["_key", f"val_{metric}_std", "_order"], na_position="last", kind="stable"
    )
    table = table.drop(columns=["_key", "_order"]).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    table["is_winner"] = False
    if np.isfinite(table.loc[0, f"val_{metric}_mean"]):
        table.loc[0, "is_winner"] = True
    return pd.concat([table, against_winner(table, metric, higher, k)], axis=1)


def against_winner(table: pd.DataFrame, metric: str, higher: bool, k: int) -> pd.DataFrame:
    """Each candidate's fold scores against the winner's, paired by fold, one row per candidate.

    The corrected paired t-test of Nadeau and Bengio (`statistics.compare_folds`), Holm-adjusted
    over the candidates; `vs_winner` is "winner", "tied with the winner" (no detectable
    difference: the data do not separate them) or "worse than the winner".
    """
    folds = [f"fold_{i}_val_{metric}" for i in range(k)]
    out = pd.DataFrame(
        index=table.index, columns=["vs_winner", "vs_winner_delta", "vs_winner_p_adjusted"]
    )
    if not table["is_winner"].any():
        return out
    best = table.loc[0, folds].to_numpy(float)
    others = list(table.index[1:])
    compared = [
        statistics.compare_folds(table.loc[i, folds].to_numpy(float), best, higher, k=k)
        for i in others
    ]
    adjusted = (
        statistics.adjust(compared, higher, delta_range=delta_range(metric)) if compared else []
    )
    out.loc[0, "vs_winner"] = "winner"
    for i, c in zip(others, adjusted):
        out.loc[i, "vs_winner_delta"] = c.delta_mean
        out.loc[i, "vs_winner_p_adjusted"] = c.p_adjusted
        tied = c.verdict in ("no detectable difference", "single run")
        if not np.isfinite(table.loc[i, f"val_{metric}_mean"]):
            out.loc[i, "vs_winner"] = "no score (a fold diverged)"
        else:
            out.loc[i, "vs_winner"] = "tied with the winner" if tied else "worse than the winner"
    return out


def winner(study: StudyInfo, ranking: pd.DataFrame) -> dict:
    """The winning candidate, and the run that refits it: `r0` of its experiment."""
    metric = metric_of(study["task"])
    if not ranking["is_winner"].any():
        raise RuntimeError(
            f"Study {study['name']!r}: every candidate has a diverged or missing fold, so none "
            f"can be chosen. Expected at least one candidate with a finite final_val_{metric} "
            "in every fold: see the fold runs' train.log and cv_ranking.csv."
        )
    best = ranking.iloc[0]
    return {
        "study": study["name"],
        "candidate": best["candidate"],
        "experiment": best["experiment"],
        "metric": f"val_{metric}",
        "greater_is_better": GREATER_IS_BETTER[metric],
        "mean": float(best[f"val_{metric}_mean"]),
        "std": float(best[f"val_{metric}_std"]),
        "folds": int(study["cv"]),
        "refit_run": "r0",
        "refit_dir": f"results/runs/{best['experiment']}/r0",
    }


def select(study: StudyInfo, ranking_path: str | Path, winner_path: str | Path) -> dict:
    """Rank a cv study's candidates from their fold runs; write cv_ranking.csv and the winner."""
    metrics = {
        (v["label"], r["fold"]): analysis.read_metrics(Path(r["dir"]) / "metrics.json")
        for v in study["variants"]
        for r in v["runs"]
    }
    ranking = rank(study, metrics)
    with atomic_path(ranking_path) as tmp:
        ranking.to_csv(tmp, index=False)
    chosen = winner(study, ranking)
    atomic_write_text(winner_path, json.dumps(chosen, indent=2, sort_keys=True) + "\n")
    return chosen


def study_tables(study: StudyInfo, winner_path: str | Path, out_dir: str | Path) -> tuple:
    """runs.csv (one row per candidate x fold, then the refit, flagged) and summary.csv.

    The summary has one row per candidate, over its folds; its `is_best` is the CV winner.
    """
    chosen = json.loads(Path(winner_path).read_text(encoding="utf-8"))
    folds = analysis.runs_table(study, out_dir)
    folds.insert(folds.columns.get_loc("run") + 1, "fold", [r["fold"] for r in _runs(study)])
    folds.insert(folds.columns.get_loc("is_reference") + 1, "is_refit", False)
    summary = analysis.summary_table(folds, study)
    summary["is_best"] = summary["experiment"] == chosen["experiment"]
    variant = next(v for v in study["variants"] if v["experiment"] == chosen["experiment"])
    refit_dir = Path(chosen["refit_dir"])
    seed = analysis.read_metrics(refit_dir / "metrics.json")["seed"]
    run = {"run": chosen["refit_run"], "repeat": 0, "seed": seed, "dir": str(refit_dir)}
    run["split_seed"] = variant["runs"][0].get("split_seed")  # r0: the folds' data split
    refit = analysis.runs_table(dict(study, variants=[dict(variant, runs=[run])]), out_dir)
    refit.insert(refit.columns.get_loc("run") + 1, "fold", None)
    refit.insert(refit.columns.get_loc("is_reference") + 1, "is_refit", True)
    return pd.concat([folds, refit], ignore_index=True), summary


def _runs(study: StudyInfo) -> list:
    return [run for variant in study["variants"] for run in variant["runs"]]
