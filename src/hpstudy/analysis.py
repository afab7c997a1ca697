"""Aggregate the runs of a study: one row per run (runs.csv), one per variant (summary.csv).

No TensorFlow here: everything is read back from each run's history.csv and metrics.json.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from . import statistics
from .ids import format_value
from .plan import response_points
from .stages import StudyInfo
from .tasks import EXTRA_TEST, GREATER_IS_BETTER, delta_range, metric_of


def read_metrics(path: str | Path) -> dict:
    """A run's metrics.json."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def shown_value(path: str, value, metrics: dict) -> str:
    """A varied value as the tables show it; a range test's learning rate with the value it gave.

    "lr_range:b@<id>" becomes "0.0123 (lr_range:b)": the number the run trained with, which
    its metrics.json records, and where it came from.
    """
    if (
        path == "optimizer.learning_rate"
        and isinstance(value, str)
        and value.startswith("lr_range:")
    ):
        used = (metrics.get("learning_rate") or {}).get("value")
        if used is not None:
            return f"{format_value(used)} ({value.split('@', 1)[0]})"
    return format_value(value)


def runs_table(study: StudyInfo, out_dir: str | Path) -> pd.DataFrame:
    """One row per run of the study, with its variant, varied values, key metrics and file paths.

    Paths to history.csv and metrics.json are relative to `out_dir` (where runs.csv lives).
    """
    metric = metric_of(study["task"])
    rows = []
    for variant in study["variants"]:
        for run in variant["runs"]:
            run_dir = Path(run["dir"])
            m = read_metrics(run_dir / "metrics.json")
            row = {
                "study": study["name"],
                "variant": variant["label"],
                "is_reference": variant["is_reference"],
                "experiment": variant["experiment"],
                "run": run["run"],
                "repeat": run["repeat"],
                "seed": run["seed"],
                "split_seed": run.get("split_seed"),
                "status": m["status"],
                "diverged_epoch": m.get("diverged_epoch"),
                # A user file's class labels (output order), for the report; None if built in.
                "classes": "; ".join(map(str, m["class_names"])) if m.get("class_names") else None,
            }
            for path in study["varied"]:
                row[path] = shown_value(path, variant["values"].get(path), m)
            row.update(
                {
                    "epochs_run": m["epochs_run"],
                    # training.early_stopping: the epoch it stopped at (None: ran to the end)
                    "stopped_epoch": m.get("stopped_epoch"),
                    "best_epoch": m.get("best_epoch"),
                    "best_val_loss": m.get("best_val_loss"),
                    f"best_val_{metric}": m.get(f"best_val_{metric}"),
                    f"final_val_{metric}": m.get(f"final_val_{metric}"),
                    "final_train_val_gap": m.get("final_train_val_gap"),
                    "test_loss": m.get("test_loss"),
                    f"test_{metric}": m.get(f"test_{metric}"),
                    **{f"test_{k}": m.get(f"test_{k}") for k in EXTRA_TEST[study["task"]]},
                    "seconds_per_epoch": m["timing"]["seconds_per_epoch"],
                    "wall_seconds": m["timing"]["wall_seconds"],
                    "params": m["params"],
                    "device": m["host"].get("device"),
                    "host": m["host"].get("host"),
                    "python": m["host"].get("python"),
                    "tensorflow": m["host"].get("tensorflow"),
                    "keras": m["host"].get("keras"),
                    "keras_backend": m["host"].get("keras_backend"),
                    "history": os.path.relpath(run_dir / "history.csv", out_dir),
                    "metrics": os.path.relpath(run_dir / "metrics.json", out_dir),
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> tuple[float, float]:
    finite = pd.to_numeric(values, errors="coerce").dropna()
    if finite.empty:
        return math.nan, math.nan
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return float(finite.mean()), std


def summary_table(runs: pd.DataFrame, study: StudyInfo) -> pd.DataFrame:
    """One row per variant: mean ± std over repeats, difference from the reference, best marked."""
    metric = metric_of(study["task"])
    better_high = GREATER_IS_BETTER[metric]
    rows = []
    for variant in study["variants"]:
        sub = runs[runs["variant"] == variant["label"]]
        best_mean, best_std = _mean_std(sub[f"best_val_{metric}"])
        test_mean, test_std = _mean_std(sub[f"test_{metric}"])
        row = {
            "variant": variant["label"],
            "is_reference": variant["is_reference"],
            "experiment": variant["experiment"],
        }
        for path in study["varied"]:
            # As the runs show it: a learning rate taken from a range test is known only there.
            row[path] = sub[path].iloc[0] if len(sub) else format_value(variant["values"].get(path))
        row.update(
            {
                "runs": len(sub),
                "diverged": int((sub["status"] == "diverged").sum()),
                f"best_val_{metric}_mean": best_mean,
                f"best_val_{metric}_std": best_std,
                "best_epoch_mean": _mean_std(sub["best_epoch"])[0],
                "final_train_val_gap_mean": _mean_std(sub["final_train_val_gap"])[0],
                f"test_{metric}_mean": test_mean,
                f"test_{metric}_std": test_std,
                "seconds_per_epoch": _mean_std(sub["seconds_per_epoch"])[0],
                "params": int(sub["params"].iloc[0]) if len(sub) else 0,
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    col = f"best_val_{metric}_mean"
    ref = table[table["is_reference"]]
    ref_value = float(ref[col].iloc[0]) if len(ref) else math.nan
    table["delta_vs_reference"] = table[col] - ref_value
    for prefix, score in (("", f"best_val_{metric}"), ("test_", f"test_{metric}")):
        verdicts = compare_with_reference(runs, study, score, prefix)
        table = pd.concat([table, verdicts], axis=1)
    table["is_best"] = best_of(table, better_high)
    return table


def compare_with_reference(runs: pd.DataFrame, study: StudyInfo, score: str, prefix: str = ""):
    """Each variant's runs against the reference's on `score`: difference, CI, tests, verdict.

    One row per variant of `study` (the reference's row, and every row of a study without a
    reference, is empty). The variants of a study are one family for Holm's adjustment. The
    columns are those of `statistics.Comparison.as_dict(prefix)`; see `statistics` for the methods.
    """
    higher = GREATER_IS_BETTER[metric_of(study["task"])]
    labels = [v["label"] for v in study["variants"]]
    ref = next((v["label"] for v in study["variants"] if v["is_reference"]), None)

    def scores(label):
        return pd.to_numeric(runs.loc[runs["variant"] == label, score], errors="coerce").to_numpy()

    others = [label for label in labels if label != ref]
    found = {}
    if ref is not None and others:
        compared = [statistics.compare_runs(scores(o), scores(ref), higher) for o in others]
        found = dict(
            zip(
                others,
                statistics.adjust(
                    compared, higher, delta_range=delta_range(metric_of(study["task"]))
                ),
            )
        )
    columns = list(statistics.Comparison.fields(prefix))
    rows = [found[label].as_dict(prefix) if label in found else {} for label in labels]
    table = pd.DataFrame(rows, columns=columns)
    for key in ("seeds_needed", "n_variant", "n_baseline"):  # counts, not floats, in the CSV
        table[prefix + key] = pd.to_numeric(table[prefix + key]).astype("Int64")
    return table


def best_of(table: pd.DataFrame, higher: bool) -> pd.Series:
    """The "best" flag: the variant with the best mean among those whose verdict is `better`.

    No variant is best when none beats the reference detectably: a point estimate is no verdict.
    """
    flag = pd.Series(False, index=table.index)
    if "verdict" not in table:
        return flag
    better = table[table["verdict"] == "better"]
    col = next(c for c in table.columns if c.startswith("best_val_") and c.endswith("_mean"))
    if len(better):
        flag[better[col].idxmax() if higher else better[col].idxmin()] = True
    return flag


def effects_table(studies: list[StudyInfo], summaries: list[pd.DataFrame]) -> pd.DataFrame:
    """Across studies: each variant's best validation metric against its study's reference.

    One row per variant (reference included), in study order: `delta` is the variant's mean best
    val metric minus the reference's, with its 95% CI (`delta_ci_low`, `delta_ci_high`), Holm-
    adjusted p-value, P(variant run beats a baseline run) and verdict from `summary_table`;
    `better` says whether the point estimate is an improvement (not a verdict), `rank` orders a
    study's variants from best (1) to worst by their means.
    """
    frames = []
    for study, summary in zip(studies, summaries):
        metric = metric_of(study["task"])
        higher = GREATER_IS_BETTER[metric]
        col = f"best_val_{metric}_mean"
        ref = summary[summary["is_reference"].astype(bool)]
        ref_value = float(ref[col].iloc[0]) if len(ref) else math.nan
        frame = pd.DataFrame(
            {
                "study": study["name"],
                "slug": study["slug"],
                "title": study["title"],
                "metric": metric,
                "higher_is_better": higher,
                "variant": summary["variant"],
                "is_reference": summary["is_reference"].astype(bool),
                "diverged": summary["diverged"],
                "runs": summary["runs"],
                "best_val": summary[col],
                "reference_best_val": ref_value,
                **{
                    k: summary.get(k)
                    for k in (
                        "delta_ci_low",
                        "delta_ci_high",
                        "delta_ci_low_adjusted",
                        "delta_ci_high_adjusted",
                        "p_adjusted",
                        "prob_better",
                        "verdict",
                        "seeds_needed",
                    )
                },
            }
        )
        frame["delta"] = frame["best_val"] - ref_value
        frame["relative_delta"] = frame["delta"] / abs(ref_value) if ref_value else math.nan
        frame["better"] = frame["delta"] > 0 if higher else frame["delta"] < 0
        frame["rank"] = frame["best_val"].rank(ascending=not higher, method="min")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def lr_range_table(study: StudyInfo, suggestion_path: str | Path, out_dir: str | Path):
    """runs.csv of an lr_range study: one row, its test, with the suggestion."""
    s = json.loads(Path(suggestion_path).read_text(encoding="utf-8"))
    test_dir = Path(suggestion_path).parent
    row = {
        "study": study["name"],
        "baseline": study["baseline"],
        "experiment": study["lr_range"],
        "run": "lr_range",
        "status": "ok",
        "suggestion_rule": s["rule"] + (" (fallback: min_loss_over_10)" if s["fallback"] else ""),
        "suggested_lr": s["suggested_lr"],
        "steepest_lr": s["steepest_lr"],
        "min_loss_lr": s["min_loss_lr"],
        "min_smoothed_loss": s["min_smoothed_loss"],
        "min_lr": s["min_lr"],
        "max_lr": s["max_lr"],
        "iterations_planned": s["iterations_planned"],
        "iterations_run": s["iterations_run"],
        "stopped_early": s["stopped_early"],
        "stop_reason": s["stop_reason"],
        "wall_seconds": s["timing"]["wall_seconds"],
        "curve": os.path.relpath(test_dir / "lr_range.csv", out_dir),
        "suggestion": os.path.relpath(suggestion_path, out_dir),
    }
    return pd.DataFrame([row])


def response_table(study: StudyInfo, summary: pd.DataFrame, path: str) -> pd.DataFrame:
    """One row per point of `path`'s response: value, variant, mean best validation metric and
    its 95% t-interval over the repeats (scipy's t quantile; NaN with one run), verdict."""
    from scipy import stats

    metric = metric_of(study["task"])
    rows = []
    for value, label in response_points(study, path):
        rec = summary[summary["variant"] == label].iloc[0]
        mean, sd, n = (
            rec[f"best_val_{metric}_mean"],
            rec[f"best_val_{metric}_std"],
            int(rec["runs"]),
        )
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
        verdict = rec.get("verdict") if isinstance(rec.get("verdict"), str) else None
        rows.append({"value": value, "variant": label, "mean": mean, "low": mean - half,
                     "high": mean + half, "runs": n, "is_reference": bool(rec["is_reference"]),
                     "verdict": verdict})  # fmt: skip
    return pd.DataFrame(rows)
