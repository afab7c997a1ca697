"""Combine studies: the winners of ofat studies set together, planned from their verdicts, and the
check that their gains add up."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_CONFIG, plan_of, run_snakemake

from hpstudy import combine, statistics
from hpstudy.config import ConfigError


def config_with(**combined) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["studies"] = {
        "lr": {"kind": "ofat", "baseline": "b", "factors": {"optimizer.learning_rate": [0.1, 0.2]}},
        "width": {"kind": "ofat", "baseline": "b", "factors": {"model.hidden": [[16], [32]]}},
        "act": {"kind": "ofat", "baseline": "b",
                "variants": [{"label": "tanh", "set": {"model.activation": "tanh"}}]},
        "all": {"kind": "combine", "baseline": "b", "combine": ["lr", "width", "act"], **combined},
    }  # fmt: skip
    return cfg


def winners(plan, chosen: dict) -> dict:
    out = []
    for slug in ("lr", "width", "act"):
        label = chosen.get(slug)
        exp = next((v.experiment for v in plan.studies[slug].variants if v.label == label), None)
        out.append({"study": slug, "slug": slug, "variant": label, "experiment": exp})
    return {"study": "all", "winners": out}


def test_a_combination_of_known_winners_plans_exactly_that_experiment():
    plan = plan_of(config_with())
    study = plan.studies["all"]
    assert [v.label for v in study.variants] == ["baseline"]  # until the winners are chosen
    assert plan.add_combination("all", winners(plan, {"lr": "learning_rate=0.2", "act": "tanh"}))
    labels = [v.label for v in study.variants]
    assert labels == ["baseline", "combined", "lr: learning_rate=0.2", "act: tanh"]
    # The same spec written by hand, as an ofat variant that sets both values, has the same id.
    by_hand = config_with()
    by_hand["studies"]["manual"] = {
        "kind": "ofat",
        "baseline": "b",
        "variants": [
            {"label": "both", "set": {"optimizer.learning_rate": 0.2, "model.activation": "tanh"}}
        ],
    }
    expected = next(v for v in plan_of(by_hand).studies["manual"].variants if v.label == "both")
    combined = next(v for v in study.variants if v.label == "combined")
    assert combined.experiment == expected.experiment
    assert len(study.runs["combined"]) == 1  # the study's repeats (the tiny config's 1)
    assert not plan.add_combination(
        "all", winners(plan, {"lr": "learning_rate=0.2", "act": "tanh"})
    )


def test_one_winner_or_none_combines_nothing():
    plan = plan_of(config_with())
    plan.add_combination("all", winners(plan, {"width": "hidden=[32]"}))
    assert [v.label for v in plan.studies["all"].variants] == ["baseline", "width: hidden=[32]"]
    plan.add_combination("all", winners(plan, {}))
    assert [v.label for v in plan.studies["all"].variants] == ["baseline"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["studies"]["all"].update(combine=["nope"]), "the name of an ofat study"),
        (lambda c: c["studies"]["all"].update(combine=["all"]), "the name of an ofat study"),
        (lambda c: c["studies"]["lr"].update(set={"training.batch_size": 16}), "same reference"),
        (lambda c: c["studies"]["act"]["variants"].append(
            {"label": "lr too", "set": {"optimizer.learning_rate": 0.3}}), "vary different keys"),
        (lambda c: c["studies"]["all"].update(factors={"model.hidden": [[4]]}), "no candidates"),
        (lambda c: c["studies"]["lr"].update(combine=["width"]), "only in a study of kind combine"),
    ],
)  # fmt: skip
def test_bad_combine_studies_are_rejected(change, message):
    cfg = config_with()
    change(cfg)
    with pytest.raises(ConfigError, match=message):
        plan_of(cfg)


def summary(labels, best=None):
    return pd.DataFrame(
        {"variant": labels, "experiment": [f"e{i}" for i in range(len(labels))],
         "is_best": [label == best for label in labels]}
    )  # fmt: skip


def test_choose_takes_the_variant_marked_best_or_none():
    study = {"name": "all", "combine": [{"name": "lr", "slug": "lr"}, {"name": "w", "slug": "w"}]}
    chosen = combine.choose(
        study, {"lr": summary(["baseline", "a", "b"], best="b"), "w": summary(["baseline", "c"])}
    )
    assert chosen["winners"] == [
        {"study": "lr", "slug": "lr", "variant": "b", "experiment": "e2"},
        {"study": "w", "slug": "w", "variant": None, "experiment": None},
    ]


def runs_of(means: dict, n=6, sd=0.002, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {"variant": label, "best_val_accuracy": mean + rng.normal(0, sd)}
        for label, mean in means.items()
        for _ in range(n)
    ]
    return pd.DataFrame(rows)


STUDY = {
    "task": "classification",
    "variants": [{"label": "baseline", "is_reference": True}, {"label": "combined", "is_reference": False},
                 {"label": "a", "is_reference": False}, {"label": "b", "is_reference": False}],
}  # fmt: skip


def test_additive_gains_add_up_and_saturating_ones_do_not():
    """In 200 simulated combine studies each: additive gains are called additive at least 90% of
    the time (the test's level is 5%), gains that saturate are called less than their sum."""
    additive = {"baseline": 0.80, "a": 0.83, "b": 0.85, "combined": 0.88}
    saturating = {"baseline": 0.80, "a": 0.83, "b": 0.85, "combined": 0.855}
    calls = {"additive": [], "saturating": []}
    for seed in range(200):
        for name, means in (("additive", additive), ("saturating", saturating)):
            # the contrast's verdict, as `additivity` gives it, without its bootstrapped
            # comparisons with each winner (checked below)
            _, verdict = combine.gains_contrast(runs_of(means, seed=seed), STUDY)
            calls[name].append(verdict)
    assert sum(v.startswith("the gains add up") for v in calls["additive"]) >= 180
    assert sum(v == "less than the sum of the single gains" for v in calls["saturating"]) >= 180
    for seed in range(3):  # the same verdict as `additivity` gives
        runs = runs_of(saturating, seed=seed)
        assert combine.gains_contrast(runs, STUDY)[1] == combine.additivity(runs, STUDY)["verdict"]
    one = combine.additivity(runs_of(additive, seed=1), STUDY)
    assert one["combined_delta"] == pytest.approx(0.08, abs=0.005)
    assert one["sum_of_gains"] == pytest.approx(0.08, abs=0.005)
    against = combine.additivity(runs_of(saturating, seed=1), STUDY)["against_winners"]
    assert [a["winner"] for a in against] == ["a", "b"]
    assert against[0]["verdict"] == "better"  # 0.855 against 0.83, with sd 0.002


def test_contrast_is_welch_for_two_groups():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.3, 5), rng.normal(0.5, 0.1, 7)
    found = statistics.contrast([a, b], [1.0, -1.0])
    ref = statistics.compare_runs(a, b, higher_is_better=True)
    assert found["estimate"] == pytest.approx(ref.delta_mean)
    assert found["p_value"] == pytest.approx(ref.p_value)
    assert (found["ci_low"], found["ci_high"]) == pytest.approx(
        (ref.delta_ci_low, ref.delta_ci_high)
    )


CONFIG = """\
title: Combine
repeats: 3
datasets:
  d: {source: digits, subsample: 300}
baselines:
  b:
    dataset: d
    model: {hidden: [16]}
    optimizer: {name: sgd, learning_rate: 0.005, momentum: 0.0}
    training: {epochs: 6, batch_size: 32}
studies:
  lr: {kind: ofat, baseline: b, factors: {optimizer.learning_rate: [0.1]}}
  momentum: {kind: ofat, baseline: b, factors: {optimizer.momentum: [0.9]}}
  width: {kind: ofat, baseline: b, factors: {model.hidden: [[64]]}}
  together: {kind: combine, baseline: b, combine: [lr, momentum, width]}
"""


@pytest.mark.e2e
def test_the_graph_combines_the_winners_and_keeps_them_while_they_stay(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    run_snakemake(tmp_path, "--cores", "2")
    chosen = json.loads((tmp_path / "results/studies/together/combination.json").read_text())
    summaries = {
        s: pd.read_csv(tmp_path / f"results/studies/{s}/summary.csv")
        for s in ("lr", "momentum", "width")
    }
    for w in chosen["winners"]:  # each winner is its study's variant marked best, or none
        best = summaries[w["study"]].query("is_best")
        assert w["variant"] == (best["variant"].iloc[0] if len(best) else None)
    table = pd.read_csv(tmp_path / "results/studies/together/summary.csv")
    picked = [w for w in chosen["winners"] if w["variant"]]
    assert ("combined" in set(table["variant"])) == (len(picked) > 1)
    html = (tmp_path / "results/report.html").read_text()
    assert "The winners together" in html and "Winners used" in html
    # A new value in a listed study re-chooses the winners; the same winners train nothing else.
    (tmp_path / "config.yaml").write_text(CONFIG.replace("[[64]]", "[[64], [8]]"))
    dry = run_snakemake(tmp_path, "-n")
    text = dry.stdout + dry.stderr
    assert "select_combination" in text
    assert len([line for line in text.splitlines() if line.startswith("rule train")]) == 1


def test_additivity_csv_holds_every_number_the_report_shows(tmp_path):
    """additivity.csv (aggregate_study) carries the contrast and each combined-vs-winner
    comparison; the report renders it without computing anything; other studies: header only."""
    from hpstudy import report

    study = {**STUDY, "kind": "combine", "slug": "c", "combination": {"winners": []}}
    runs = runs_of({"baseline": 0.80, "a": 0.83, "b": 0.85, "combined": 0.855}, seed=1)
    table = combine.additivity_table(runs, study)
    found = combine.additivity(runs, study)
    assert list(table.columns) == list(combine.ADDITIVITY_COLUMNS)
    assert list(table["comparison"]) == ["additivity", "combined vs winner", "combined vs winner"]
    first = table.iloc[0]
    assert first["estimate"] == found["contrast"]["estimate"]
    assert first["verdict"] == found["verdict"] == "less than the sum of the single gains"
    assert list(table["winner"][1:]) == ["a", "b"]
    assert list(table["p_adjusted"][1:]) == [a["p_adjusted"] for a in found["against_winners"]]
    (tmp_path / "c").mkdir()
    table.to_csv(tmp_path / "c" / "additivity.csv", index=False)
    sections = [{"study": study}]
    report.add_combine_views(sections, [str(tmp_path / "c" / "additivity.csv")])
    view = sections[0]["combine"]["additivity"]
    assert view["contrast"] == f"{found['contrast']['estimate']:+.3g}" and not view["adds_up"]
    ofat = combine.additivity_table(runs, {**study, "kind": "ofat"})
    assert ofat.empty and list(ofat.columns) == list(combine.ADDITIVITY_COLUMNS)
