"""Grid analysis: main effects, interactions and the analysis of variance of a grid's cells.

No Keras and no matplotlib: pandas, numpy and statsmodels. A `grid` study's cells are its
variants; a `cv` study's candidate grid is the part of its candidates that its `grid` key makes
(its `factors`, `variants` and reference are not cells). A cell's observations are its runs'
scores: the best validation metric of each repeat (runs.csv), or the validation metric after the
last epoch of each fold (cv_ranking.csv).

The tables here take one row per observation: a column per factor, holding the level as the
tables show it (an ordered categorical whose categories are the config's levels, in config
order), and the score column. `observations` builds that table from a study's outputs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from statsmodels.stats.weightstats import DescrStatsW

from .ids import format_value
from .stages import GridDesign, StudyInfo, VariantInfo
from .tasks import metric_of

SCORE = "score"
ANOVA_COLUMNS = ["term", "kind", "sum_sq", "df", "F", "p_value", "eta_sq", "note"]
CONFIDENCE = 0.95


# Building the table of observations -------------------------------------------------------------


def cells(design: GridDesign) -> list[tuple[str, dict, str]]:
    """(label, {factor: value}, experiment) of every cell of `design`, in config order.

    `design` is `Plan.grid_design`: {"factors": [dotted paths, config order], "cells": [[label,
    [value per factor], experiment], ...]}, the config's grid as the plan expands it, with the
    experiment each cell resolved to; the workflow hands it to the jobs (get_study_grid).
    """
    return [
        (label, dict(zip(design["factors"], values)), experiment)
        for label, values, experiment in design["cells"]
    ]


def run_scores(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """runs.csv as observations: `variant`, `replicate` (the run), `score` (best val metric)."""
    out = runs.rename(columns={"run": "replicate"})
    out[SCORE] = pd.to_numeric(runs[f"best_val_{metric}"], errors="coerce")
    return out


def fold_scores(ranking: pd.DataFrame, metric: str, k: int) -> pd.DataFrame:
    """cv_ranking.csv as observations: one row per candidate and fold (`replicate` f<i>of<k>)."""
    folds = {f"fold_{i}_val_{metric}": f"f{i}of{k}" for i in range(k)}
    keep = [c for c in ranking.columns if c not in folds]
    long = ranking.melt(
        id_vars=keep, value_vars=list(folds), var_name="replicate", value_name=SCORE
    )
    long["replicate"] = long["replicate"].map(folds)
    long[SCORE] = pd.to_numeric(long[SCORE], errors="coerce")
    return long.rename(columns={"candidate": "variant"})


def _trained_under(experiment: str, variants: list[VariantInfo], cells: set) -> str | None:
    """The variant that trained a cell the plan dropped as a duplicate: the one planned with the
    cell's experiment, unless that is another cell (two cells of one experiment cannot fill two
    cells of the table), else None."""
    return next(
        (v["label"] for v in variants if v["experiment"] == experiment and v["label"] not in cells),
        None,
    )


def _level_names(factors: list, grid: list, source: dict, scores: pd.DataFrame) -> dict:
    """factor -> {config value as formatted: the level's name}, in config order.

    A level's name is what the study's table shows for it (a range test's learning rate shows
    the value it gave), when the runs of its cells agree on one; otherwise the config's value.
    """
    names = {}
    for f in factors:
        shown: dict[str, set] = {}
        for label, values, _ in grid:
            seen = shown.setdefault(format_value(values[f]), set())
            if source[label] is not None and f in scores:
                rows = scores.loc[scores["variant"] == source[label], f]
                seen.update(rows.dropna().astype(str))
        pick = {key: next(iter(s)) if len(s) == 1 else key for key, s in shown.items()}
        distinct = len(set(pick.values())) == len(pick)
        names[f] = pick if distinct else {key: key for key in pick}
    return names


def observations(design: GridDesign, variants: list[VariantInfo], scores: pd.DataFrame):
    """The grid's table of observations, and notes on the cells it could not fill.

    `scores` has one row per run: `variant`, `replicate`, `score` (NaN when missing) and the
    factors' shown values (`run_scores`, `fold_scores`). Returns (table, notes): the table has
    a column per factor (ordered categoricals), `cell`, `variant` (whose runs fill the cell),
    `replicate` and `score`.
    """
    grid = cells(design)
    factors = design["factors"]
    labels = set(scores["variant"])
    trained = {v["label"] for v in variants} & {label for label, _, _ in grid} & labels
    source, notes = {}, []
    for label, _, experiment in grid:
        source[label] = label if label in labels else _trained_under(experiment, variants, trained)
        if source[label] is None:
            notes.append(
                f"Cell '{label}' has no runs of its own: it resolves to the same experiment as "
                "another variant of the study, which was trained once, under that variant's label."
            )
        elif source[label] != label:
            notes.append(f"Cell '{label}' is the experiment of variant '{source[label]}'.")
    names = _level_names(factors, grid, source, scores)
    frames = []
    for label, values, _ in grid:
        if source[label] is None:
            continue
        rows = scores[scores["variant"] == source[label]]
        frame = pd.DataFrame(
            {
                "cell": label,
                "variant": source[label],
                "replicate": rows["replicate"].to_numpy(),
                SCORE: rows[SCORE].to_numpy(float),
            }
        )
        for f in factors:
            frame[f] = names[f][format_value(values[f])]
        frames.append(frame)
    columns = [*factors, "cell", "variant", "replicate", SCORE]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for f in factors:
        order = list(names[f].values())
        table[f] = pd.Categorical(table[f], categories=order, ordered=True)
    return table[columns], notes


def read_table(path, design: GridDesign) -> pd.DataFrame:
    """runs.csv or cv_ranking.csv, the factors' columns read as the text they hold ("[8]",
    "0.001"), so that a level reads back as the table shows it."""
    return pd.read_csv(path, dtype={f: str for f in design["factors"]})


def study_observations(study: StudyInfo, design: GridDesign, runs=None, ranking=None):
    """`observations` of a grid study (from its runs.csv) or a cv study (its cv_ranking.csv)."""
    metric = metric_of(study["task"])
    if study["kind"] == "cv":
        scores = fold_scores(ranking, metric, int(study["cv"]))
    else:
        scores = run_scores(runs, metric)
    return observations(design, study["variants"], scores)


def score_label(study: StudyInfo) -> str:
    """What a grid study's observations are, for axis labels: 'best validation accuracy'."""
    metric = {"accuracy": "accuracy", "mae": "MAE"}[metric_of(study["task"])]
    if study["kind"] == "cv":
        return f"validation {metric} per fold"
    return f"best validation {metric}"


# Main effects and interactions ---------------------------------------------------------------


def levels(table: pd.DataFrame, factor: str) -> list:
    """A factor's levels in order: its categories, or its values as they first appear."""
    column = table[factor]
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    return list(dict.fromkeys(column))


def _finite(table: pd.DataFrame, score: str) -> pd.DataFrame:
    values = pd.to_numeric(table[score], errors="coerce")
    return table[np.isfinite(values.to_numpy(float))]


def t_interval(values) -> tuple[float, float, float]:
    """Mean and 95% Student t interval of `values` (NaN bounds with fewer than two)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size < 2:
        return float(x.mean()), math.nan, math.nan
    low, high = DescrStatsW(x).tconfint_mean(alpha=1 - CONFIDENCE)
    return float(x.mean()), float(low), float(high)


def main_effects(table: pd.DataFrame, factors: list, score: str = SCORE) -> pd.DataFrame:
    """One row per factor and level: the mean score of every observation at that level (all
    cells having it, all their runs), its 95% t interval over those observations, and n.

    Observations without a finite score are left out; a level left with none has n = 0.
    """
    data = _finite(table, score)
    rows = []
    for f in factors:
        for level in levels(table, f):
            x = data.loc[data[f] == level, score].to_numpy(float)
            mean, low, high = t_interval(x)
            rows.append(
                {
                    "factor": f,
                    "level": level,
                    "n": int(x.size),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=["factor", "level", "n", "mean", "ci_low", "ci_high"])


def interactions(table: pd.DataFrame, factors: list, score: str = SCORE) -> dict:
    """(a, b) -> the mean score in each combination of a's levels (rows) and b's (columns),
    over the other factors and the runs; NaN where no observation has a finite score."""
    data = _finite(table, score)
    out = {}
    for a, b in itertools.combinations(factors, 2):
        means = data.groupby([a, b], observed=False)[score].mean()
        wide = means.unstack(b) if len(means) else pd.DataFrame()
        out[(a, b)] = wide.reindex(index=levels(table, a), columns=levels(table, b)).astype(float)
    return out


def cell_means(table: pd.DataFrame, factors: list, score: str = SCORE) -> pd.DataFrame:
    """One row per cell that has a finite score: its levels, its mean score and n."""
    data = _finite(table, score)
    grouped = data.groupby(factors, observed=True)[score]
    return grouped.agg(mean="mean", n="size").reset_index()


# Analysis of variance ------------------------------------------------------------------------


def missing_cells(table: pd.DataFrame, factors: list, score: str = SCORE) -> list[tuple]:
    """The combinations of the factors' levels without any observation that has a score."""
    data = _finite(table, score)
    present = set(data[factors].itertuples(index=False, name=None))
    combos = itertools.product(*(levels(table, f) for f in factors))
    return [combo for combo in combos if combo not in present]


def _cell_name(factors: list, combo: tuple) -> str:
    return ", ".join(f"{f.rsplit('.', 1)[-1]}={level}" for f, level in zip(factors, combo))


def _dropped(table: pd.DataFrame, score: str) -> str:
    """A sentence naming the observations without a finite score, or ''."""
    values = pd.to_numeric(table[score], errors="coerce").to_numpy(float)
    gone = table[~np.isfinite(values)]
    if gone.empty:
        return ""
    where = [f"{r.get('cell', '?')} ({r.get('replicate', '?')})" for r in gone.to_dict("records")]
    runs = (
        "run has no score (missing or not finite) and is"
        if len(gone) == 1
        else ("runs have no score (missing or not finite) and are")
    )
    return f"{len(gone)} {runs} left out: " + (
        "; ".join(where[:10]) + (f"; and {len(where) - 10} more" if len(where) > 10 else "") + "."
    )


def model_terms(k: int, replicated: bool) -> tuple[list[tuple], str]:
    """The terms the ANOVA model fits (tuples of factor indices) and what its residual is.

    With more than one observation in some cell: every main effect and interaction, and the
    residual is the spread of the runs within the cells. With one observation per cell there is
    no such spread: with three or more factors the model has the main effects and the pairs,
    and the residual is the interactions of three or more factors; with two, the main effects
    only, and the residual is the pair's interaction together with the run-to-run noise.
    """
    if replicated:
        terms = [t for size in range(1, k + 1) for t in itertools.combinations(range(k), size)]
        return terms, "the spread of the runs within each cell (repeats or folds)"
    if k >= 3:
        terms = [t for size in (1, 2) for t in itertools.combinations(range(k), size)]
        return terms, (
            "the interactions of three or more factors, taken as noise (one run per cell: no "
            "repeats to measure the noise by)"
        )
    return [(i,) for i in range(k)], (
        "the pair's interaction together with the run-to-run noise: with one run per cell they "
        "cannot be told apart, so the interaction is not tested (its share is at most the "
        "residual's)"
    )


def _term(t: tuple) -> str:
    """A model term over the aliased columns f0, f1, ...: 'C(f0):C(f1)'."""
    return ":".join(f"C(f{i})" for i in t)


def _fit(data: pd.DataFrame, factors: list, score: str, terms: list) -> pd.DataFrame:
    """statsmodels OLS of the score on the terms, and its type-II ANOVA, as our rows.

    The factors enter the formula under generated names (f0, f1, ...), so no config text is
    ever parsed as part of a formula; their levels are categorical (C(...)).
    """
    frame = pd.DataFrame({f"f{i}": data[f].astype(str).to_numpy() for i, f in enumerate(factors)})
    frame["y"] = data[score].to_numpy(float)
    # statsmodels' formula API takes 0.7 s to import: only the jobs that fit one pay it
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    fit = smf.ols("y ~ " + " + ".join(_term(t) for t in terms), data=frame).fit()
    table = anova_lm(fit, typ=2)
    total = float(fit.centered_tss)
    rows = []
    for t in terms:
        rec = table.loc[_term(t)]
        rows.append(
            {
                "term": " × ".join(factors[i] for i in t),
                "kind": "main effect" if len(t) == 1 else "interaction",
                "sum_sq": float(rec["sum_sq"]),
                "df": int(rec["df"]),
                "F": float(rec["F"]),
                "p_value": float(rec["PR(>F)"]),
            }
        )
    rows.append(
        {
            "term": "residual",
            "kind": "residual",
            "sum_sq": float(fit.ssr),
            "df": int(round(fit.df_resid)),
            "F": math.nan,
            "p_value": math.nan,
        }
    )
    rows.append(
        {
            "term": "total",
            "kind": "total",
            "sum_sq": total,
            "df": len(frame) - 1,
            "F": math.nan,
            "p_value": math.nan,
        }
    )
    out = pd.DataFrame(rows)
    out["eta_sq"] = out["sum_sq"] / total if total > 0 else math.nan
    return out


def anova(table: pd.DataFrame, factors: list, score: str = SCORE):
    """The type-II ANOVA of a full factorial grid: (table, note), or (None, note saying why).

    One row per fitted term (`model_terms`), then the residual and the total: sum of squares,
    df, F and p (statsmodels' `ols` and `anova_lm(typ=2)`), and eta squared = SS / total SS.
    Observations without a finite score are left out first; the grid must then still have a
    scored observation in every combination of its levels. Factors with a single level are
    constants and are left out of the model.
    """
    notes = [_dropped(table, score)]
    missing = missing_cells(table, factors, score) if factors else []
    if missing:
        names = "; ".join(_cell_name(factors, c) for c in missing)
        notes.append(
            f"Not a full factorial grid: no scored run in {names}. The ANOVA needs "
            "every combination of levels, so its table is not shown."
        )
        return None, _join(notes)
    data = _finite(table, score)
    varying = [f for f in factors if len(levels(table, f)) > 1]
    n, n_cells = len(data), math.prod(len(levels(table, f)) for f in varying)
    if not varying or (n <= n_cells and len(varying) == 1):
        notes.append(
            "No ANOVA: it needs two or more levels of a factor and, with one factor, "
            "more than one run per level to measure the noise by."
        )
        return None, _join(notes)
    if len(varying) < len(factors):
        constant = ", ".join(f for f in factors if f not in varying)
        notes.append(f"Left out of the model, having a single level: {constant}.")
    terms, residual = model_terms(len(varying), replicated=n > n_cells)
    result = _fit(data, varying, score, terms)
    counts = data.groupby(varying, observed=True).size()
    low, high = int(counts.min()), int(counts.max())
    per_cell = (
        f"{low} scored run{'s' if high > 1 else ''}"
        if low == high
        else f"{low} to {high} scored runs"
    )
    shape = " × ".join(str(len(levels(table, f))) for f in varying)
    shape = f"{shape} = {n_cells}" if len(varying) > 1 else shape
    notes.append(
        f"Full factorial: {shape} cells, {per_cell} per cell ({n} runs in all). "
        f"Residual: {residual}."
    )
    if low != high:
        notes.append(
            "The cells have unequal numbers of runs, so the type-II sums of squares "
            "need not add up to the total."
        )
    return result, _join(notes)


def _join(notes: list) -> str:
    return " ".join(note for note in notes if note)


def study_anova(study: StudyInfo, design: GridDesign, runs=None, ranking=None) -> pd.DataFrame:
    """What a study's anova.csv holds: the ANOVA rows with a `note` column, one row with only
    the note when there is no table, and no row for a study without a grid."""
    if not design.get("factors"):
        return pd.DataFrame(columns=ANOVA_COLUMNS)
    table, notes = study_observations(study, design, runs, ranking)
    result, note = anova(table, design["factors"])
    note = _join([*notes, note, CV_CAVEAT if study["kind"] == "cv" else ""])
    if result is None:
        return pd.DataFrame([{"note": note}], columns=ANOVA_COLUMNS)
    result["note"] = note
    return result[ANOVA_COLUMNS]


CV_CAVEAT = (
    "The runs are the folds of the cross-validation: differences between folds that every "
    "candidate shares stay in the residual, and the folds' training sets overlap, so the F-tests "
    "and p-values are approximate."
)


def describe_method() -> str:
    """One paragraph of plain text: how the grid analysis is made."""
    return (
        "Main effects: for each level of a factor, the mean score over every run (for a cv "
        "study, every fold) of the cells at that level, with a 95% Student t confidence interval "
        "over those runs; the other factors' effects count as spread, so in a balanced grid the "
        "interval errs on the wide side. Interactions: for each pair of factors, the mean score "
        "in each combination of their levels, over the other factors and the runs. ANOVA "
        "(only for a full factorial grid, where every combination of levels has a run with a "
        "score): an ordinary least squares fit of the score on the factors as categorical "
        "variables (statsmodels ols) and its type-II sums of squares (statsmodels anova_lm, "
        "typ=2): each term's SS is what it adds to a model of every term that does not contain "
        "it. F = (SS / df) / (residual SS / residual df), p from the F distribution, and eta "
        "squared = SS / total SS (centred), the term's share of the variance of the runs. "
        "Residual: with more than one run per cell, the model has every interaction and the "
        "residual is the spread of the runs within the cells (repeats, or folds). With one run "
        "per cell there is nothing to measure that noise by: with three or more factors the "
        "model has the main effects and the pairs, and the residual is the interactions of "
        "three or more factors, taken as noise; with two factors it has the main effects only, "
        "and the residual is the pair's interaction together with the noise, which cannot be "
        "tested without repeats. Runs without a score (missing, or not finite) are left out."
    )
