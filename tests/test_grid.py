"""Grid analysis (hpstudy.grid, figures.plot_grid, the report's grid view) on data built for the
purpose: known main effects and interactions, grids with holes, and one small real grid study."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import TINY_CONFIG, plan_of, run_snakemake

from hpstudy import figures, grid, report


def is_full_factorial(table: pd.DataFrame, factors: list, score: str = grid.SCORE) -> bool:
    """Whether every combination of the factors' levels has at least one scored observation."""
    return bool(factors) and not grid.missing_cells(table, factors, score)


A, B = "optimizer.learning_rate", "model.hidden"


def simulated(
    effects: dict, repeats: int, noise: float, seed: int = 0, interaction=None
) -> pd.DataFrame:
    """One row per run of every cell of the grid `effects` (factor -> {level: effect}): the
    score is the sum of the levels' effects, plus `interaction(levels)`, plus normal noise."""
    rng = np.random.default_rng(seed)
    factors = list(effects)
    rows = []
    for combo in itertools.product(*(effects[f] for f in factors)):
        mean = sum(effects[f][level] for f, level in zip(factors, combo))
        mean += interaction(combo) if interaction else 0.0
        for r in range(repeats):
            rows.append(
                {**dict(zip(factors, combo)), "cell": ", ".join(combo), "replicate": f"r{r}",
                 grid.SCORE: mean + rng.normal(0, noise)}
            )  # fmt: skip
    table = pd.DataFrame(rows)
    for f in factors:
        table[f] = pd.Categorical(table[f], categories=list(effects[f]), ordered=True)
    return table


def rows_by_term(result: pd.DataFrame) -> dict:
    return {rec["term"]: rec for rec in result.to_dict("records")}


ADDITIVE = {A: {"0.01": 0.0, "0.1": 0.05, "0.3": 0.08}, B: {"[8]": 0.0, "[16]": 0.03}}


def test_an_additive_grid_has_no_interaction_and_clear_main_effects():
    table = simulated(ADDITIVE, repeats=4, noise=0.01)
    result, note = grid.anova(table, [A, B])
    terms = rows_by_term(result)
    assert terms[f"{A} × {B}"]["eta_sq"] < 0.01
    assert terms[A]["p_value"] < 1e-6 and terms[B]["p_value"] < 1e-6
    assert terms[A]["eta_sq"] > 0.5 and terms[B]["eta_sq"] > 0.1
    # balanced: the type-II sums of squares and the residual add up to the total
    parts = sum(terms[t]["sum_sq"] for t in (A, B, f"{A} × {B}", "residual"))
    assert parts == pytest.approx(terms["total"]["sum_sq"])
    assert terms["residual"]["df"] == 3 * 2 * (4 - 1) and terms["total"]["eta_sq"] == 1
    assert "Full factorial: 3 × 2 = 6 cells, 4 scored runs per cell (24 runs in all)" in note
    assert "spread of the runs within each cell" in note


def test_a_pure_interaction_has_no_main_effects():
    # crossed: +1 on the diagonal, -1 off it; every level's mean is the same
    flat = {A: {"0.01": 0.0, "0.1": 0.0}, B: {"[8]": 0.0, "[16]": 0.0}}
    table = simulated(flat, 4, 0.1, interaction=lambda c: 1.0 if c in {("0.01", "[8]"), ("0.1", "[16]")} else -1.0)  # fmt: skip
    terms = rows_by_term(grid.anova(table, [A, B])[0])
    assert terms[A]["eta_sq"] < 0.01 and terms[B]["eta_sq"] < 0.01
    assert terms[f"{A} × {B}"]["eta_sq"] > 0.9 and terms[f"{A} × {B}"]["p_value"] < 1e-6
    effects = grid.main_effects(table, [A, B])
    assert np.ptp(effects["mean"]) < 0.15  # the main-effects plot is flat...
    cells = grid.interactions(table, [A, B])[(A, B)]
    assert cells.loc["0.01", "[8]"] > 0.8 and cells.loc["0.01", "[16]"] < -0.8  # ...the heatmap not


def test_a_grid_with_a_hole_gets_no_table_and_says_why():
    table = simulated(ADDITIVE, 2, 0.01)
    holed = table[~((table[A] == "0.3") & (table[B] == "[16]"))]
    assert not is_full_factorial(holed, [A, B]) and is_full_factorial(table, [A, B])
    result, note = grid.anova(holed, [A, B])
    assert result is None
    assert "Not a full factorial grid" in note and "learning_rate=0.3, hidden=[16]" in note
    assert grid.missing_cells(holed, [A, B]) == [("0.3", "[16]")]


def test_runs_without_a_score_are_left_out_and_named():
    table = simulated(ADDITIVE, 2, 0.01)
    table.loc[0, grid.SCORE] = np.nan
    result, note = grid.anova(table, [A, B])
    assert result is not None and rows_by_term(result)["total"]["df"] == 12 - 2
    assert "1 run has no score (missing or not finite) and is left out: 0.01, [8] (r0)" in note
    assert "1 to 2 scored runs per cell" in note and "need not add up" in note
    # every run of a cell without a score: the cell is missing
    table.loc[1, grid.SCORE] = math.inf
    result, note = grid.anova(table, [A, B])
    assert (
        result is None
        and "2 runs have no score" in note
        and "learning_rate=0.01, hidden=[8]" in note
    )
    assert grid.main_effects(table, [A, B]).query("level == '0.01'")["n"].item() == 2


def test_one_run_per_cell_with_two_factors_fits_main_effects_only():
    table = simulated(ADDITIVE, 1, 0.01)
    result, note = grid.anova(table, [A, B])
    assert list(result["term"]) == [A, B, "residual", "total"]
    assert rows_by_term(result)["residual"]["df"] == (3 - 1) * (2 - 1)
    assert "cannot be told apart" in note and "not tested" in note


def test_one_run_per_cell_with_three_factors_tests_pairs_against_the_rest():
    effects = {**ADDITIVE, "model.activation": {"relu": 0.0, "tanh": -0.02}}
    result, note = grid.anova(simulated(effects, 1, 0.01), list(effects))
    kinds = result["kind"].value_counts()
    assert kinds["main effect"] == 3 and kinds["interaction"] == 3  # pairs only
    assert rows_by_term(result)["residual"]["df"] == 2 * 1 * 1  # the three-factor interaction
    assert "interactions of three or more factors" in note


def test_a_single_factor_needs_repeats_and_a_constant_factor_is_left_out():
    one = {A: ADDITIVE[A]}
    assert grid.anova(simulated(one, 1, 0.01), [A])[0] is None
    result, _ = grid.anova(simulated(one, 3, 0.01), [A])  # a one-way ANOVA
    assert list(result["term"]) == [A, "residual", "total"]
    constant = {**one, B: {"[8]": 0.0}}
    result, note = grid.anova(simulated(constant, 3, 0.01), [A, B])
    assert list(result["term"]) == [A, "residual", "total"] and f"single level: {B}" in note


def test_main_effect_intervals_contain_the_true_level_means():
    effects = {A: {"0.01": 0.0, "0.1": 0.04, "0.3": -0.03}, B: {"[8]": 0.0, "[16]": 0.02}}
    truth = {(f, level): np.mean([effects[f][level] + effects[g][m] for g in effects if g != f
                                  for m in effects[g]]) for f in effects for level in effects[f]}  # fmt: skip
    covered = total = 0
    for seed in range(200):
        found = grid.main_effects(simulated(effects, 3, 0.02, seed=seed), list(effects))
        for rec in found.to_dict("records"):
            inside = rec["ci_low"] <= truth[(rec["factor"], rec["level"])] <= rec["ci_high"]
            covered, total = covered + inside, total + 1
            if seed == 0:
                assert inside and rec["n"] == 3 * len(effects[B if rec["factor"] == A else A])
    assert covered / total >= 0.95  # a t interval over the runs at a level: at least nominal


def test_interactions_are_the_means_of_each_pair_of_levels():
    effects = {**ADDITIVE, "model.activation": {"relu": 0.0, "tanh": -0.02}}
    table = simulated(effects, 2, 0.01)
    pairs = grid.interactions(table, list(effects))
    assert list(pairs) == [(A, B), (A, "model.activation"), (B, "model.activation")]
    expected = table[(table[A] == "0.1") & (table[B] == "[16]")][grid.SCORE].mean()
    assert pairs[(A, B)].loc["0.1", "[16]"] == pytest.approx(expected)
    assert list(pairs[(A, B)].index) == ["0.01", "0.1", "0.3"]  # the config's order
    holed = table[~((table[A] == "0.3") & (table[B] == "[16]"))]
    assert np.isnan(grid.interactions(holed, [A, B])[(A, B)].loc["0.3", "[16]"])


# From a study's outputs: the cells, their levels and what the plan did with them ---------------


def design_of(cfg: dict, name: str) -> dict:
    """The study's grid as the workflow hands it to the jobs (Plan.grid_design)."""
    return plan_of(cfg).grid_design(name)


def runs_of(study: dict, score=lambda variant, run: 0.5) -> pd.DataFrame:
    """A runs.csv for a planned study: each run's best validation accuracy from `score`."""
    rows = []
    for v in study["variants"]:
        for r in v["runs"]:
            shown = {p: str(x) for p, x in v["values"].items()}
            rows.append({"variant": v["label"], "run": r["run"], **shown,
                         "best_val_accuracy": score(v, r["run"])})  # fmt: skip
    return pd.DataFrame(rows)


def grid_config(**study) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["baselines"]["b"]["optimizer"]["momentum"] = 0.0
    cfg["studies"] = {"g": {"kind": "grid", "baseline": "b", "repeats": 2, **study}}
    return cfg


def test_a_cell_that_is_the_reference_takes_the_reference_runs():
    cfg = grid_config(reference=True, grid={A: [0.05, 0.1], B: [[8], [16]]})
    study = plan_of(cfg).studies["g"].describe()
    assert [v["label"] for v in study["variants"]][0] == "baseline"  # the cell (0.05, [8]) is it
    table, notes = grid.study_observations(study, design_of(cfg, "g"), runs_of(study))
    assert notes == [
        "Cell 'learning_rate=0.05, hidden=[8]' is the experiment of variant 'baseline'."
    ]
    assert len(table) == 8 and is_full_factorial(table, [A, B])
    assert list(table[A].cat.categories) == ["0.05", "0.1"]
    assert list(table[B].cat.categories) == ["[8]", "[16]"]


def test_two_cells_of_one_experiment_make_the_grid_not_full_factorial():
    # Adam has no momentum: (adam, 0) and (adam, 0.9) are one experiment, trained once
    cfg = grid_config(grid={"optimizer.name": ["sgd", "adam"], "optimizer.momentum": [0, 0.9]})
    study = plan_of(cfg).studies["g"].describe()
    design = design_of(cfg, "g")
    table, notes = grid.study_observations(study, design, runs_of(study))
    assert any("'name=adam, momentum=0.9' has no runs of its own" in n for n in notes)
    assert list(table["optimizer.momentum"].cat.categories) == ["0", "0.9"]  # not runs.csv's None
    csv = grid.study_anova(study, design, runs_of(study))
    assert len(csv) == 1 and csv["term"].isna().all()
    assert "same experiment as another variant" in csv["note"][0]
    assert "Not a full factorial grid" in csv["note"][0]


def test_a_cv_study_analyses_the_folds_of_its_grid_candidates_only():
    cfg = grid_config(grid={A: [0.05, 0.1], B: [[8], [16]]})
    cfg["studies"]["g"] = {"kind": "cv", "baseline": "b", "cv": 3, "grid": {A: [0.05, 0.1], B: [[8], [16]]},
                           "factors": {"training.batch_size": [16]}}  # fmt: skip
    study = plan_of(cfg).studies["g"].describe()
    ranking = pd.DataFrame(
        [{"candidate": v["label"], **{p: str(x) for p, x in v["values"].items()},
          **{f"fold_{i}_val_accuracy": 0.5 + 0.1 * i for i in range(3)}}
         for v in study["variants"]]
    )  # fmt: skip
    table, _ = grid.study_observations(study, design_of(cfg, "g"), ranking=ranking)
    assert len(table) == 4 * 3 and "batch_size=16" not in set(table["variant"])
    assert sorted(set(table["replicate"])) == ["f0of3", "f1of3", "f2of3"]
    csv = grid.study_anova(study, design_of(cfg, "g"), ranking=ranking)
    assert "folds of the cross-validation" in csv["note"][0]
    assert grid.score_label(study) == "validation accuracy per fold"


def test_a_study_without_a_grid_has_an_empty_anova_csv():
    csv = grid.study_anova({"kind": "ofat"}, {"factors": [], "cells": []})
    assert csv.empty and list(csv.columns) == grid.ANOVA_COLUMNS


# Figures and the report's view ---------------------------------------------------------------


@pytest.mark.parametrize("n_factors", [1, 2, 3])
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_the_grid_figure_is_written(tmp_path, n_factors, fmt):
    effects = {**ADDITIVE, "model.activation": {"relu": 0.0, "tanh": -0.02}}
    factors = list(effects)[:n_factors]
    table = simulated({f: effects[f] for f in factors}, 2, 0.01)
    table.loc[0, grid.SCORE] = np.nan  # a run without a score is left out, not drawn as 0
    path = tmp_path / f"grid.{fmt}"
    figures.plot_grid(table, factors, path, label="best validation MAE", higher=False, title="t $x")
    assert path.stat().st_size > 5000
    if fmt == "svg":
        svg = path.read_text(encoding="utf-8")
        assert "lower is better" in svg and "Main effects" in svg
        assert ("Interactions" in svg) == (n_factors >= 2)
        assert ("Parallel coordinates" in svg) == (n_factors >= 3)


def test_the_grid_figure_survives_a_grid_without_any_score(tmp_path):
    table = simulated(ADDITIVE, 1, 0.01)
    table[grid.SCORE] = np.nan
    figures.plot_grid(table, [A, B], tmp_path / "g.svg", label="x", higher=True, title="t")
    assert (tmp_path / "g.svg").exists()


def test_the_report_view_formats_the_anova_table(tmp_path):
    table = simulated(ADDITIVE, 3, 0.01)
    result, note = grid.anova(table, [A, B])
    result["note"] = note
    result.to_csv(tmp_path / "anova.csv", index=False)
    figures.plot_grid(table, [A, B], tmp_path / "grid.svg", label="x", higher=True, title="t")
    study = {"kind": "grid", "task": "classification", "varied": [A, B]}
    view = report.grid_view(study, [A, B], tmp_path / "anova.csv", tmp_path / "grid.svg")
    assert [r["term"] for r in view["rows"]] == [A, B, f"{A} × {B}", "residual", "total"]
    assert view["rows"][-1]["eta_sq"] == "100.0 %" and view["rows"][0]["p"] == "< 0.001"
    assert view["figure"].startswith("data:image/svg+xml,") and view["note"] == note
    assert "statsmodels" in view["method"] and "type-II" in view["method"]


# The real workflow on a small grid ------------------------------------------------------------


@pytest.mark.e2e
def test_a_small_grid_study_end_to_end(tmp_path):
    cfg = grid_config(grid={A: [0.05, 0.2], B: [[8], [16]]})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_snakemake(tmp_path, "--cores", "2")
    study = tmp_path / "results" / "studies" / "g"
    anova = pd.read_csv(study / "anova.csv")
    assert list(anova["term"]) == [A, B, f"{A} × {B}", "residual", "total"]
    assert anova["df"].tolist() == [1, 1, 1, 4, 7]
    assert anova["eta_sq"].iloc[-1] == 1 and "2 scored runs per cell" in anova["note"][0]
    svg = (study / "grid.svg").read_text(encoding="utf-8")
    assert "higher is better" in svg and "Interactions" in svg
    html = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert (
        '<table class="anova">' in html and "Grid analysis: main effects and interactions" in html
    )
    assert f'<td class="label">{A} × {B}</td>' in html
