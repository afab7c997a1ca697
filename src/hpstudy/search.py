"""Adaptive search (study kind `search`): Optuna proposes trials in rounds; the best are re-tested.

No TensorFlow here. A search study declares a space over spec keys (built-in ones or a user
model's hyperparameters) and a budget. Its trials are ordinary content-hashed experiments: each
trains one run, `r0`, and is cached, deduplicated and sent to a cluster like any other.

**Rounds.** Trials are proposed `round_size` at a time, each round by the checkpoint
`search_round`, which writes `results/studies/<study>/search/round-<k>.json`. A round's
proposal is a pure function of the study's request (space, sampler, seed) and of the scores of
the earlier rounds' trials: `propose` starts a fresh in-memory Optuna study with the seeded
sampler, replays every earlier round (ask each trial in number order, check that the sampler
proposes the recorded values again, tell each its score), then asks the new round's trials.
That is exactly what one sequential, seeded Optuna process would do, so the proposals do not
depend on the number of cores, on the cluster or on the order in which jobs finish (Optuna
reseeds samplers under `n_jobs > 1`, and a resumed Optuna study repeats its start-up trials;
replaying from files avoids both). Killing the workflow loses at most unfinished trainings:
rounds are written atomically, and a round is proposed only once its predecessors are scored.

**Successive halving** (`search.halving`). Within each round, every trial first trains its r0
to the first rung's epochs (rule train_rung, which keeps the run's epoch backup); the checkpoint
`search_rung` compares the round's trials at once and promotes the best 1/eta, which continue
from their backup to the next rung, and the last ones to the full epochs (the ordinary `train`
job, resuming from the backup: its history is that of a run trained straight through). The
rungs are synchronous, so what they promote does not depend on the order jobs finish in. A
pruned trial is replayed to Optuna with its rung scores as intermediate values and told as
pruned, as Optuna's own pruners do; it ranks after the full-budget trials and is never re-tested.

**Scores.** A trial's score is its run's best validation value of the task's primary metric
(`best_val_accuracy`, `best_val_mae`), the number the verdicts compare. A trial whose run
diverged is told to Optuna as failed (the sampler does not model it) and ranks last.

**The re-test.** The search's best score is biased upward: it is the maximum of noisy trials
(the winner's curse). The checkpoint `select_search` ranks the trials and writes the `retest`
best distinct ones to `retest.json`; the plan then trains each of them, and the study's
reference, on fresh seeds: repeats r1..rN, which the search never saw (the search trained
r0). The study's summary compares them with the reference by the same machinery as every other
study (Welch's Δ with its CI, Holm over the re-tested trials, P(A>B), verdict). The report names
a winner only if it is detectably better than the reference on those fresh runs, and says how
much the search's own score overstated it.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import invalid
from .ids import short_hash
from .tasks import GREATER_IS_BETTER, metric_of

SAMPLERS = ("tpe", "random", "qmc")
# Bootstrap resamples of the trials for the importance's interval, and its coverage.
IMPORTANCE_BOOTSTRAP = 50
IMPORTANCE_LEVEL = 0.90
MIN_TRIALS_FOR_IMPORTANCE = 5


@dataclass(frozen=True)
class Param:
    """One dimension of a search space: a dotted spec path and its distribution.

    `kind` is "float", "int" or "categorical". A categorical dimension's choices are held as
    canonical JSON (Optuna's categorical values must be scalars; a choice may be a list, as
    `model.hidden: [[64], [64, 32]]`). `when` maps dotted paths to the values under which this
    dimension exists (a conditional key, such as momentum only under `optimizer.name: sgd`).
    """

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()
    when: tuple = ()  # ((path, (allowed JSON values...)), ...)

    def active(self, values: dict, reference: dict) -> bool:
        """Whether this dimension exists, given the values proposed so far and the reference."""
        for path, allowed in self.when:
            value = values[path] if path in values else reference.get(path)
            if json.dumps(value, sort_keys=True) not in allowed:
                return False
        return True

    def suggest(self, trial) -> Any:
        """Ask Optuna's `trial` for this dimension's value."""
        if self.kind == "categorical":
            return json.loads(trial.suggest_categorical(self.name, list(self.choices)))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def distribution(self):
        """The Optuna distribution of this dimension (for rebuilding trials)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def encode(self, value: Any) -> Any:
        """A proposed value as Optuna holds it (a categorical's choice as its JSON)."""
        return json.dumps(value, sort_keys=True) if self.kind == "categorical" else value


def parse_space(space: dict, path: list, files=()) -> list[Param]:
    """The dimensions of a study's `space` (config order), each checked; ConfigError names the
    key. A dimension is `{choices: [...]}` or `{low, high}` (`log: true` for a log scale; both
    bounds integers make an integer dimension), with an optional `when: {path: value(s)}`."""
    params = []
    for name, entry in space.items():
        at = [*path, name]
        when = tuple(
            (
                key,
                tuple(
                    json.dumps(v, sort_keys=True)
                    for v in (vals if isinstance(vals, list) else [vals])
                ),
            )
            for key, vals in entry.get("when", {}).items()
        )
        for key, _ in when:
            if key == name:
                raise invalid(files, [*at, "when", key], "a condition on another key", key)
        if "choices" in entry:
            if "low" in entry or "high" in entry or "log" in entry:
                raise invalid(files, at, "either choices or low/high (with log), not both", entry)
            choices = tuple(dict.fromkeys(json.dumps(c, sort_keys=True) for c in entry["choices"]))
            params.append(Param(name, "categorical", choices=choices, when=when))
            continue
        if "low" not in entry or "high" not in entry:
            raise invalid(files, at, "choices: [...], or low and high", entry)
        low, high, log = entry["low"], entry["high"], bool(entry.get("log", False))
        if not low < high:
            raise invalid(files, [*at, "high"], f"a number > low ({low})", high)
        if log and low <= 0:
            raise invalid(files, [*at, "low"], "a number > 0 on a log scale", low)
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        params.append(Param(name, kind, low, high, log, when=when))
    names = [p.name for p in params]
    for p in params:  # a condition on a searched key must come after it (define-by-run order)
        for key, _ in p.when:
            if key in names and names.index(key) > names.index(p.name):
                expected = f"`{key}` listed before `{p.name}` in the space (it conditions it)"
                raise invalid(files, [*path, p.name, "when"], expected, key)
    return params


def space_of(request: dict) -> list[Param]:
    return parse_space(dict(request["space"]), ["studies", request["study"], "space"])


def conditioned_paths(space: dict) -> list[str]:
    """The paths that `when` conditions read and the space does not search (sorted)."""
    read = {key for entry in space.values() for key in entry.get("when", {})}
    return sorted(read - set(space))


def make_request(name: str, cfg: dict, task: str, fixed: dict, epochs: int) -> dict:
    """What a search's proposals depend on, as plain data (the params of its round jobs).

    `fixed` holds the reference's values of `conditioned_paths` (None where it has none), so a
    changed reference re-proposes where a condition reads it. `epochs` is the reference's (the
    full budget a trial trains, and what successive halving's rungs divide)."""
    settings = cfg["search"]
    metric = metric_of(task)
    halving = settings.get("halving")
    return {
        "study": name,
        # pairs, not a mapping: the order is the proposal order, and canonical JSON sorts keys
        "space": [[key, entry] for key, entry in cfg["space"].items()],
        "sampler": settings["sampler"],
        "seed": settings["seed"],
        "startup_trials": settings["startup_trials"],
        "metric": metric,
        "direction": "maximize" if GREATER_IS_BETTER[metric] else "minimize",
        "reference": fixed,
        # successive halving: the rungs' epochs below the full budget, and the fraction kept
        "halving": (
            {"rungs": rung_epochs(halving, epochs), "eta": halving["eta"], "epochs": epochs}
            if halving
            else None
        ),
    }


def rung_epochs(halving: dict | None, epochs: int) -> list[int]:
    """The epochs at which successive halving compares a round's trials: `min_epochs`, then
    each times `eta`, while below `epochs` (the full budget, which the survivors train)."""
    rungs = []
    if halving:
        at = halving["min_epochs"]
        while at < epochs:
            rungs.append(at)
            at *= halving["eta"]
    return rungs


def rungs_of(request: dict) -> list[int]:
    """The request's rung epochs (none without successive halving)."""
    return (request.get("halving") or {}).get("rungs", [])


def promoted_count(alive: int, eta: int) -> int:
    """How many of `alive` trials a rung promotes: the best 1/eta of them (at least one)."""
    return max(1, alive // eta)


def request_key(request: dict) -> str:
    """The digest a round file records: a round of another request is not this search's."""
    return short_hash(request)


def round_sizes(settings: dict) -> list[int]:
    """The size of each round: `round_size` trials, the last one what is left of `trials`."""
    full, rest = divmod(settings["trials"], settings["round_size"])
    return [settings["round_size"]] * full + ([rest] if rest else [])


def make_sampler(request: dict):
    """The request's seeded Optuna sampler."""
    import optuna

    seed = request["seed"]
    if request["sampler"] == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=request["startup_trials"])
    if request["sampler"] == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def _optuna_study(request: dict):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction=request["direction"], sampler=make_sampler(request))


def _ask(study, space: list[Param], reference: dict) -> tuple[Any, dict]:
    trial = study.ask()
    values: dict = {}
    for param in space:
        if param.active(values, reference):
            values[param.name] = param.suggest(trial)
    return trial, values


def _finite(score) -> bool:
    return score is not None and math.isfinite(score)


def _tell(study, trial, outcome) -> None:
    """Tell Optuna a trial's outcome: a score (None: failed), or an `outcomes` entry, whose rung
    scores are reported as intermediate values and which is told as pruned if it stopped at a
    rung (Optuna then ranks it by its last rung's score, as its pruners' trials)."""
    from optuna.trial import TrialState

    if not isinstance(outcome, dict):
        outcome = {"state": "complete", "value": outcome, "steps": []}
    for epochs, score in outcome["steps"]:
        if _finite(score):
            trial.report(score, epochs)
    if outcome["state"] == "complete" and _finite(outcome["value"]):
        study.tell(trial, outcome["value"])
    elif outcome["state"] == "pruned" and _finite(outcome["value"]):
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


class ReplayError(RuntimeError):
    """The sampler no longer proposes what a round file recorded (another Optuna version, or an
    edited file)."""


def propose(request: dict, rounds: list[dict], scores: dict, size: int) -> dict:
    """Round `len(rounds)` of the search: `size` new trials, after replaying `rounds`.

    `rounds` are the earlier round files in order; `scores` maps a trial number to its score
    (None: diverged, or no finite score) or to its `outcomes` entry (successive halving).
    Returns the round file's content.
    """
    import optuna

    space, reference = space_of(request), request["reference"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
        study = _optuna_study(request)
        for k, previous in enumerate(rounds):
            asked = []
            for recorded in previous["trials"]:
                trial, values = _ask(study, space, reference)
                if trial.number != recorded["trial"] or values != recorded["params"]:
                    raise ReplayError(
                        f"round {k} of search {request['study']} recorded trial "
                        f"{recorded['trial']} as {recorded['params']}, but Optuna "
                        f"{optuna.__version__} now proposes trial {trial.number} as {values} "
                        f"(the round was proposed by Optuna {previous.get('optuna')}). Install "
                        "that version, or delete the study's search/ folder to search anew."
                    )
                asked.append((trial, recorded["trial"]))
            for trial, number in asked:
                _tell(study, trial, scores.get(number))
        trials = []
        for _ in range(size):
            trial, values = _ask(study, space, reference)
            trials.append({"trial": trial.number, "params": values})
    return {
        "study": request["study"],
        "round": len(rounds),
        "request": request_key(request),
        "sampler": request["sampler"],
        "seed": request["seed"],
        "optuna": optuna.__version__,
        "trials": trials,
    }


def score_of(metrics: dict, metric: str) -> float | None:
    """A trial's score from its run's metrics.json: None when it diverged or has none."""
    value = metrics.get(f"best_val_{metric}")
    if metrics.get("status") != "ok" or value is None or not math.isfinite(value):
        return None
    return float(value)


def select_rung(request: dict, k: int, j: int, alive: dict, records: dict) -> dict:
    """Rung `j` of round `k` (checkpoint search_rung): the trials `alive` there (number ->
    experiment) scored from their `records` (experiment -> its run's rung record, trained to the
    rung's epochs), and the best `promoted_count` of them with a finite score, which train on.

    Synchronous successive halving: a rung compares all of its round's trials at once, so what
    it promotes does not depend on the order in which their jobs finish (asynchronous halving,
    ASHA, promotes as results arrive, which makes the search depend on the cluster's timing).
    """
    halving = request["halving"]
    higher = request["direction"] == "maximize"
    entries = {}
    for t, exp in alive.items():
        record = records[exp]
        entries[int(t)] = {
            "score": score_of(record, request["metric"]),
            "status": str(record.get("status", "failed")),
            "epochs_run": record.get("epochs_run"),
        }
    signed = {t: e["score"] if higher or e["score"] is None else -e["score"]
              for t, e in entries.items()}  # fmt: skip
    order = sorted(entries, key=lambda t: _rank_key(signed[t], t))
    scored = [t for t in order if entries[t]["score"] is not None]
    return {
        "study": request["study"],
        "round": k,
        "rung": j,
        "epochs": halving["rungs"][j],
        "request": request_key(request),
        "trials": {str(t): entries[t] for t in sorted(entries)},
        "promoted": sorted(scored[: promoted_count(len(entries), halving["eta"])]),
    }


def alive_at(rnd: dict, rungs: list[dict], j: int) -> list[int] | None:
    """The trials of round `rnd` that rung `j` compares: all of them at rung 0, then those the
    rung before promoted (None while that rung is not written)."""
    if j == 0:
        return [t["trial"] for t in rnd["trials"]]
    return rungs[j - 1]["promoted"] if len(rungs) >= j else None


def completed(request: dict, rnd: dict, rungs: list[dict]) -> list[int] | None:
    """The trials of a round that train the full budget: all of them without halving, else
    those its last rung promoted (None while that rung is not written)."""
    n = len(rungs_of(request))
    return alive_at(rnd, rungs, n) if n else [t["trial"] for t in rnd["trials"]]


def outcomes(request: dict, rounds: list[dict], rungs: list[list[dict]], trials: dict,
             metrics: dict) -> dict:  # fmt: skip
    """Each trial of `rounds`, as far as it went: {trial: {"state", "value", "status",
    "epochs", "steps"}}.

    `rungs[k]` are round k's rung files in order (empty without halving); `trials` maps a trial
    number to its experiment and `metrics` an experiment to its r0 metrics.json, for the trials
    that trained the full budget. `state` is complete, pruned (stopped at a rung: `value` is its
    score there) or failed (no finite score); `steps` are its [epochs, score] at each rung it
    reached; `epochs` the epochs it ran.
    """
    found = {}
    for k, rnd in enumerate(rounds):
        full = set(completed(request, rnd, rungs[k]) or [])
        for t in rnd["trials"]:
            number = t["trial"]
            steps, last = [], None
            for rung in rungs[k]:
                if str(number) in rung["trials"]:
                    last = rung["trials"][str(number)]
                    steps.append([rung["epochs"], last["score"]])
            if number in full:
                m = metrics[trials[number]]
                value, status, epochs = (
                    score_of(m, request["metric"]),
                    m.get("status"),
                    m.get("epochs_run"),
                )
                state = "complete"
            else:
                value, status, epochs = last["score"], last["status"], last["epochs_run"]
                state = "pruned"
            found[number] = {
                "state": state if value is not None else "failed",
                "value": value,
                "status": "ok" if value is not None else str(status or "failed"),
                "epochs": epochs,
                "steps": steps,
            }
    return found


TRIAL_COLUMNS = ("trial", "round", "experiment", "score", "status", "epochs", "best_so_far",
                 "rank")  # fmt: skip


def trials_table(request: dict, rounds: list[dict], trials: dict, metrics: dict,
                 rungs: list[list[dict]] | None = None) -> pd.DataFrame:  # fmt: skip
    """trials.csv: one row per trial, in trial order.

    `trials` maps a trial number to its experiment id, `metrics` an experiment id to its r0
    metrics.json (the trials that trained the full budget), `rungs` each round's rung files
    (successive halving; none by default). Columns: trial, round, experiment, the space's keys
    (empty where a conditional key did not exist), score, status (ok; pruned: stopped at a rung,
    its score that rung's; diverged), epochs (trained), best_so_far (the best full-budget score
    of trials 0..n), rank (1 = best: full-budget trials by score, then pruned ones, those that
    went further first, then failed ones; ties by trial number) and `duplicate_of` (the first
    trial with the same experiment, if any).
    """
    higher = request["direction"] == "maximize"
    space = [p.name for p in space_of(request)]
    found = outcomes(request, rounds, rungs or [[] for _ in rounds], trials, metrics)
    rows, first = [], {}
    for rnd in rounds:
        for t in rnd["trials"]:
            exp, outcome = trials[t["trial"]], found[t["trial"]]
            rows.append({
                "trial": t["trial"],
                "round": rnd["round"],
                "experiment": exp,
                **{name: _cell(t["params"].get(name)) for name in space},
                "score": outcome["value"],
                "status": "pruned" if outcome["state"] == "pruned" else outcome["status"],
                "epochs": outcome["epochs"],
                "duplicate_of": first.get(exp),
            })  # fmt: skip
            first.setdefault(exp, t["trial"])
    table = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS[:3], *space, "score", "status", "epochs",
                                        "duplicate_of"])  # fmt: skip
    scores = pd.to_numeric(table["score"], errors="coerce")
    full = scores.where(table["status"] == "ok")
    table["best_so_far"] = (full.cummax() if higher else full.cummin()).ffill()
    signed = (scores if higher else -scores).tolist()
    # full-budget trials, then pruned ones (those that went further first), then failed ones
    ranked = [(0, 0) if r["status"] == "ok" else (1, -r["epochs"]) if r["status"] == "pruned"
              else (2, 0) for r in rows]  # fmt: skip
    order = sorted(
        range(len(table)), key=lambda i: (*ranked[i], *_rank_key(signed[i], rows[i]["trial"]))
    )
    table["rank"] = 0
    for rank, i in enumerate(order, start=1):
        table.loc[i, "rank"] = rank
    return table[[*TRIAL_COLUMNS[:3], *space, *TRIAL_COLUMNS[3:], "duplicate_of"]]


def _rank_key(signed: float, trial: int) -> tuple:
    """Best first (a larger signed score), failed trials last, ties by trial number."""
    failed = signed is None or math.isnan(signed)
    return (failed, 0.0 if failed else -signed, trial)


def _cell(value: Any) -> Any:
    """A proposed value as a trials.csv cell: lists as their JSON."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def retest_choice(table: pd.DataFrame, rounds: list[dict], k: int, reference: str) -> dict:
    """retest.json: the `k` best distinct experiments with a finite score (not the reference's),
    by rank, each with its trial number, params and search score."""
    params = {t["trial"]: t["params"] for rnd in rounds for t in rnd["trials"]}
    chosen, seen = [], {reference}
    for row in table.sort_values("rank").itertuples(index=False):
        if len(chosen) == k:
            break
        if row.status != "ok" or row.experiment in seen:
            continue
        seen.add(row.experiment)
        chosen.append({
            "trial": int(row.trial),
            "experiment": row.experiment,
            "params": params[int(row.trial)],
            "search_score": float(row.score),
        })  # fmt: skip
    return {"retest": chosen}


def trial_label(trial: int) -> str:
    """A re-tested trial's variant label."""
    return f"trial {trial}"


def importance(request: dict, table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """importance.csv: each searched key's fANOVA importance (Optuna's evaluator, normalised to
    sum to 1 over the keys every finished trial has) from the finished trials, with a
    bootstrap interval: the evaluator re-run on `IMPORTANCE_BOOTSTRAP` resamples of the trials
    (with replacement), the central `IMPORTANCE_LEVEL` of those values. Empty (with a `note`)
    when fewer than `MIN_TRIALS_FOR_IMPORTANCE` trials finished or fewer than 2 keys vary."""
    space = space_of(request)
    done = table[table["status"] == "ok"]
    columns = ["parameter", "importance", "ci_low", "ci_high", "trials", "note"]
    # Keys every finished trial has (a conditional key is left out where it is missing).
    keys = [p for p in space if done[p.name].notna().all()] if len(done) else []
    varying = [p for p in keys if done[p.name].astype(str).nunique() > 1]
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE or len(varying) < 2:
        note = (
            f"{len(done)} finished trials (at least {MIN_TRIALS_FOR_IMPORTANCE} needed)"
            if len(done) < MIN_TRIALS_FOR_IMPORTANCE
            else "fewer than 2 keys vary over the finished trials"
        )
        return pd.DataFrame([{"parameter": None, "note": note}], columns=columns)
    point = _fanova(request, done, varying, seed)
    rng = np.random.default_rng(seed)
    draws: dict = {p.name: [] for p in varying}
    for b in range(IMPORTANCE_BOOTSTRAP):
        sample = done.iloc[rng.integers(0, len(done), len(done))]
        # A key that does not vary in a resample explains none of its variance.
        keys = [p for p in varying if sample[p.name].astype(str).nunique() > 1]
        found = _fanova(request, sample, keys, seed + 1 + b) if keys else {}
        for p in varying:
            draws[p.name].append(found.get(p.name, 0.0))
    tail = (1 - IMPORTANCE_LEVEL) / 2
    rows = []
    for name, value in point.items():
        values = np.asarray(draws[name], dtype=float)
        rows.append({
            "parameter": name,
            "importance": float(value),
            "ci_low": float(np.quantile(values, tail)),
            "ci_high": float(np.quantile(values, 1 - tail)),
            "trials": len(done),
            "note": None,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _fanova(request: dict, rows: pd.DataFrame, keys: list[Param], seed: int) -> dict:
    """Optuna's fANOVA importances of `keys` over the trials in `rows` (normalised)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    dists = {p.name: p.distribution() for p in keys}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction=request["direction"])
        for record in rows.to_dict("records"):
            params = {p.name: p.encode(_uncell(record[p.name], p)) for p in keys}
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=dists, value=record["score"])
            )
        evaluator = FanovaImportanceEvaluator(seed=seed)
        return optuna.importance.get_param_importances(study, evaluator=evaluator)


def _uncell(value: Any, param: Param) -> Any:
    """A trials.csv cell back to the proposed value."""
    if param.kind == "categorical":
        return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value
    if param.kind == "int":
        return int(value)
    return float(value)


# The stages (one function per job; the rules in workflow/rules/search.smk call them) ----------


def trial_metrics(experiment: str) -> str:
    """The metrics.json of a trial's run (the search trains r0 of each trial's experiment)."""
    return f"results/runs/{experiment}/r0/metrics.json"


def trial_history(experiment: str) -> str:
    """The history.csv of a trial's run r0."""
    return f"results/runs/{experiment}/r0/history.csv"


def _read(path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_json(data: Any, path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def rung_record(experiment: str, epochs: int) -> str:
    """A trial's rung record: its run r0 trained to `epochs` (rule train_rung), whose epoch
    backup the next rung, or the full run, resumes from."""
    return f"results/runs/{experiment}/r0/rung-e{epochs}.json"


def by_round(rounds: list[dict], rung_files: list[dict]) -> list[list[dict]]:
    """The rung files of each round, in rung order."""
    rungs: list[list[dict]] = [[] for _ in rounds]
    for rung in sorted(rung_files, key=lambda r: (r["round"], r["rung"])):
        rungs[rung["round"]].append(rung)
    return rungs


def full_trials(request: dict, rounds: list[dict], rungs: list[list[dict]], trials: dict) -> dict:
    """{trial: experiment} of the trials that train the full budget, as far as the written
    rung files tell (`trials`: number -> experiment)."""
    out = {}
    for k, rnd in enumerate(rounds):
        for number in completed(request, rnd, rungs[k] if k < len(rungs) else []) or []:
            out[number] = trials[number]
    return out


def last_rungs(request: dict, rounds: list[dict], rungs: list[list[dict]], trials: dict) -> dict:
    """{trial: rung record path} of the trials that stopped at a rung (the last they reached)."""
    full = full_trials(request, rounds, rungs, trials)
    out = {}
    for k in range(len(rounds)):
        for rung in rungs[k]:
            for number in map(int, rung["trials"]):
                if number not in full:
                    out[number] = rung_record(trials[number], rung["epochs"])
    return out


def _outcomes_from_files(request: dict, rounds: list[dict], rung_paths: list, trials: dict):
    rungs = by_round(rounds, [_read(p) for p in rung_paths])
    full = full_trials(request, rounds, rungs, trials)
    metrics = {exp: _read(trial_metrics(exp)) for exp in set(full.values())}
    return rungs, metrics, outcomes(request, rounds, rungs, trials, metrics)


def write_round(request: dict, previous: list, rung_paths: list, trials: dict, size: int,
                out) -> dict:  # fmt: skip
    """Checkpoint search_round: propose the next round after the `previous` round files, whose
    trials (`trials`: number -> experiment) are scored from their runs (and, under successive
    halving, from their rounds' `rung_paths` files); write it to `out`."""
    rounds = [_read(p) for p in previous]
    trials = {int(t): exp for t, exp in trials.items()}
    _, _, found = _outcomes_from_files(request, rounds, rung_paths, trials)
    proposed = propose(request, rounds, found, size)
    _write_json(proposed, out)
    return proposed


def write_rung(request: dict, k: int, j: int, alive: dict, out) -> dict:
    """Checkpoint search_rung: rung `j` of round `k` (`select_rung`), from the rung records of
    the trials `alive` there (number -> experiment); write it to `out`."""
    epochs = request["halving"]["rungs"][j]
    records = {exp: _read(rung_record(exp, epochs)) for exp in set(alive.values())}
    chosen = select_rung(request, k, j, alive, records)
    _write_json(chosen, out)
    return chosen


CURVE_COLUMNS = ("trial", "experiment", "epoch", "value", "status")


def curves_table(request: dict, table: pd.DataFrame, histories: dict, rows: dict) -> pd.DataFrame:
    """curves.csv: each trial's validation curve of the score's metric (`val_<metric>`), epoch
    by epoch, as far as it trained: a full-budget trial's from its history.csv (`histories`:
    experiment -> frame), a pruned one's from its last rung record (`rows`: trial -> rows)."""
    column = f"val_{request['metric']}"
    out = []
    for record in table.to_dict("records"):
        trial = int(record["trial"])
        if trial in rows:
            frame = pd.DataFrame(rows[trial], columns=["epoch", column])
        else:
            frame = histories[record["experiment"]][["epoch", column]]
        for epoch, value in frame.itertuples(index=False):
            out.append((trial, record["experiment"], int(epoch), value, record["status"]))
    return pd.DataFrame(out, columns=CURVE_COLUMNS)


def select(request: dict, paths: list, rung_paths: list, trials: dict, k: int, reference: str,
           out: dict) -> dict:  # fmt: skip
    """Checkpoint select_search: `out["trials"]`, trials.csv (every trial, scored and ranked),
    `out["curves"]`, curves.csv (`curves_table`), and `out["retest"]`, retest.json (the `k`
    best distinct full-budget trials to train again on fresh seeds; never the `reference`)."""
    from .io import atomic_path

    rounds = [_read(p) for p in paths]
    trials = {int(t): e for t, e in trials.items()}
    rungs, metrics, _ = _outcomes_from_files(request, rounds, rung_paths, trials)
    table = trials_table(request, rounds, trials, metrics, rungs)
    stopped = {
        t: _read(path)["rows"] for t, path in last_rungs(request, rounds, rungs, trials).items()
    }
    histories = {exp: pd.read_csv(trial_history(exp)) for exp in metrics}
    for name, frame in (
        ("trials", table),
        ("curves", curves_table(request, table, histories, stopped)),
    ):
        with atomic_path(out[name]) as tmp:
            frame.to_csv(tmp, index=False)
    chosen = retest_choice(table, rounds, k, reference) | {"request": request_key(request)}
    _write_json(chosen, out["retest"])
    return chosen


def scales(request: dict) -> dict:
    """Each searched key's axis: log, linear or categorical (space order)."""
    return {
        p.name: "categorical" if p.kind == "categorical" else ("log" if p.log else "linear")
        for p in space_of(request)
    }


def read_trials(path) -> pd.DataFrame:
    return pd.read_csv(path)


def retested_trials(retest_json) -> list[int]:
    """The trial numbers a retest.json names."""
    return [t["trial"] for t in _read(retest_json)["retest"]]


def write_importance(request: dict, table: pd.DataFrame, out) -> pd.DataFrame:
    """importance.csv (`importance`), written atomically."""
    from .io import atomic_path

    found = importance(request, table)
    with atomic_path(out) as tmp:
        found.to_csv(tmp, index=False)
    return found


def overstatement(search_score: float, fresh, higher: bool, level: float = 0.95) -> dict:
    """How much a re-tested trial's search score overstated it: the search score minus the mean
    of its fresh runs (positive: the search was optimistic), with the `level` CI of that
    difference from the one-sample t interval of the fresh mean (scipy.stats.ttest_1samp; the
    search score is one fixed number). None-valued with fewer than 2 finite fresh runs."""
    from scipy import stats

    values = np.asarray([v for v in fresh if v is not None and math.isfinite(v)], dtype=float)
    sign = 1.0 if higher else -1.0
    out = {"fresh_mean": None, "overstated": None, "ci_low": None, "ci_high": None,
           "runs": int(values.size)}  # fmt: skip
    if values.size == 0:
        return out
    mean = float(values.mean())
    out.update(fresh_mean=mean, overstated=sign * (search_score - mean))
    if values.size >= 2 and np.ptp(values) > 0:
        ci = stats.ttest_1samp(values, popmean=search_score).confidence_interval(level)
        bounds = sorted(sign * (search_score - b) for b in (ci.low, ci.high))
        out.update(ci_low=float(bounds[0]), ci_high=float(bounds[1]))
    return out


def settings_yaml(params: dict, trial: int, study: str) -> str:
    """A trial's values as a YAML `set:` block, ready to paste into a study or a baseline."""
    import yaml

    head = f"# trial {trial} of search {study}: its values, as a study's `set`\n"
    return head + yaml.safe_dump({"set": params}, sort_keys=False, default_flow_style=None)
