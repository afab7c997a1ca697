"""Adaptive search (study kind search): proposals, replay, ranking, re-test and the workflow."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, SNAKEMAKE, TINY_CONFIG, plan_of, run_snakemake
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


def killed_at_random_moments(workdir: Path, kills: int, seed: int) -> list[float]:
    """Start the workflow in `workdir` and SIGKILL it with all its jobs (a crash, not a
    Ctrl-C) after a random number of seconds, `kills` times, unlocking after each as a user
    would; returns the moments."""
    rng = random.Random(seed)
    moments = []
    for _ in range(kills):
        proc = subprocess.Popen(
            [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
             "--configfile", str(workdir / "config.yaml"), "--cores", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        moments.append(round(rng.uniform(3.0, 25.0), 1))
        try:
            proc.wait(timeout=moments[-1])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        run_snakemake(workdir, "--unlock")
    return moments


def search_files(workdir: Path) -> dict:
    """The search's files and every run's history, by path: what a rerun must reproduce."""
    found = {}
    for pattern in ("results/studies/s/search/*.json", "results/studies/s/search/*.csv",
                    "results/runs/*/*/history.csv", "results/runs/*/*/rung-e*.json"):  # fmt: skip
        for path in sorted(workdir.glob(pattern)):
            data = path.read_bytes()
            if path.name.startswith("rung-e"):  # apart from timing and host
                record = json.loads(data)
                data = json.dumps({k: v for k, v in record.items() if k not in ("timing", "host")})
            found[str(path.relative_to(workdir))] = data
    return found


@pytest.mark.e2e
def test_e2e_a_halving_search_is_the_same_after_kills_and_a_raised_budget_trains_only_new_trials(
    tmp_path,
):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["repeats"] = 2
    cfg["baselines"]["b"]["training"]["epochs"] = 4
    cfg["studies"] = {"s": {"kind": "search", "baseline": "b", "search": {
        "trials": 4, "round_size": 2, "retest": 1, "startup_trials": 2,
        "halving": {"min_epochs": 2, "eta": 2}},
        "space": {"optimizer.learning_rate": {"low": 0.01, "high": 0.5, "log": True},
                  "model.hidden": {"choices": [[8], [16]]}}}}  # fmt: skip
    first, killed = tmp_path / "first", tmp_path / "killed"
    for workdir in (first, killed):
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(first, "--cores", "2")
    folder = first / "results/studies/s/search"
    names = sorted(p.name for p in folder.glob("round-*.json"))
    assert names == ["round-0-rung-0.json", "round-0.json", "round-1-rung-0.json", "round-1.json"]
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials["trial"]) == [0, 1, 2, 3] and list(trials["round"]) == [0, 0, 1, 1]
    # each round: both trials train 2 epochs, the better one goes on to the full 4
    assert sorted(trials["status"]) == ["ok", "ok", "pruned", "pruned"]
    assert list(trials.sort_values("trial")["epochs"]) == [
        4 if s == "ok" else 2 for s in trials.sort_values("trial")["status"]
    ]
    for exp in trials.loc[trials["status"] == "ok", "experiment"]:
        log = (first / f"results/runs/{exp}/r0/train.log").read_text()
        assert "Resuming from the backup at epoch 2 " in log, log[-2000:]  # never from epoch 1
        assert len((first / f"results/runs/{exp}/r0/history.csv").read_text().splitlines()) == 5
    curves = pd.read_csv(folder / "curves.csv")
    assert curves.groupby("trial")["epoch"].max().to_dict() == dict(
        zip(trials["trial"], trials["epochs"])
    )
    reference = search_files(first)
    # Killed at random moments (SIGKILL, jobs and all) and rerun, with one core this time: the
    # same trials, rungs and results, byte for byte; no trial is repeated or lost.
    moments = killed_at_random_moments(killed, kills=3, seed=7)
    run_snakemake(killed, "--cores", "1")
    assert search_files(killed) == reference, f"killed at {moments} s"
    # The report: the search view, its figure and a YAML block of the winner or best trial.
    html = (first / "results/report.html").read_text()
    assert 'id="search-s"' in html and "set:" in html and "Which keys mattered" in html
    assert "Successive halving within each round" in html and "2 trials stopped at a rung" in html
    assert ("Winner: trial" in html) != ("No winner" in html)
    runs = lambda: {p.parent.parent.name + "/" + p.parent.name: p.read_bytes()  # noqa: E731
                    for p in (first / "results/runs").glob("*/r*/metrics.json")}  # fmt: skip
    before = runs()
    # Raising the budget trains the new round's trials and nothing already trained.
    cfg["studies"]["s"]["search"]["trials"] = 6
    (first / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(first, "--cores", "2")
    after = runs()
    assert {k: after[k] for k in before} == before
    table = pd.read_csv(folder / "trials.csv")
    new_r0 = {k for k in after if k.endswith("/r0")} - {k for k in before if k.endswith("/r0")}
    assert len(table) == 6 and new_r0 <= {f"{e}/r0" for e in table["experiment"].tail(2)}
    assert json.loads((folder / "round-2.json").read_text())["round"] == 2
    # Lowering it trains nothing.
    cfg["studies"]["s"]["search"]["trials"] = 4
    (first / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(first, "--cores", "2")
    assert set(runs()) == set(after)
    assert len(pd.read_csv(folder / "trials.csv")) == 4


# --------------------------------------------------------------------------- successive halving


def halving_config(startup_trials: int = 10, **halving) -> dict:
    cfg = search_config(halving={"min_epochs": 2, "eta": 2, **halving},
                        startup_trials=startup_trials)  # fmt: skip
    cfg["baselines"]["b"]["training"]["epochs"] = 8
    return cfg


def test_rungs_multiply_by_eta_below_the_full_budget_and_enter_the_request():
    assert search.rung_epochs({"min_epochs": 2, "eta": 2}, 8) == [2, 4]
    assert search.rung_epochs({"min_epochs": 1, "eta": 3}, 10) == [1, 3, 9]
    assert search.rung_epochs({"min_epochs": 8, "eta": 2}, 8) == []
    assert search.rung_epochs(None, 8) == []
    request = request_of(halving_config())
    assert request["halving"] == {"rungs": [2, 4], "eta": 2, "epochs": 8}
    # other rungs are another search: its rounds are not this one's
    other = request_of(halving_config(eta=3))
    assert search.request_key(other) != search.request_key(request)
    assert request_of(search_config())["halving"] is None
    assert [search.promoted_count(n, 3) for n in (1, 2, 3, 8, 9)] == [1, 1, 1, 2, 3]


def test_halving_refuses_epochs_in_the_space():
    cfg = halving_config()
    cfg["studies"]["s"]["space"]["training.epochs"] = {"low": 2, "high": 8}
    with pytest.raises(ConfigError, match="training.epochs outside the space"):
        plan_of(cfg)


def rung_records(scores: dict, epochs: int) -> dict:
    """Rung records of experiments e<n>: None scores diverged."""
    return {
        f"e{n}": {"status": "diverged" if s is None else "ok", "best_val_accuracy": s,
                  "epochs_run": epochs}
        for n, s in scores.items()
    }  # fmt: skip


def halve(request: dict, rounds: list, score) -> list:
    """The rung files of each round, each trial scored `score(trial, epochs)`."""
    out = []
    for k, rnd in enumerate(rounds):
        rungs = []
        for j, epochs in enumerate(search.rungs_of(request)):
            alive = search.alive_at(rnd, rungs, j)
            scores = {t: score(t, epochs) for t in alive}
            records = rung_records(scores, epochs)
            rungs.append(search.select_rung(request, k, j, {t: f"e{t}" for t in alive}, records))
        out.append(rungs)
    return out


def test_a_rung_promotes_the_best_half_and_never_a_diverged_trial():
    request = request_of(halving_config())
    (rnd,) = run_search(request, [4])
    numbers = [t["trial"] for t in rnd["trials"]]
    scores = dict(zip(numbers, [0.2, None, 0.9, 0.5]))
    rung = search.select_rung(request, 0, 0, {t: f"e{t}" for t in numbers},
                              rung_records(scores, 2))  # fmt: skip
    assert rung["epochs"] == 2 and rung["promoted"] == sorted([numbers[2], numbers[3]])
    assert rung["trials"][str(numbers[1])]["status"] == "diverged"
    # all diverged but one: only the scored one goes on (no diverged trial is ever promoted)
    scores = dict(zip(numbers, [None, None, None, 0.5]))
    rung = search.select_rung(request, 0, 0, {t: f"e{t}" for t in numbers},
                              rung_records(scores, 2))  # fmt: skip
    assert rung["promoted"] == [numbers[3]]
    # lower is better for a regression score: the smallest MAE goes on
    minimize = {**request, "direction": "minimize", "metric": "mae"}
    records = {f"e{t}": {"status": "ok", "best_val_mae": v, "epochs_run": 2}
               for t, v in zip(numbers, [3.0, 1.0, 2.0, 4.0])}  # fmt: skip
    rung = search.select_rung(minimize, 0, 0, {t: f"e{t}" for t in numbers}, records)
    assert rung["promoted"] == sorted([numbers[1], numbers[2]])


def test_pruned_trials_are_told_as_pruned_ranked_after_full_ones_and_never_retested():
    request = request_of(halving_config(startup_trials=2))
    lr = {}

    def score(t, epochs):  # a higher learning rate scores higher, more so with more epochs
        return None if t == 1 else 0.3 + 0.05 * epochs + 0.2 * math.log10(lr[t])

    rounds, rungs = [], []
    for size in (4, 4):
        outcomes_so_far = search.outcomes(request, rounds, rungs, exps_of(rounds),
                                          full_metrics(request, rounds, rungs, score))  # fmt: skip
        rounds.append(search.propose(request, rounds, outcomes_so_far, size))
        lr.update(
            {t["trial"]: t["params"]["optimizer.learning_rate"] for t in rounds[-1]["trials"]}
        )
        rungs = halve(request, rounds, score)
    # the same files propose the same trials again (the replay reports the rung scores and
    # tells pruned trials as pruned, as one sequential Optuna process would)
    again = search.propose(request, rounds[:1], search.outcomes(
        request, rounds[:1], rungs[:1], exps_of(rounds[:1]),
        full_metrics(request, rounds[:1], rungs[:1], score)), 4)  # fmt: skip
    assert again == rounds[1]
    metrics = full_metrics(request, rounds, rungs, score)
    table = search.trials_table(request, rounds, exps_of(rounds), metrics, rungs)
    full = table[table["status"] == "ok"]
    assert len(full) == 2 and set(full["epochs"]) == {8}  # 4 -> 2 -> 1 per round
    pruned = table[table["status"] == "pruned"]
    assert len(pruned) == 5 and set(pruned["epochs"]) <= {2, 4}
    assert table.loc[table["trial"] == 1, "status"].item() == "diverged"
    order = table.sort_values("rank")
    assert list(order["status"]) == ["ok"] * 2 + ["pruned"] * 5 + ["diverged"]
    assert list(order[order["status"] == "pruned"]["epochs"]) == sorted(
        pruned["epochs"], reverse=True
    )
    # best so far counts full-budget trials only
    assert table["best_so_far"].max() == pytest.approx(full["score"].max())
    chosen = search.retest_choice(table, rounds, 3, reference="none")["retest"]
    assert {c["trial"] for c in chosen} == set(full["trial"])


def exps_of(rounds: list) -> dict:
    return {t["trial"]: f"e{t['trial']}" for r in rounds for t in r["trials"]}


def full_metrics(request: dict, rounds: list, rungs: list, score) -> dict:
    """metrics.json of the trials that trained the full budget."""
    full = search.full_trials(request, rounds, rungs, exps_of(rounds))
    epochs = request["halving"]["epochs"]
    return rung_records({t: score(t, epochs) for t in full}, epochs)


def test_the_plan_reads_the_written_rungs_to_know_what_each_job_waits_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_of(halving_config())
    request = plan.studies["s"].search["request"]
    (rnd,) = run_search(request, [3])
    write = lambda path, data: (Path(path).parent.mkdir(parents=True, exist_ok=True),  # noqa: E731
                                Path(path).write_text(json.dumps(data)))  # fmt: skip
    write(plan.search_round_file("s", 0), rnd)
    found = plan.search_inputs("s", 1)
    trials = found["trials"]
    assert len(trials) == 3 and found["metrics"] == [] and found["stopped"] == []
    assert found["rungs"] == [plan.search_rung_file("s", 0, j) for j in (0, 1)]
    assert plan.rung_trials("s", 0, 0) == trials and plan.rung_trials("s", 0, 1) == {}
    records = rung_records({int(t): 0.1 * int(t) for t in trials}, 2)
    records = {trials[f"{n[1:]}"]: r for n, r in records.items()}
    rung0 = search.select_rung(request, 0, 0, trials, records)
    write(plan.search_rung_file("s", 0, 0), rung0)
    assert plan.rung_trials("s", 0, 1) == {str(t): trials[str(t)] for t in rung0["promoted"]}
    (best,) = rung0["promoted"]
    rung1 = search.select_rung(request, 0, 1, {str(best): trials[str(best)]},
                               {trials[str(best)]: {"status": "ok", "best_val_accuracy": 0.5,
                                                    "epochs_run": 4}})  # fmt: skip
    write(plan.search_rung_file("s", 0, 1), rung1)
    found = plan.search_inputs("s", 1)
    assert found["metrics"] == [search.trial_metrics(trials[str(best)])]
    pruned = {trials[t] for t in trials if int(t) != best}
    assert found["stopped"] == sorted(search.rung_record(e, 2) for e in pruned)
    # a search trial's r0 trains alone (never in a group), so its score never depends on it
    fused, grouped = plan.training_jobs(lambda exp, run: None)
    assert not any(f"{e}/r0" in g.members for g in grouped for e in trials.values())


@pytest.mark.e2e
def test_a_promoted_trial_resumes_from_its_rung_backups_and_equals_a_straight_run(tmp_path):
    """train_rung to 2 and 4 epochs, then the full run: the same history, byte for byte, as
    the run trained straight through (with Dropout, whose random state the backup keeps)."""
    from helpers import prepared_digits

    from hpstudy import training

    cfg = halving_config()
    cfg["baselines"]["b"]["model"]["dropout"] = {"rate": 0.2}
    plan = plan_of(cfg)
    exp = next(iter(plan.experiments.values()))
    spec = json.loads(exp.json)
    data = prepared_digits(tmp_path, spec["data"])
    outs = {}
    for name in ("halved", "straight"):
        run_dir = tmp_path / name / "r0"
        outs[name] = {k: str(run_dir / f"{k}.{ext}") for k, ext in
                      (("history", "csv"), ("timing", "csv"), ("metrics", "json"),
                       ("model", "keras"))}  # fmt: skip
    rungs = [training.train_rung(spec, data, tmp_path / "halved/r0" / f"rung-e{e}.json", 7,
                                 exp.id, e) for e in (2, 4)]  # fmt: skip
    assert [r["epochs_run"] for r in rungs] == [2, 4] and rungs[1]["timing"]["resumed_at"] == 2
    assert (tmp_path / "halved/r0/backup/state.npz").exists()
    training.train_run(spec, data, outs["halved"], 7, "r0", exp.id)
    training.train_run(spec, data, outs["straight"], 7, "r0", exp.id)
    halved, straight = (Path(outs[n]["history"]).read_bytes() for n in ("halved", "straight"))
    assert halved == straight and len(straight.splitlines()) == 9
    rows = pd.read_csv(outs["straight"]["history"])
    assert [r["val_accuracy"] for r in rungs[1]["rows"]] == pytest.approx(
        list(rows["val_accuracy"][:4]), rel=0, abs=0
    )
    assert not (tmp_path / "halved/r0/backup").exists()  # dropped once the run finished
    # a rung below a backup that is further on reads the backup, without training; a rung of a
    # finished run reads its history.csv: the same record either way
    training.train_rung(spec, data, tmp_path / "third/r0/rung-e4.json", 7, exp.id, 4)
    late = training.train_rung(spec, data, tmp_path / "third/r0/rung-e2.json", 7, exp.id, 2)
    assert late["timing"]["resumed_at"] == 4 and late["rows"] == rungs[0]["rows"]
    done = training.train_rung(spec, data, tmp_path / "straight/r0/rung-e2.json", 7, exp.id, 2)
    assert done["timing"]["resumed_at"] is None and done["rows"] == rungs[0]["rows"]
    same = ("best_val_accuracy", "status", "epochs_run", "finished")
    assert {k: done[k] for k in same} == {k: rungs[0][k] for k in same}
    assert not (tmp_path / "straight/r0/backup").exists()  # nothing trained, nothing left
