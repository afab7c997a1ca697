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


def make_request(name: str, cfg: dict, task: str, fixed: dict) -> dict:
    """What a search's proposals depend on, as plain data (the params of its round jobs).

    `fixed` holds the reference's values of `conditioned_paths` (None where it has none), so a
    changed reference re-proposes where a condition reads it."""
    settings = cfg["search"]
    metric = metric_of(task)
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
    }


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


def _tell(study, trial, score: float | None) -> None:
    from optuna.trial import TrialState

    if score is None or not math.isfinite(score):
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, score)


class ReplayError(RuntimeError):
    """The sampler no longer proposes what a round file recorded (another Optuna version, or an
    edited file)."""


def propose(request: dict, rounds: list[dict], scores: dict, size: int) -> dict:
    """Round `len(rounds)` of the search: `size` new trials, after replaying `rounds`.

    `rounds` are the earlier round files in order; `scores` maps a trial number to its score
    (None: diverged, or no finite score). Returns the round file's content.
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


TRIAL_COLUMNS = ("trial", "round", "experiment", "score", "status", "best_so_far", "rank")


def trials_table(request: dict, rounds: list[dict], trials: dict, metrics: dict) -> pd.DataFrame:
    """trials.csv: one row per trial, in trial order.

    `trials` maps a trial number to its experiment id, `metrics` an experiment id to its r0
    metrics.json. Columns: trial, round, experiment, the space's keys (empty where a
    conditional key did not exist), score, status (ok / diverged), best_so_far (the best score
    of trials 0..n), rank (1 = best; ties by trial number; diverged trials last) and
    `duplicate_of` (the first trial with the same experiment, if any).
    """
    higher = request["direction"] == "maximize"
    space = [p.name for p in space_of(request)]
    rows, first = [], {}
    for rnd in rounds:
        for t in rnd["trials"]:
            exp = trials[t["trial"]]
            m = metrics[exp]
            score = score_of(m, request["metric"])
            rows.append({
                "trial": t["trial"],
                "round": rnd["round"],
                "experiment": exp,
                **{name: _cell(t["params"].get(name)) for name in space},
                "score": score,
                "status": "ok" if score is not None else str(m.get("status", "failed")),
                "duplicate_of": first.get(exp),
            })  # fmt: skip
            first.setdefault(exp, t["trial"])
    table = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS[:3], *space, "score", "status",
                                        "duplicate_of"])  # fmt: skip
    scores = pd.to_numeric(table["score"], errors="coerce")
    table["best_so_far"] = (scores.cummax() if higher else scores.cummin()).ffill()
    signed = (scores if higher else -scores).tolist()
    order = sorted(range(len(table)), key=lambda i: _rank_key(signed[i], rows[i]["trial"]))
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


def _read(path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_json(data: Any, path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_round(request: dict, previous: list, trials: dict, size: int, out) -> dict:
    """Checkpoint search_round: propose the next round after the `previous` round files, whose
    trials (`trials`: number -> experiment) are scored from their runs; write it to `out`."""
    rounds = [_read(p) for p in previous]
    scores = {
        int(t): score_of(_read(trial_metrics(exp)), request["metric"]) for t, exp in trials.items()
    }
    proposed = propose(request, rounds, scores, size)
    _write_json(proposed, out)
    return proposed


def select(request: dict, paths: list, trials: dict, k: int, reference: str, out_trials,
           out_retest) -> dict:  # fmt: skip
    """Checkpoint select_search: trials.csv (every trial, scored and ranked) and retest.json
    (the `k` best distinct trials to train again on fresh seeds; never the `reference`)."""
    from .io import atomic_path

    rounds = [_read(p) for p in paths]
    metrics = {exp: _read(trial_metrics(exp)) for exp in set(trials.values())}
    table = trials_table(request, rounds, {int(t): e for t, e in trials.items()}, metrics)
    with atomic_path(out_trials) as tmp:
        table.to_csv(tmp, index=False)
    chosen = retest_choice(table, rounds, k, reference) | {"request": request_key(request)}
    _write_json(chosen, out_retest)
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
