"""Turn a validated config into experiments, runs and studies.

Pure Python: no TensorFlow, no Snakemake. An **experiment** is a fully resolved spec named by a
hash of its content; a **run** is an experiment with a repeat (one seed) or a fold; a **study**
is one comparison, listing its **variants** and the runs of each. The same experiment appearing
in several studies is planned (and trained) once. Every check lives in `config`: this module
expands, and calls `config`'s checks where a resolved spec is needed.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import TRAINING_VERSION, checks, components, groups, search, userdata, usermodel
from . import config as loading
from .datasets import FILE_SOURCE, get_source, task_of
from .ids import canonical_json, derive_seed, format_value, parse_run, short_hash, slugify
from .stages import GridDesign, LRRangeView, StudyInfo

# Spec fields that are floats whatever the YAML says, so `0` and `0.0` hash alike.
FLOAT_PATHS = (
    ("model", "regularizer", "l1"),
    ("model", "regularizer", "l2"),
    ("model", "dropout", "rate"),
    ("optimizer", "momentum"),
    ("optimizer", "rho"),
    ("optimizer", "beta_1"),
    ("optimizer", "beta_2"),
    ("data", "scaler", "by"),
    ("data", "scaler", "target_by"),
)


def get_path(spec: dict, path: str) -> Any:
    """The value at dotted `path` of `spec`; KeyError if a part is missing."""
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def set_path(spec: dict, path: str, value: Any) -> None:
    """Set dotted `path` of `spec` to a copy of `value`, making missing parent sections."""
    parts = path.split(".")
    node = spec
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = copy.deepcopy(value)


def _number(value: Any) -> Any:
    """An int as a float (so `0` and `0.0` hash alike); bools, strings and None as they are."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: A numeric factor with at least this many values (the reference's included) gets a response plot.
RESPONSE_MIN_VALUES = 3


def _finite_number(value) -> float | None:
    """`value` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def response_factors(study: StudyInfo) -> list[str]:
    """The varied paths of a one-factor-at-a-time study whose values are numbers, with at least
    RESPONSE_MIN_VALUES of them among the reference and the variants that vary that path alone."""
    if study["kind"] != "ofat":
        return []
    return [
        path for path in study["varied"] if len(response_points(study, path)) >= RESPONSE_MIN_VALUES
    ]


def response_points(study: StudyInfo, path: str) -> list[tuple[float, str]]:
    """(value of `path`, variant label) of the reference and of each variant that differs from
    it in `path` only, sorted by value; none when a value is not a number."""
    ref = next((v for v in study["variants"] if v["is_reference"]), None)
    if ref is None:
        return []
    points = []
    for v in study["variants"]:
        others = {p: x for p, x in v["values"].items() if p != path}
        if others != {p: x for p, x in ref["values"].items() if p != path}:
            continue
        value = _finite_number(v["values"].get(path))
        if value is None:
            return []
        points.append((value, v["label"]))
    return sorted(points)


def normalise_optimizer(opt: dict) -> dict:
    """The optimizer section as the id sees it: the keys `components.OPTIMIZERS` fills with
    their Keras defaults, then any other argument only where it differs from its default
    (so a new key never changes an existing id), numbers as floats where Keras' are."""
    if opt["name"] == checks.COMPILED:
        return {"name": checks.COMPILED}
    lr = opt["learning_rate"]
    kept = {"name": opt["name"], "learning_rate": lr if isinstance(lr, str) else float(lr)}
    entry, args = components.OPTIMIZERS[opt["name"]], components.optimizer_args(opt["name"])
    for key, default in args.items():
        value = opt.get(key, default)
        if components.arg_type(key, default) == "number":
            value = _number(value)
        if key in entry.filled or value != default:
            kept[key] = value
    if opt.get("schedule"):
        kept["schedule"] = normalise_schedule(opt["schedule"], kept)
    return kept


def normalise_schedule(schedule: dict, opt: dict) -> dict:
    """A schedule with its defaults filled; PiecewiseConstantDecay's first value is the
    optimizer's learning rate (it has no initial rate of its own)."""
    entry = components.SCHEDULES[schedule["name"]]
    out = {"name": schedule["name"]}
    for key, default in entry.args.items():
        value = schedule.get(key, default)
        kind = components.schedule_type(entry, key)
        if kind == "number":
            value = _number(value)
        elif kind == "numbers" and isinstance(value, list):
            value = [_number(v) for v in value]
        out[key] = value
    if schedule["name"] == "piecewise_constant_decay" and isinstance(out["values"], list):
        opt["learning_rate"] = out["values"][0]
    return out


def _normalise(spec: dict) -> dict:
    """Cast float fields, give a user model's files by their SHA-256, and keep only the
    optimizer keys that apply, filling Keras' defaults."""
    for path in FLOAT_PATHS:
        node = spec
        for part in path[:-1]:
            node = node.get(part, {})
        if isinstance(node, dict) and path[-1] in node and isinstance(node[path[-1]], int):
            if not isinstance(node[path[-1]], bool):
                node[path[-1]] = float(node[path[-1]])
    if spec["model"]["kind"] == "python":
        spec["model"] = usermodel.identity(spec["model"])
        if checks.compiled_by_file(spec["model"]):
            spec["optimizer"] = {"name": checks.COMPILED}
    spec["optimizer"] = normalise_optimizer(spec["optimizer"])
    for key, callback in components.CALLBACKS.items():
        settings = spec["training"].get(key)
        if settings is not None:
            spec["training"][key] = {
                arg: _number(settings.get(arg, d)) if isinstance(d, float) else settings.get(arg, d)
                for arg, d in callback.args.items()
            }
    split = spec["data"]["split"]
    for key in ("test", "validation"):
        if isinstance(split[key], float) or (isinstance(split[key], int) and key == "test"):
            split[key] = float(split[key])
    return spec


class _Specified:
    """What a job needs of a resolved spec: its canonical JSON and the prepared data it reads."""

    spec: dict

    @property
    def json(self) -> str:
        return canonical_json(self.spec)

    @property
    def prep_id(self) -> str:
        return prep_id(self.spec["data"])


@dataclass(frozen=True)
class Experiment(_Specified):
    """A fully resolved spec, named by the hash of its content."""

    id: str
    spec: dict
    dataset: str  # the config's name for the data, for display only (not hashed)

    @property
    def task(self) -> str:
        return self.spec["data"]["task"]


def prep_id(data: dict) -> str:
    """The id of a prepared split: a hash of the spec's `data` section."""
    return short_hash(data, 8)


def run_data(spec: dict, repeat: int | None) -> dict:
    """The `data` section that repeat `repeat` of `spec` is prepared from.

    The spec's own, except with `repeats_vary: [init_and_order, split]`: there repeat k > 0
    draws its own validation rows, seeded by `derive_seed(split.seed, "split", k)`
    (`split.validation_seed`); its test rows, drawn with `split.seed`, stay those of repeat 0.
    """
    if not repeat or "split" not in spec.get("repeats_vary", ()):
        return spec["data"]
    data = copy.deepcopy(spec["data"])
    data["split"]["validation_seed"] = derive_seed(data["split"]["seed"], "split", repeat)
    return data


@dataclass(frozen=True)
class Run:
    """One training job: an experiment with a repeat, or with a cross-validation fold."""

    experiment: str
    name: str  # "r0", "r1", ... or "f0of2", "f1of2" (fold 0 and 1 of a 2-fold CV)
    repeat: int | None
    seed: int
    fold: int | None = None
    folds: int | None = None  # k of the k-fold CV; the fold's rows depend on it
    split_seed: int | None = None  # seed of the validation rows (the data split's seed, or own)
    prep: str | None = None  # its own prepared split (repeats_vary: split); None: the experiment's

    @property
    def kind(self) -> str:
        return "repeat" if self.fold is None else "fold"

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.name}"

    @property
    def dir(self) -> str:
        return f"results/runs/{self.experiment}/{self.name}"


#: What a training job writes per run; metrics.json last, so it exists only when the run is done.
RUN_FILES = ("history.csv", "timing.csv", "model.keras", "metrics.json")


def model_file_paths(spec: dict) -> list:
    """A user model's file and helper files (none for a built-in model)."""
    return usermodel.file_paths(spec["model"]) if spec["model"]["kind"] == "python" else []


def trained_with(run_dir: str | Path) -> tuple | None:
    """How the finished run in `run_dir` was trained: the runs of its fused job, `(name,)`
    when it trained alone, the members ("<experiment>/<run>") of its group when it trained
    with other experiments; None when it is not finished (a file missing or unreadable)."""
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in RUN_FILES):
        return None
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fused = metrics.get("fused") or {}
    if fused.get("members"):
        return tuple(fused["members"])
    runs = fused.get("runs")
    if runs is None:  # written before jobs recorded their runs: r0..r<R-1>, or alone
        count = (metrics.get("timing") or {}).get("fused_repeats")
        runs = [f"r{k}" for k in range(count)] if count else [run_dir.name]
    return tuple(runs)


def make_run(experiment: Experiment, name: str) -> Run:
    """The run `name` of an experiment, with its derived seed (`derive_seed`)."""
    parts = parse_run(name)
    seed = experiment.spec["training"]["seed"]
    split_seed = experiment.spec["data"]["split"]["seed"]
    if "repeat" in parts:
        repeat = parts["repeat"]
        data = run_data(experiment.spec, repeat)
        own = data is not experiment.spec["data"]
        return Run(
            experiment.id,
            name,
            repeat,
            derive_seed(seed, "repeat", repeat),
            split_seed=data["split"]["validation_seed"] if own else split_seed,
            prep=prep_id(data) if own else None,
        )
    fold = parts["fold"]
    return Run(
        experiment.id,
        name,
        None,
        derive_seed(seed, "fold", fold),
        fold,
        parts["folds"],
        split_seed=split_seed,
    )


@dataclass
class Variant:
    """One compared setting of a study: its label, its experiment and the varied values.

    The study's **reference** (its baseline with the study's `set` applied; labelled
    "baseline" in tables) has `is_reference` true: every other variant is compared with it.
    """

    label: str
    experiment: str
    values: dict  # dotted path -> value, for every path the study varies
    is_reference: bool = False


@dataclass
class Study:
    """One comparison: its variants and the runs of each (a study of the config's `studies`)."""

    name: str
    slug: str
    kind: str
    title: str
    description: str
    baseline: str
    task: str
    varied: list  # dotted paths the study varies
    variants: list = field(default_factory=list)
    runs: dict = field(default_factory=dict)  # variant label -> [Run]
    cv: int | None = None  # k of a cv study: the runs are folds, the winner is refit as r0
    lr_range: str | None = None  # the id of an lr_range study's test
    combine: list | None = None  # a combine study: the slugs of the ofat studies it combines
    combination: dict | None = None  # ... and their winners, once chosen (combination.json)
    search: dict | None = None  # a search study: its `SearchInfo` (trials, re-tested, once known)
    # Each entry's experiment, by label, those dropped as another variant's experiment included
    # (a grid cell that resolves to the reference's spec is the reference's experiment).
    cells: dict = field(default_factory=dict)

    @property
    def dir(self) -> str:
        return f"results/studies/{self.slug}"

    def all_runs(self) -> list:
        return [run for label in self.runs for run in self.runs[label]]

    def describe(self) -> StudyInfo:
        """What the aggregation and figure jobs need, as plain data (goes through params)."""
        return {
            "name": self.name,
            "slug": self.slug,
            "kind": self.kind,
            "title": self.title,
            "description": self.description,
            "baseline": self.baseline,
            "task": self.task,
            "varied": self.varied,
            "variants": [
                {
                    "label": v.label,
                    "experiment": v.experiment,
                    "values": v.values,
                    "is_reference": v.is_reference,
                    "runs": [
                        {
                            "run": r.name,
                            "repeat": r.repeat,
                            "seed": r.seed,
                            "split_seed": r.split_seed,
                            "dir": r.dir,
                        }
                        | ({"fold": r.fold, "folds": r.folds} if r.fold is not None else {})
                        for r in self.runs[v.label]
                    ],
                }
                for v in self.variants
            ],
        } | {
            key: getattr(self, key)
            for key in ("cv", "lr_range", "combine", "combination", "search")
            if getattr(self, key)
        }


@dataclass
class Plan:
    """Everything a config asks for: experiments, runs, studies, prepared splits, range tests.

    Built by `make_plan`; the workflow's `get_*` functions read it.
    """

    config: dict
    files: list
    experiments: dict = field(default_factory=dict)  # id -> Experiment
    runs: dict = field(default_factory=dict)  # "exp/rN" -> Run
    studies: dict = field(default_factory=dict)  # slug -> Study
    preps: dict = field(default_factory=dict)  # prep id -> (dataset name, data spec)
    lr_ranges: dict = field(default_factory=dict)  # lr_range test id -> LRRange
    # The builder that made the plan: it plans a combine study's winners once they are chosen.
    builder: Any = field(default=None, repr=False, compare=False)

    def find_run(self, experiment: str, name: str) -> Run:
        """A planned run, or one the graph asks for later (a cv study's refit, `r0`)."""
        key = f"{experiment}/{name}"
        return self.runs[key] if key in self.runs else make_run(self.experiments[experiment], name)

    def _chosen_studies(self) -> list:
        chosen = self.config.get("report", {}).get("studies") or list(self.studies)
        by_name = {s.name: s.slug for s in self.studies.values()}
        return [by_name.get(name, name) for name in chosen]

    def report_studies(self, kind: str | None = None) -> list:
        """Slugs of the studies with runs that the report shows (lr_range ones have their own
        view), in report order; only those of `kind` when given."""
        return [
            s
            for s in self._chosen_studies()
            if self.studies[s].kind != "lr_range" and kind in (None, self.studies[s].kind)
        ]

    def report_response_studies(self) -> list:
        """The ofat studies the report shows with a response figure: a numeric factor with three
        or more values (`response_factors`)."""
        return [
            s for s in self.report_studies("ofat") if response_factors(self.studies[s].describe())
        ]

    def report_grid_studies(self) -> list:
        """The studies the report shows that have a grid (grid studies, a cv study's grid)."""
        return [s for s in self.report_studies() if self.grid_design(s)["factors"]]

    def user_files(self) -> dict:
        """Users' own files by the name of the canonical .npz each converts to (`file-<digest>`):
        {name: (dataset, data spec)}."""
        return {
            userdata.canonical_name(data): (name, data)
            for name, data in self.preps.values()
            if data["source"] == FILE_SOURCE
        }

    def downloads(self) -> list:
        """The sources of the config's datasets fetched from the network (one download rule each)."""
        return sorted({
            ds["source"]
            for ds in self.config["datasets"].values()
            if ds["source"] != FILE_SOURCE and get_source(ds["source"]).files
        })  # fmt: skip

    def refit_experiment(self, slug: str, winner: str | Path) -> str:
        """The experiment a cv study's winner.json names (its refit trains r0 of it); ValueError
        when that is not an experiment of this plan (a selection made with another config)."""
        exp = json.loads(Path(winner).read_text(encoding="utf-8"))["experiment"]
        if exp not in self.experiments:
            raise ValueError(
                f"{winner} names experiment {exp}, which is not a candidate of study {slug} any "
                f"more. Expected a selection made with this config: delete {winner} and run again."
            )
        return exp

    def report_description(self, studies: list) -> dict:
        """The report job's params: the studies (`Study`, combinations planned), the config files
        by relative name (a checkout moved elsewhere must not rebuild the report), the specs of
        the experiments shown, the range tests, each grid's factors and what was not fused."""
        used = {v.experiment for s in studies for v in s.variants}
        return {
            "title": self.config["title"],
            "studies": [s.describe() for s in studies],
            "config_files": {
                os.path.relpath(f): Path(f).read_text(encoding="utf-8") for f in self.files
            },
            "experiments": {e: self.experiments[e].spec for e in sorted(used)},
            "lr_ranges": self.lr_range_views(),
            "grids": {s.slug: self.grid_design(s.slug)["factors"] for s in studies},
            "not_fused": {e: why for e, why in sorted(self.not_fused().items()) if e in used},
        }

    def report_lr_ranges(self) -> list:
        """Slugs of the lr_range studies that the report shows."""
        return [s for s in self._chosen_studies() if self.studies[s].kind == "lr_range"]

    def load_combinations(self) -> None:
        """Plan each combine study's winners from its combination.json, where an earlier run chose
        them: a job started on a cluster node re-reads the Snakefile and must know the combined
        experiment as the submitting host does."""
        for study in self.studies.values():
            chosen = Path(study.dir) / "combination.json"
            if study.kind == "combine" and chosen.exists():
                self.add_combination(study.slug, json.loads(chosen.read_text(encoding="utf-8")))

    def grid_design(self, slug: str) -> GridDesign:
        """The study's grid as the plan expands it: its factors (config order) and its cells,
        each `[label, [value of each factor], experiment]`, the experiment the cell resolved to
        (another variant's when the plan dropped the cell as a duplicate); a study without a grid
        has no factor."""
        study = self.studies[slug]
        cfg = self.config["studies"][study.name]
        if study.kind not in ("grid", "cv") or not cfg.get("grid"):
            return {"factors": [], "cells": []}
        factors = list(cfg["grid"])
        cells = [
            [label, [overrides[f] for f in factors], study.cells[label]]
            for label, overrides, _ in grid_entries(cfg, [])
        ]
        return {"factors": factors, "cells": cells}

    def lr_range_views(self) -> list[LRRangeView]:
        """What the report's range-test view shows of each lr_range study, as plain data: the
        study, its test's spec and the (study, variant, experiment) that use its suggestion."""
        out = []
        for slug in self.report_lr_ranges():
            study = self.studies[slug]
            test = self.lr_ranges[study.lr_range]
            users = [
                {"study": s, "variant": v, "experiment": e}
                for s, v, e in self.lr_range_users(test.id)
            ]
            out.append(study.describe() | {"spec": test.spec, "used_by": users})
        return out

    def fused_mem_mb(self, experiment: str, towers: int) -> int:
        """A fused job's memory (MB): `resources.mem_mb` holds the framework and one model; each
        further tower adds its own parameters, optimizer slots, activations and data (the
        planner's estimate, `config.estimate_memory`)."""
        tower = checks.estimate_memory(self.experiments[experiment].spec)["bytes"] / 2**20
        return self.config["resources"]["mem_mb"] + math.ceil((towers - 1) * tower)

    def fused_runtime(self, towers: int, attempt: int) -> int:
        """A fused job's minutes: `resources.runtime` is one run's; R towers do R runs'
        arithmetic in one job, so it asks for R times that (an upper bound: the benchmarks
        measure 0.15-0.62 x R), and each retry one more such span."""
        return self.config["resources"]["runtime"] * towers * attempt

    def add_combination(self, slug: str, combination: dict) -> bool:
        """Plan a combine study's winners and their combination (see `_Builder.add_combination`).

        `combination` is the study's combination.json. Returns whether anything changed.
        """
        study = self.studies[slug]
        if study.combination == combination:
            return False
        self.builder.add_combination(study, combination)
        return True

    def search_round_file(self, slug: str, k: int) -> str:
        """Where round `k` of a search study is written (checkpoint search_round)."""
        return f"{self.studies[slug].dir}/search/round-{k}.json"

    def search_retest_file(self, slug: str) -> str:
        return f"{self.studies[slug].dir}/search/retest.json"

    def add_search_rounds(self, slug: str, rounds: list[dict]) -> dict:
        """Plan the trials of search rounds (`search.propose`'s round files); returns
        {trial number (a string): experiment} of their trials."""
        study = self.studies[slug]
        for proposed in rounds:
            self.builder.add_search_round(study, proposed)
        trials = study.search["trials"]
        return {str(t["trial"]): trials[str(t["trial"])] for r in rounds for t in r["trials"]}

    def reference_experiment(self, slug: str) -> str:
        """The experiment of a study's reference variant."""
        return next(v.experiment for v in self.studies[slug].variants if v.is_reference)

    def add_search_retest(self, slug: str, chosen: dict) -> bool:
        """Plan a search study's re-test from its retest.json; returns whether anything changed."""
        study = self.studies[slug]
        if study.search["retested"] == chosen["retest"] and len(study.variants) > 1:
            return False
        self.builder.add_search_retest(study, chosen)
        return True

    def written_rounds(self, slug: str, k: int | None = None) -> list[dict]:
        """The round files 0..k-1 (all by default) of a search study that earlier jobs wrote for
        the current request, up to the first one missing (its job runs first)."""
        study = self.studies[slug]
        key = search.request_key(study.search["request"])
        rounds = []
        for j in range(len(study.search["rounds"]) if k is None else k):
            proposed = _read_json(Path(self.search_round_file(slug, j)))
            if proposed is None or proposed.get("request") != key:
                break
            rounds.append(proposed)
        return rounds

    def search_rung_file(self, slug: str, k: int, j: int) -> str:
        """Where rung `j` of round `k` of a search study is written (checkpoint search_rung)."""
        return f"{self.studies[slug].dir}/search/round-{k}-rung-{j}.json"

    def written_rungs(self, slug: str, k: int) -> list[dict]:
        """The rung files of round `k` that earlier jobs wrote for the current request, in
        order, up to the first one missing."""
        request = self.studies[slug].search["request"]
        key, rungs = search.request_key(request), []
        for j in range(len(search.rungs_of(request))):
            rung = _read_json(Path(self.search_rung_file(slug, k, j)))
            if rung is None or rung.get("request") != key:
                break
            rungs.append(rung)
        return rungs

    def search_inputs(self, slug: str, k: int | None = None) -> dict:
        """What a job that scores the trials of rounds 0..k-1 (all by default) reads, as far as
        the written round and rung files tell (a job waits for those missing, and its inputs are
        evaluated again once they are written): `rounds` and `rungs`, their files; `metrics` and
        `histories`, those of the trials that trained the full budget; `stopped`, the last rung
        record of each trial that stopped at a rung; `trials`, {trial: experiment}."""
        study = self.studies[slug]
        request = study.search["request"]
        n = len(study.search["rounds"]) if k is None else k
        rounds = self.written_rounds(slug, n)
        trials = {int(t): e for t, e in self.add_search_rounds(slug, rounds).items()}
        rungs = [self.written_rungs(slug, j) for j in range(len(rounds))]
        full = sorted(set(search.full_trials(request, rounds, rungs, trials).values()))
        return {
            "rounds": [self.search_round_file(slug, j) for j in range(n)],
            "rungs": [
                self.search_rung_file(slug, j, r)
                for j in range(n)
                for r in range(len(search.rungs_of(request)))
            ],
            "metrics": [search.trial_metrics(exp) for exp in full],
            "histories": [search.trial_history(exp) for exp in full],
            "stopped": sorted(set(search.last_rungs(request, rounds, rungs, trials).values())),
            "trials": {str(t): e for t, e in sorted(trials.items())},
        }

    def rung_trials(self, slug: str, k: int, j: int) -> dict:
        """{trial: experiment} of the trials that rung `j` of round `k` compares (empty while
        the round or the rung before it is not written)."""
        rounds = self.written_rounds(slug, k + 1)
        if len(rounds) <= k:
            return {}
        trials = self.add_search_rounds(slug, rounds)
        alive = search.alive_at(rounds[k], self.written_rungs(slug, k), j)
        return {str(t): trials[str(t)] for t in alive or []}

    def search_trial_experiments(self) -> set:
        """The experiments of the search trials planned so far (their r0 trains alone)."""
        return {
            exp
            for study in self.studies.values()
            if study.kind == "search"
            for exp in study.search["trials"].values()
        }

    def load_searches(self) -> None:
        """Plan each search study's rounds and re-test from the files an earlier run wrote, where
        they belong to the current request (a job started on a cluster node re-reads the
        Snakefile and must know the trials' experiments as the submitting host does)."""
        for study in self.studies.values():
            if study.kind != "search":
                continue
            key = search.request_key(study.search["request"])
            self.add_search_rounds(study.slug, self.written_rounds(study.slug))
            chosen = _read_json(Path(self.search_retest_file(study.slug)))
            if chosen is not None and chosen.get("request") == key:
                self.add_search_retest(study.slug, chosen)

    def fused_repeats(self) -> dict:
        """Experiment id -> R, for the experiments whose repeats r0..r<R-1> train in one job.

        Those with two or more repeats, when `execution.fuse_repeats` is on (TensorBoard logs are
        written per job, so they keep one job per repeat). A cv study's fold runs never fuse.
        """
        if not self.config["execution"]["fuse_repeats"] or self.config["logging"]["tensorboard"]:
            return {}
        unfused = self.not_fused()
        return {exp: n for exp, n in self._repeat_counts().items() if exp not in unfused}

    def _repeat_counts(self, minimum: int = 2) -> dict:
        """Experiment -> its planned repeats, for those with `minimum` or more."""
        counts: dict = {}
        for run in self.runs.values():
            if run.repeat is not None:
                counts[run.experiment] = counts.get(run.experiment, 0) + 1
        return {exp: n for exp, n in counts.items() if n >= minimum}

    def fused_jobs(self, trained_with) -> dict:
        """Experiment -> its fused jobs, each the tuple of runs it trains together (r0, r1, ...).

        Which repeats train together depends on what is finished, so that raising `repeats`
        trains only the new ones and lowering it trains nothing. `trained_with(exp, run)` is how
        a finished run was trained (the runs of its job, see :func:`trained_with`), None when
        it is not finished. A finished run keeps the job that trained it: a fused job whose
        runs are all finished stays as it was (with repeats beyond today's `repeats` too), and a
        run trained alone stays with `train`. The repeats left form one new job; one left alone
        is a `train` job. So the jobs of a finished run never change, and neither do their
        params, inputs or outputs, which is what Snakemake compares to decide a rerun.
        The repeats left of experiments that fuse with others (`training_jobs`) are not here.
        """
        return self.training_jobs(trained_with)[0]

    def training_jobs(self, trained_with, read_record=None) -> tuple[dict, list]:
        """(`fused_jobs`, the groups): the fused jobs of single experiments, and the jobs that
        train runs of several experiments together (`groups.GroupJob`, see `hpstudy.groups`).

        A run a group trained (`trained_with` gives the group's members, "<exp>/<run>") keeps
        its group, rebuilt from the group's record (`read_record(name)`, job.json); without a
        readable record it is trained again. The runs left to train of the experiments that
        share a `groups.fuse_key` form new groups (`execution.fuse_experiments`).
        """
        execution = self.config["execution"]
        if not execution["fuse_repeats"] or self.config["logging"]["tensorboard"]:
            return {}, []
        jobs, left_of, kept = {}, {}, {}
        unfused = self.not_fused()
        # One repeat too: lowered to 1, r0 still comes from the fused job that trained it.
        counts = self._repeat_counts(minimum=1)
        # A search trial's r0 trains alone (`train`), whether or not it was interrupted, so its
        # score, which the next rounds' proposals read, never depends on how it was fused; under
        # successive halving it also resumes from its rung's backup.
        searched = self.search_trial_experiments()
        for exp, n in ((e, n) for e, n in counts.items() if e not in unfused):
            done, covered = [], set()
            for name in (f"r{k}" for k in range(n)):
                runs = None if name in covered else trained_with(exp, name)
                if runs is None and name == "r0" and exp in searched:
                    covered.add(name)
                if runs is None:
                    continue
                if any("/" in r for r in runs):  # trained in a group of experiments
                    if self._keep_group(runs, trained_with, read_record, kept):
                        covered.add(name)
                elif len(runs) > 1 and all(trained_with(exp, r) == runs for r in runs):
                    done.append(runs)
                    covered.update(runs)
                    self._keep_preps(exp, runs)
                elif runs == (name,):
                    covered.add(name)
            left_of[exp] = tuple(f"r{k}" for k in range(n) if f"r{k}" not in covered)
            jobs[exp] = done
        new = []
        if execution["fuse_experiments"]:
            keys = {exp: self._group_key(exp) for exp in left_of}
            for exps in groups.pack(left_of, keys.get, execution["max_towers"]):
                new.append(self._new_group(exps, left_of))
                left_of.update({exp: () for exp in exps})
        for exp, left in left_of.items():
            if len(left) > 1:
                jobs[exp].append(left)
        return {e: j for e, j in jobs.items() if j}, new + [g for g in kept.values() if g]

    def _keep_group(self, members: tuple, trained_with, read_record, kept: dict) -> bool:
        """Whether the group of `members` is kept (its record read, once, into `kept`)."""
        name = groups.group_name(members)
        if name not in kept:
            record = read_record(name) if read_record else None
            kept[name] = None
            if record is not None and tuple(record["members"]) == tuple(members):
                finished = [m for m in members if trained_with(*m.split("/")) == tuple(members)]
                kept[name] = groups.kept_group(record, finished)
                for prep, (dataset, data) in kept[name].preps.items():
                    self.preps.setdefault(prep, (dataset, data))
        return kept[name] is not None

    def _new_group(self, exps: list, left_of: dict) -> groups.GroupJob:
        """The job that trains the runs left of `exps` together."""
        runs = [self.find_run(exp, name) for exp in exps for name in left_of[exp]]
        members = [f"{run.experiment}/{run.name}" for run in runs]
        specs = [self.experiments[run.experiment].spec for run in runs]
        preps = {}
        for run in runs:
            prep = run.prep or self.experiments[run.experiment].prep_id
            preps[prep] = [self.preps[prep][0], self.preps[prep][1]]
        return groups.GroupJob(
            name=groups.group_name(members),
            members=tuple(members),
            params=canonical_json(
                {"members": members, "specs": specs, "seeds": [run.seed for run in runs]}
            ),  # fmt: skip
            data=tuple(
                self.data_file(run.prep or self.experiments[run.experiment].prep_id) for run in runs
            ),  # fmt: skip
            code=tuple(dict.fromkeys(p for spec in specs for p in model_file_paths(spec))),
            preps=preps,
            outputs=tuple(members),
            new=True,
            towers=len(members),
        )

    def data_file(self, prep: str) -> str:
        """The prepared data of a prep id: `results/data/<dataset>-<prep>.npz`."""
        return f"results/data/{self.preps[prep][0]}-{prep}.npz"

    def group_mem_mb(self, job: groups.GroupJob) -> int:
        """A group's memory (MB): `resources.mem_mb` holds the framework and one tower; each
        further tower adds its own estimated need (`checks.estimate_memory`)."""
        specs = json.loads(job.params)["specs"]
        towers = sum(checks.estimate_memory(spec)["bytes"] for spec in specs[1:]) / 2**20
        return self.config["resources"]["mem_mb"] + math.ceil(towers)

    def _keep_preps(self, exp: str, runs: tuple) -> None:
        """Plan the own prepared splits of a kept job's repeats beyond today's `repeats`."""
        experiment = self.experiments[exp]
        for name in runs:
            run = self.find_run(exp, name)
            if run.prep:
                data = run_data(experiment.spec, run.repeat)
                self.preps.setdefault(run.prep, (experiment.dataset, data))

    def not_fused(self) -> dict:
        """Experiment -> why its repeats train as separate runs although fusing is on: the
        registry's answer for its model, optimizer and callbacks (`components.fuse_answer`)."""
        if not self.config["execution"]["fuse_repeats"] or self.config["logging"]["tensorboard"]:
            return {}
        out = {}
        for exp in self._repeat_counts():
            reason = self._unfused_reason(exp)
            if reason:
                out[exp] = reason
        return out

    def _unfused_reason(self, exp: str) -> str | None:
        spec = self.experiments[exp].spec
        model = None
        if spec["model"]["kind"] == "python":
            model = usermodel.facts_of(spec["model"]).unstackable
        return components.fuse_answer(spec, model)

    def _group_key(self, exp: str) -> str | None:
        """The experiment's `groups.fuse_key`, None if its runs cannot be stacked at all."""
        spec = self.experiments[exp].spec
        return None if self._unfused_reason(exp) else groups.fuse_key(spec)

    def lr_range_users(self, test_id: str) -> list:
        """(study title, variant label, experiment id) of every variant that takes the suggestion."""
        return [
            (study.title, v.label, v.experiment)
            for study in self.studies.values()
            for v in study.variants
            if lr_range_of(self.experiments[v.experiment].spec) == test_id
        ]


def lr_range_of(spec: dict) -> str | None:
    """The id of the range test whose suggestion is the spec's learning rate, if it takes one."""
    lr = spec["optimizer"].get("learning_rate")
    return lr.rsplit("@", 1)[1] if isinstance(lr, str) and "@" in lr else None


@dataclass(frozen=True)
class LRRange(_Specified):
    """A learning-rate range test of a study's reference: `results/lr_range/<id>/`."""

    id: str
    spec: dict
    dataset: str
    baseline: str

    @property
    def dir(self) -> str:
        return f"results/lr_range/{self.id}"


def resolve_baseline(config: dict, name: str) -> tuple[dict, str]:
    """The baseline's complete spec (data settings inlined from `datasets`) and its dataset name."""
    base = config["baselines"][name]
    dataset = base["dataset"]
    ds = config["datasets"][dataset]
    spec = {
        "data": {
            "source": ds["source"],
            "task": task_of(ds),
            # A user's file enters by its bytes (SHA-256) and columns, never by its path.
            **({"file": userdata.identity(ds)} if ds["source"] == FILE_SOURCE else {}),
            "split": copy.deepcopy(ds["split"]),
            "scaler": copy.deepcopy(ds["scaler"]),
            "subsample": ds["subsample"],
        },
        "model": copy.deepcopy(base["model"]),
        "optimizer": copy.deepcopy(base["optimizer"]),
        "training": copy.deepcopy(base["training"]),
        # In the id: the same seed gives different numbers on another backend.
        "keras_backend": config["keras_backend"],
        "version": TRAINING_VERSION,
    }
    return _normalise(spec), dataset


# A study's candidate before it is resolved: (label, overrides of the reference, config path).
Entry = tuple[str, dict, list]


def ofat_entries(cfg: dict, path: list) -> list[Entry]:
    """One entry per value of each factor, then one per listed variant."""
    entries = []
    for key, values in cfg["factors"].items():
        short = key.rsplit(".", 1)[-1]
        for i, value in enumerate(values):
            entries.append(
                (f"{short}={format_value(value)}", {key: value}, [*path, "factors", key, i])
            )
    for i, v in enumerate(cfg["variants"]):
        entries.append((v["label"], v["set"], [*path, "variants", i, "set"]))
    return entries


def grid_entries(cfg: dict, path: list) -> list[Entry]:
    """One entry per cell of the cartesian product of the grid's value lists."""
    keys = list(cfg["grid"])
    entries = []
    for combo in itertools.product(*(cfg["grid"][k] for k in keys)):
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in zip(keys, combo))
        entries.append((label, dict(zip(keys, combo)), [*path, "grid"]))
    return entries


def cv_entries(cfg: dict, path: list) -> list[Entry]:
    """A cv study takes candidates in every form: factors, variants and a grid."""
    return ofat_entries(cfg, path) + grid_entries(cfg, path)


# Study kind -> its candidates. An lr_range study has none: it plans one range test instead.
KIND_ENTRIES = {"ofat": ofat_entries, "grid": grid_entries, "cv": cv_entries}


class _Builder:
    """Expands the config's studies into a Plan, planning each distinct experiment once."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.config = plan.config
        self.files = plan.files
        self.lr_tests: dict[str, LRRange] = {}  # lr_range study name -> its test
        self.lr_by_baseline: dict[str, dict] = {}  # baseline -> {test id: study name}
        self.origins: dict[tuple, list] = {}  # (kind, id) -> where the spec was first planned

    def experiment(self, spec: dict, dataset: str, where: list) -> Experiment:
        """The experiment of `spec`, planned once however many studies ask for it.

        `where` is the key path that made the spec. A new experiment must fit the jobs' memory;
        an id already planned must be the same spec (else its short hash collided).
        """
        exp_id = short_hash(spec)
        first = self.plan.experiments.get(exp_id)
        if first is not None:
            origin = (first.spec, self.origins["experiment", exp_id])
            checks.check_same_spec("experiment", exp_id, origin, spec, where, self.files)
            return first
        checks.check_memory(spec, where, self.config, self.files)
        self.plan.experiments[exp_id] = Experiment(exp_id, spec, dataset)
        self.origins["experiment", exp_id] = where
        self.plan.preps.setdefault(prep_id(spec["data"]), (dataset, spec["data"]))
        return self.plan.experiments[exp_id]

    def apply(self, base: dict, overrides: dict, path: list) -> dict:
        """A copy of `base` with `overrides` (dotted path -> value) set, normalised."""
        spec = json.loads(json.dumps(base))  # a deep copy of plain data, several times faster
        for key, value in overrides.items():
            # A factor's values sit at factors.<key>[i]: name the factor, not key twice.
            at = path[:-1] if len(path) >= 2 and path[-2] == key else [*path, key]
            checks.check_override_path(spec, key, at, self.files)
            set_path(spec, key, value)
        # A grid crosses optimizer.name with the keys of each optimizer: a cell whose optimizer
        # lacks a key is the other cells' experiment (the grid analysis notes the hole).
        in_grid = path[-1:] == ["grid"]
        for key in overrides:
            at = path[:-1] if len(path) >= 2 and path[-2] == key else [*path, key]
            if key.startswith("optimizer.") and not in_grid:
                name = spec["optimizer"]["name"]
                checks.check_optimizer_key(name, key[10:], overrides[key], at, self.files)
        return _normalise(spec)

    @staticmethod
    def reference_origin(cfg: dict, path: list) -> list:
        """Where a study's reference is made: its `set`, or its baseline when `set` is empty."""
        return [*path, "set"] if cfg["set"] else ["baselines", cfg["baseline"]]

    def reference(self, cfg: dict, path: list) -> tuple[dict, str]:
        """The study's reference spec (its baseline with `set` applied) and dataset name."""
        base, dataset = resolve_baseline(self.config, cfg["baseline"])
        reference = self.apply(base, cfg["set"], [*path, "set"])
        checks.check_spec(reference, [*path, "set"], self.files)
        return reference, dataset

    def study(self, name: str, cfg: dict, taken: set) -> Study:
        """The study `name`: its variants, each an experiment, and the runs of each."""
        path = ["studies", name]
        reference, dataset = self.reference(cfg, path)
        kind = cfg["kind"]
        entries = KIND_ENTRIES[kind](cfg, path) if kind in KIND_ENTRIES else []
        study = Study(
            name=name,
            slug=slugify(name, taken),
            kind=kind,
            title=cfg.get("title", name),
            description=cfg.get("description", ""),
            baseline=cfg["baseline"],
            task=reference["data"]["task"],
            varied=list(dict.fromkeys(k for _, overrides, _ in entries for k in overrides)),
            cv=cfg.get("cv"),
            lr_range=self.lr_tests[name].id if kind == "lr_range" else None,
        )
        if kind == "combine":  # its other variants come with its winners (`add_combination`)
            study.varied = combined_keys(self.config, cfg)
        if kind == "search":  # its trials come with its rounds, its re-test with retest.json
            study.varied = list(cfg["space"])
            study.search = self.search_info(name, cfg, reference)
        if kind != "lr_range":  # an lr_range study has one range test and no training runs
            with_reference = cfg.get("reference", kind in ("ofat", "combine", "search"))
            if with_reference:
                entries = [("baseline", {}, path), *entries]
            self.add_variants(study, cfg, reference, dataset, entries, with_reference)
        return study

    def add_variants(self, study, cfg, reference, dataset, entries, with_reference) -> None:
        """Resolve each entry into an experiment (the same spec twice keeps its first label)."""
        path = ["studies", study.name]
        repeats = cfg.get("repeats", self.config["repeats"])
        # A cv study's runs are folds: the top-level repeats_vary does not apply (as `repeats`).
        vary = cfg.get("repeats_vary", self.config["repeats_vary"]) if study.kind != "cv" else []
        vary_at = [*path, "repeats_vary"] if "repeats_vary" in cfg else ["repeats_vary"]
        seen = {v.experiment for v in study.variants}  # a combine study adds to its reference
        labels = {v.label for v in study.variants}
        for label, overrides, where in entries:
            spec = self.apply(reference, overrides, where if overrides else path)
            if overrides:
                checks.check_spec(spec, where, self.files)
            if "split" in vary:  # in the spec only when not the default, so other ids stay
                spec["repeats_vary"] = sorted(vary)
                checks.check_varied_split(spec, study.name, label, vary_at, self.files)
            origin = where if overrides else self.reference_origin(cfg, path)
            exp = self.experiment(self.resolve_lr(spec, where), dataset, origin)
            study.cells[label] = exp.id
            if exp.id in seen:
                continue
            checks.check_unique_label(labels, label, where, self.files)
            labels.add(label)
            seen.add(exp.id)
            values = {k: _safe_get(spec, k) for k in study.varied}
            is_reference = with_reference and not overrides
            study.variants.append(Variant(label, exp.id, values, is_reference))
            if (
                study.kind == "cv"
            ):  # one run per fold; the winner's refit (r0) is planned by the graph
                names = [f"f{i}of{cfg['cv']}" for i in range(cfg["cv"])]
            elif study.kind == "search":  # fresh seeds: the search itself trained r0
                names = [f"r{r}" for r in range(1, repeats + 1)]
            else:
                names = [f"r{r}" for r in range(repeats)]
            study.runs[label] = [self.run(exp, n) for n in names]
        if study.kind == "cv":
            checks.check_cv_candidates([v.label for v in study.variants], path, self.files)

    def add_combination(self, study: Study, combination: dict) -> None:
        """A combine study's variants beside its reference: the winners, and all of them set
        together ("combined"), from `combination` (combination.json: each listed study's winner)."""
        cfg = self.config["studies"][study.name]
        path = ["studies", study.name]
        reference, dataset = self.reference(cfg, path)
        study.variants = [v for v in study.variants if v.is_reference]
        study.runs = {v.label: study.runs[v.label] for v in study.variants}
        study.combination = combination
        winners, together = [], {}
        for i, chosen in enumerate(combination["winners"]):
            if chosen["variant"] is None:
                continue
            spec = self.plan.experiments[chosen["experiment"]].spec
            overrides = {
                key: get_path(spec, key)
                for key in self.plan.studies[chosen["slug"]].varied
                if _safe_get(spec, key) != _safe_get(reference, key)
            }
            together.update(overrides)
            label = f"{chosen['study']}: {chosen['variant']}"
            winners.append((label, overrides, [*path, "combine", i]))
        entries = (
            [("combined", together, [*path, "combine"])] if len(winners) > 1 else []
        ) + winners
        self.add_variants(study, cfg, reference, dataset, entries, True)

    def search_info(self, name: str, cfg: dict, reference: dict) -> dict:
        """A search study's `SearchInfo` before any round: its space checked against the
        reference (each key settable, with its first value, to a valid spec)."""
        path = ["studies", name, "space"]
        for param in search.parse_space(cfg["space"], path, self.files):
            value = json.loads(param.choices[0]) if param.choices else param.low
            spec = self.apply(reference, {param.name: value}, path)
            checks.check_spec(spec, [*path, param.name], self.files)
        fixed = {k: _safe_get(reference, k) for k in search.conditioned_paths(cfg["space"])}
        return {
            "request": search.make_request(
                name, cfg, reference["data"]["task"], fixed, reference["training"]["epochs"]
            ),
            "rounds": search.round_sizes(cfg["search"]),
            "retest": cfg["search"]["retest"],
            "trials": {},
            "retested": [],
        }

    def add_search_round(self, study: Study, proposed: dict) -> None:
        """Plan a search round's trials (round-<k>.json): each an experiment, trained as r0."""
        cfg = self.config["studies"][study.name]
        path = ["studies", study.name, "space"]
        reference, dataset = self.reference(cfg, ["studies", study.name])
        for trial in proposed["trials"]:
            spec = self.apply(reference, trial["params"], path)
            checks.check_spec(spec, path, self.files)
            exp = self.experiment(self.resolve_lr(spec, path), dataset, path)
            self.run(exp, "r0")
            study.search["trials"][str(trial["trial"])] = exp.id

    def add_search_retest(self, study: Study, chosen: dict) -> None:
        """A search study's variants beside its reference: the re-tested trials (retest.json),
        each trained on the study's repeats r1..rN, which the search never saw."""
        cfg = self.config["studies"][study.name]
        path = ["studies", study.name]
        reference, dataset = self.reference(cfg, path)
        study.variants = [v for v in study.variants if v.is_reference]
        study.runs = {v.label: study.runs[v.label] for v in study.variants}
        study.search["retested"] = chosen["retest"]
        entries = [
            (search.trial_label(t["trial"]), t["params"], [*path, "space"])
            for t in chosen["retest"]
        ]
        self.add_variants(study, cfg, reference, dataset, entries, True)

    def run(self, exp: Experiment, name: str) -> Run:
        """The run `name` of `exp`, planned once, with the prepared split it reads if its own."""
        run = make_run(exp, name)
        self.plan.runs.setdefault(run.key, run)
        if run.prep:
            self.plan.preps.setdefault(run.prep, (exp.dataset, run_data(exp.spec, run.repeat)))
        return run

    def lr_range_test(self, name: str, cfg: dict) -> LRRange:
        """The learning-rate range test of an lr_range study: its reference without a learning rate."""
        reference, dataset = self.reference(cfg, ["studies", name])
        settings = cfg["lr_range"]  # filled with the schema's defaults
        spec = {
            "kind": "lr_range",
            "data": reference["data"],
            "model": reference["model"],
            "optimizer": {k: v for k, v in reference["optimizer"].items() if k != "learning_rate"},
            "training": {k: reference["training"][k] for k in ("batch_size", "shuffle", "seed")},
            "keras_backend": reference["keras_backend"],
            "lr_range": {
                k: (v if isinstance(v, str | bool) or k == "iterations" else float(v))
                for k, v in settings.items()
            },
            "version": TRAINING_VERSION,
        }
        test = LRRange(short_hash(spec), spec, dataset, cfg["baseline"])
        origin = self.reference_origin(cfg, ["studies", name])
        if test.id in self.plan.lr_ranges:
            first = (self.plan.lr_ranges[test.id].spec, self.origins["range test", test.id])
            checks.check_same_spec("range test", test.id, first, spec, origin, self.files)
        else:
            checks.check_memory(spec, origin, self.config, self.files)
            self.origins["range test", test.id] = origin
        self.plan.lr_ranges.setdefault(test.id, test)
        self.plan.preps.setdefault(test.prep_id, (dataset, spec["data"]))
        self.lr_tests[name] = test
        self.lr_by_baseline.setdefault(cfg["baseline"], {}).setdefault(test.id, name)
        return test

    def resolve_lr(self, spec: dict, path: list) -> dict:
        """Name the test behind `lr_range:<baseline>`, so the experiment id changes with it."""
        lr = spec["optimizer"].get("learning_rate")
        if not isinstance(lr, str) or "@" in lr:
            return spec
        baseline = lr.split(":", 1)[1]
        tests = self.lr_by_baseline.get(baseline, {})
        checks.check_lr_range_source(tests, baseline, lr, path, self.files)
        spec["optimizer"]["learning_rate"] = f"{lr}@{next(iter(tests))}"
        return spec


def combined_keys(config: dict, cfg: dict) -> list:
    """The dotted paths that the ofat studies a combine study lists vary, in config order."""
    keys = []
    for name in cfg["combine"]:
        listed = config["studies"][name]
        keys += [*listed["factors"], *(k for v in listed["variants"] for k in v["set"])]
    return list(dict.fromkeys(keys))


def _read_json(path: Path) -> Any:
    """A JSON file written by an earlier job, or None where there is none (or it is unreadable:
    the job that writes it runs again)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _safe_get(spec: dict, path: str) -> Any:
    try:
        return get_path(spec, path)
    except KeyError:
        return None


def make_plan(config: dict, files: list | tuple = ()) -> Plan:
    """Expand a validated config (see `config.validate`) into a Plan. Linear in the experiments."""
    plan = Plan(config=config, files=[str(f) for f in files])
    builder = plan.builder = _Builder(plan)
    for name, cfg in config["studies"].items():  # first: other studies may take their suggestion
        if cfg["kind"] == "lr_range":
            builder.lr_range_test(str(name), cfg)
    taken: set[str] = set()
    for name, cfg in config["studies"].items():
        study = builder.study(str(name), cfg, taken)
        plan.studies[study.slug] = study
    slugs = {s.name: s.slug for s in plan.studies.values()}
    for study in plan.studies.values():
        if study.kind == "combine":
            study.combine = [slugs[name] for name in config["studies"][study.name]["combine"]]
    checks.warn_many_runs(len(plan.runs), config, plan.files)
    return plan


def load_plan(files: list, config: dict | None = None) -> Plan:
    """Validate (the merged `config`, or the files) and plan. The one entry point for the Snakefile."""
    if config is None:
        validated = loading.load(files)
    else:
        for f in files:  # strict re-read: duplicate keys and YAML errors name the file
            loading.read_yaml(f)
        validated = loading.validate(config, files)
    return make_plan(validated, files)
