"""Adaptive search (study kind search): proposals, replay, ranking, re-test and the workflow."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import TINY_CONFIG, plan_of, run_snakemake
from scipy import stats

from hpstudy import search
from hpstudy.config import ConfigError

SPACE = {
    "optimizer.name": {"choices": ["sgd", "adam"]},
    "optimizer.learning_rate": {"low": 0.001, "high": 0.5, "log": True},
    "optimizer.momentum": {"low": 0.0, "high": 0.9, "when": {"optimizer.name": "sgd"}},
    "training.batch_size": {"low": 16, "high": 64},
}


def search_config(space=SPACE, **settings) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["repeats"] = 2
    cfg["studies"] = {
        "s": {"kind": "search", "baseline": "b", "space": copy.deepcopy(space),
              "search": {"trials": 6, "round_size": 3, "retest": 2, **settings}}
    }  # fmt: skip
    return cfg


def request_of(cfg: dict) -> dict:
    return plan_of(cfg).studies["s"].search["request"]


def fake_scores(rounds: list) -> dict:
    """A deterministic score per trial (higher learning rate scores higher, a diverged one)."""
    scores = {}
    for rnd in rounds:
        for t in rnd["trials"]:
            lr = t["params"]["optimizer.learning_rate"]
            scores[t["trial"]] = None if t["trial"] == 1 else 0.5 + 0.2 * math.log10(lr)
    return scores


def run_search(request: dict, sizes: list) -> list:
    rounds = []
    for size in sizes:
        rounds.append(search.propose(request, rounds, fake_scores(rounds), size))
    return rounds


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
def test_proposals_are_a_pure_function_of_the_request_and_earlier_scores(sampler):
    request = request_of(search_config(sampler=sampler, startup_trials=2))
    first, again = run_search(request, [3, 3, 2]), run_search(request, [3, 3, 2])
    assert first == again  # the same config proposes the same trials in the same order
    numbers = [t["trial"] for r in first for t in r["trials"]]
    assert numbers == list(range(8))
    for r in first:
        for t in r["trials"]:
            p = t["params"]
            # a conditional key exists exactly where its condition holds
            assert ("optimizer.momentum" in p) == (p["optimizer.name"] == "sgd"), p
            assert 0.001 <= p["optimizer.learning_rate"] <= 0.5
            assert (
                isinstance(p["training.batch_size"], int) and 16 <= p["training.batch_size"] <= 64
            )
    # A larger last round (a raised budget) keeps the trials already proposed in it.
    bigger = run_search(request, [3, 3, 3])
    assert bigger[:2] == first[:2] and bigger[2]["trials"][:2] == first[2]["trials"]
    # Another seed proposes other trials.
    other = run_search({**request, "seed": 1}, [3])
    assert other[0]["trials"] != first[0]["trials"]


def test_a_round_file_the_sampler_no_longer_proposes_is_refused_with_the_fix():
    request = request_of(search_config())
    rounds = run_search(request, [3])
    rounds[0]["trials"][1]["params"]["optimizer.learning_rate"] = 0.123
    with pytest.raises(search.ReplayError, match="delete the study's search/ folder"):
        search.propose(request, rounds, {}, 3)


def test_the_plan_turns_trials_into_experiments_and_retests_on_fresh_seeds():
    cfg = search_config()
    plan = plan_of(cfg)
    study = plan.studies["s"]
    (reference,) = study.variants
    assert [r.name for r in study.runs["baseline"]] == ["r1", "r2"]  # r0 is the search's
    rounds = run_search(study.search["request"], [3])
    trials = plan.add_search_rounds("s", rounds)
    assert len(trials) == 3 and all(f"{e}/r0" in plan.runs for e in trials.values())
    chosen = {"retest": [{"trial": 2, "experiment": trials["2"], "search_score": 0.9,
                          "params": rounds[0]["trials"][2]["params"]}]}  # fmt: skip
    assert plan.add_search_retest("s", chosen)
    labels = [v.label for v in study.variants]
    assert labels == ["baseline", "trial 2"]
    assert [r.name for r in study.runs["trial 2"]] == ["r1", "r2"]
    assert study.variants[1].experiment == trials["2"]
    assert not plan.add_search_retest("s", chosen)  # the same choice changes nothing


@pytest.mark.parametrize(
    "space, key, expected",
    [
        ({"optimizer.learning_rate": {"low": 0.5, "high": 0.1}}, "high", "a number > low"),
        ({"optimizer.learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "low", "log scale"),
        ({"model.nonsense": {"choices": [1, 2]}}, "model.nonsense", "model.nonsense"),
        ({"optimizer.learning_rate": {"low": 0.1}}, "optimizer.learning_rate", "low and high"),
        (
            {
                "optimizer.momentum": {"low": 0.0, "high": 0.9, "when": {"optimizer.name": "sgd"}},
                "optimizer.name": {"choices": ["sgd", "adam"]},
            },
            "when",
            "listed before",
        ),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(space, key, expected):
    with pytest.raises(ConfigError, match="studies.s.space") as info:
        plan_of(search_config(space))
    assert key in str(info.value) and expected in str(info.value)


def test_a_search_study_takes_no_listed_candidates():
    cfg = search_config()
    cfg["studies"]["s"]["factors"] = {"optimizer.learning_rate": [0.1]}
    with pytest.raises(ConfigError, match="no listed candidates in a search study"):
        plan_of(cfg)


def trials_fixture(request):
    rounds = run_search(request, [3, 3])
    scores = fake_scores(rounds)
    exps = {t["trial"]: f"e{t['trial']}" for r in rounds for t in r["trials"]}
    exps[5] = exps[4]  # a duplicate proposal is the same experiment
    metrics = {
        f"e{n}": {"status": "ok" if scores[n] is not None else "diverged",
                  "best_val_accuracy": scores[n]}
        for n in range(5)
    }  # fmt: skip
    return rounds, exps, metrics


def test_trials_are_ranked_best_first_diverged_last_and_the_retest_skips_duplicates():
    request = request_of(search_config())
    rounds, exps, metrics = trials_fixture(request)
    table = search.trials_table(request, rounds, exps, metrics)
    assert list(table["trial"]) == list(range(6))
    assert table.loc[1, "status"] == "diverged" and table.loc[1, "rank"] == 6
    scores = table["score"].to_numpy(dtype=float)
    assert np.allclose(table["best_so_far"], pd.Series(scores).cummax().ffill(), equal_nan=True)
    ok = table[table["status"] == "ok"].sort_values("rank")
    assert list(ok["score"]) == sorted(ok["score"], reverse=True)
    assert table.loc[5, "duplicate_of"] == 4
    reference = ok.iloc[0]["experiment"]  # the best trial is the reference's own setting
    chosen = search.retest_choice(table, rounds, 3, reference)["retest"]
    picked = [c["experiment"] for c in chosen]
    assert reference not in picked and len(set(picked)) == len(picked) == 3
    assert "e1" not in picked  # diverged: never re-tested
    assert [c["search_score"] for c in chosen] == sorted(
        (c["search_score"] for c in chosen), reverse=True
    )


def test_overstatement_is_the_search_score_minus_the_fresh_mean_with_the_t_interval():
    fresh = [0.80, 0.84, 0.82, 0.78]
    out = search.overstatement(0.9, fresh, higher=True)
    assert out["overstated"] == pytest.approx(0.9 - np.mean(fresh))
    low, high = stats.t.interval(0.95, len(fresh) - 1, np.mean(fresh), stats.sem(fresh))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.9 - high, 0.9 - low))
    # Lower is better (MAE): a search score below the fresh mean is an overstatement too.
    assert search.overstatement(1.0, [1.5, 1.7], higher=False)["overstated"] == pytest.approx(0.6)
    assert search.overstatement(0.9, [0.8], higher=True)["ci_low"] is None


def test_importance_is_fanova_with_a_bootstrap_interval():
    request = request_of(search_config(startup_trials=20))
    rounds = run_search(request, [4, 4, 4])
    scores = fake_scores(rounds)
    exps = {t["trial"]: f"e{t['trial']}" for r in rounds for t in r["trials"]}
    metrics = {f"e{n}": {"status": "ok" if s is not None else "diverged",
                         "best_val_accuracy": s} for n, s in scores.items()}  # fmt: skip
    table = search.trials_table(request, rounds, exps, metrics)
    found = search.importance(request, table).set_index("parameter")
    # momentum is missing where the optimizer is adam: left out; the others sum to 1
    assert "optimizer.momentum" not in found.index
    assert found["importance"].sum() == pytest.approx(1.0)
    # the score depends on the learning rate only
    assert found["importance"].idxmax() == "optimizer.learning_rate"
    assert (found["ci_low"] <= found["ci_high"]).all()
    few = search.importance(request, table.head(3))
    assert few["parameter"].isna().all() and "at least" in few["note"].iloc[0]


@pytest.mark.e2e
def test_e2e_a_search_proposes_the_same_trials_whatever_the_cores_and_a_raised_budget_trains_only_new_trials(
    tmp_path,
):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["repeats"] = 2
    cfg["datasets"]["d"]["subsample"] = 200
    cfg["studies"] = {"s": {"kind": "search", "baseline": "b", "search": {
        "trials": 4, "round_size": 2, "retest": 1, "startup_trials": 2},
        "space": {"optimizer.learning_rate": {"low": 0.01, "high": 0.5, "log": True},
                  "model.hidden": {"choices": [[8], [16]]}}}}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "--cores", "2")
    folder = tmp_path / "results/studies/s/search"
    rounds = {p.name: p.read_bytes() for p in sorted(folder.glob("round-*.json"))}
    assert sorted(rounds) == ["round-0.json", "round-1.json"]
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials["trial"]) == [0, 1, 2, 3] and list(trials["round"]) == [0, 0, 1, 1]
    runs = lambda: {p.parent.parent.name + "/" + p.parent.name: p.read_bytes()  # noqa: E731
                    for p in (tmp_path / "results/runs").glob("*/r*/metrics.json")}  # fmt: skip
    before = runs()
    # Proposed again in another directory with another number of cores, from the same trained
    # runs (copied: the trials are cached by content): the same bytes, and nothing trains.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(tmp_path / "config.yaml", again / "config.yaml")
    for part in ("runs", "data"):
        shutil.copytree(tmp_path / "results" / part, again / "results" / part)
    run_snakemake(again, "--cores", "1")
    proposed = again / "results/studies/s/search"
    assert {p.name: p.read_bytes() for p in sorted(proposed.glob("round-*.json"))} == rounds
    assert (proposed / "trials.csv").read_bytes() == (folder / "trials.csv").read_bytes()
    assert runs() == before
    copied = {p.parent.parent.name + "/" + p.parent.name: p.read_bytes()
              for p in (again / "results/runs").glob("*/r*/metrics.json")}  # fmt: skip
    assert copied == before  # nothing trained again
    # The report: the search view, its figure and a YAML block of the winner or best trial.
    html = (tmp_path / "results/report.html").read_text()
    assert 'id="search-s"' in html and "set:" in html and "Which keys mattered" in html
    assert ("Winner: trial" in html) != ("No winner" in html)
    # Raising the budget trains the new trials' r0 and nothing already trained.
    cfg["studies"]["s"]["search"]["trials"] = 6
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "--cores", "2")
    after = runs()
    assert {k: after[k] for k in before} == before
    table = pd.read_csv(folder / "trials.csv")
    new_r0 = {k for k in after if k.endswith("/r0")} - {k for k in before if k.endswith("/r0")}
    assert len(table) == 6 and new_r0 <= {f"{e}/r0" for e in table["experiment"].tail(2)}
    assert json.loads((folder / "round-2.json").read_text())["round"] == 2
    # Lowering it trains nothing.
    cfg["studies"]["s"]["search"]["trials"] = 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "--cores", "2")
    assert set(runs()) == set(after)
    assert Path(folder / "trials.csv").exists() and len(pd.read_csv(folder / "trials.csv")) == 4
