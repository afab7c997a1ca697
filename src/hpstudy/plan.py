"""Turn a validated config into experiments, runs and studies.

Pure Python: no TensorFlow, no Snakemake. An **experiment** is a fully resolved spec named by a
hash of its content; a **run** is an experiment with a repeat (one seed); a **study** is one
comparison, listing its **variants** and the runs of each. The same experiment appearing in
several studies is planned (and trained) once.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import TRAINING_VERSION
from .config import ConfigError, describe_source, format_path

# Source name -> task. Kept here (not in `datasets`) so planning imports nothing heavy.
TASKS = {
    "digits": "classification",
    "mnist": "classification",
    "fashion_mnist": "classification",
    "cifar10": "classification",
    "diabetes": "regression",
    "boston_housing": "regression",
    "california_housing": "regression",
    "california_housing_small": "regression",
}

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

# Optimizer keys that mean something for each optimizer, with Keras' defaults.
OPTIMIZER_DEFAULTS = {
    "sgd": {"momentum": 0.0, "nesterov": False},
    "rmsprop": {"rho": 0.9, "momentum": 0.0},
    "adam": {"beta_1": 0.9, "beta_2": 0.999},
}

HASH_LENGTH = 10


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal specs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def short_hash(obj: Any, length: int = HASH_LENGTH) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def slugify(name: str, taken: set[str] | None = None) -> str:
    """A path-safe name: [a-z0-9_-] only, never `..`; a hash suffix keeps distinct names apart."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:40] or "study"
    if slug != name:
        slug = f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    if taken is not None:
        base, n = slug, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
    return slug


def derive_seed(seed: int, kind: str, index: int) -> int:
    """Seed of repeat/fold `index`: repeat 0 keeps the spec's seed, the others derive their own."""
    if kind == "repeat" and index == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{kind}:{index}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


def get_path(spec: dict, path: str) -> Any:
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def set_path(spec: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = spec
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def format_value(value: Any) -> str:
    """A short, readable rendering of a hyperparameter value for labels and tables."""
    if isinstance(value, list):
        if len(value) > 6:
            head = ", ".join(map(format_value, value[:3]))
            return f"[{head}, … ({len(value)} items)]"
        return "[" + ", ".join(map(format_value, value)) + "]"
    if isinstance(value, dict):  # a whole section, e.g. a grid over `optimizer`
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _normalise(spec: dict) -> dict:
    """Cast float fields and keep only the optimizer keys that apply, filling Keras' defaults."""
    for path in FLOAT_PATHS:
        node = spec
        for part in path[:-1]:
            node = node.get(part, {})
        if isinstance(node, dict) and path[-1] in node and isinstance(node[path[-1]], int):
            if not isinstance(node[path[-1]], bool):
                node[path[-1]] = float(node[path[-1]])
    opt = spec["optimizer"]
    lr = opt["learning_rate"]
    kept = {"name": opt["name"], "learning_rate": float(lr) if not isinstance(lr, str) else lr}
    for key, default in OPTIMIZER_DEFAULTS[opt["name"]].items():
        value = opt.get(key, default)
        kept[key] = float(value) if isinstance(default, float) else value
    spec["optimizer"] = kept
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
    return short_hash(data, 8)


@dataclass(frozen=True)
class Run:
    """One training job: an experiment with a repeat, or with a cross-validation fold."""

    experiment: str
    name: str  # "r0", "r1", ... or "f0of2", "f1of2" (fold 0 and 1 of a 2-fold CV)
    repeat: int | None
    seed: int
    fold: int | None = None
    folds: int | None = None  # k of the k-fold CV; the fold's rows depend on it

    @property
    def kind(self) -> str:
        return "repeat" if self.fold is None else "fold"

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.name}"

    @property
    def dir(self) -> str:
        return f"results/runs/{self.experiment}/{self.name}"


RUN_NAME = re.compile(r"^(?:r(?P<repeat>\d+)|f(?P<fold>\d+)of(?P<folds>\d+))$")


def parse_run(name: str) -> dict:
    """`r3` -> {"repeat": 3}; `f1of5` -> {"fold": 1, "folds": 5} (the run wildcard's two forms)."""
    match = RUN_NAME.match(name)
    if not match or (match["fold"] and not int(match["fold"]) < int(match["folds"])):
        raise ValueError(f"Expected a run name r<repeat> or f<fold>of<k>. Received: {name!r}")
    return {k: int(v) for k, v in match.groupdict().items() if v is not None}


def make_run(experiment: Experiment, name: str) -> Run:
    """The run `name` of an experiment, with its derived seed (`derive_seed`)."""
    parts = parse_run(name)
    seed = experiment.spec["training"]["seed"]
    if "repeat" in parts:
        repeat = parts["repeat"]
        return Run(experiment.id, name, repeat, derive_seed(seed, "repeat", repeat))
    fold = parts["fold"]
    return Run(experiment.id, name, None, derive_seed(seed, "fold", fold), fold, parts["folds"])


@dataclass
class Variant:
    label: str
    experiment: str
    values: dict  # dotted path -> value, for every path the study varies
    is_reference: bool = False


@dataclass
class Study:
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

    @property
    def dir(self) -> str:
        return f"results/studies/{self.slug}"

    def all_runs(self) -> list:
        return [run for label in self.runs for run in self.runs[label]]

    def describe(self) -> dict:
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
                        {"run": r.name, "repeat": r.repeat, "seed": r.seed, "dir": r.dir}
                        | ({"fold": r.fold, "folds": r.folds} if r.fold is not None else {})
                        for r in self.runs[v.label]
                    ],
                }
                for v in self.variants
            ],
        } | {key: getattr(self, key) for key in ("cv", "lr_range") if getattr(self, key)}


@dataclass
class Plan:
    config: dict
    files: list
    experiments: dict = field(default_factory=dict)  # id -> Experiment
    runs: dict = field(default_factory=dict)  # "exp/rN" -> Run
    studies: dict = field(default_factory=dict)  # slug -> Study
    preps: dict = field(default_factory=dict)  # prep id -> (dataset name, data spec)
    lr_ranges: dict = field(default_factory=dict)  # lr_range test id -> LRRange

    def where(self) -> str:
        return describe_source(self.files)

    def find_run(self, experiment: str, name: str) -> Run:
        """A planned run, or one the graph asks for later (a cv study's refit, `r0`)."""
        key = f"{experiment}/{name}"
        return self.runs[key] if key in self.runs else make_run(self.experiments[experiment], name)

    # Targets -----------------------------------------------------------------
    def run_outputs(self, name: str) -> list:
        return [f"{run.dir}/{name}" for run in self.runs.values()]

    def _chosen_studies(self) -> list:
        chosen = self.config.get("report", {}).get("studies") or list(self.studies)
        by_name = {s.name: s.slug for s in self.studies.values()}
        return [by_name.get(name, name) for name in chosen]

    def report_studies(self) -> list:
        """Slugs of the studies with runs that the report shows (lr_range ones have their own view)."""
        return [s for s in self._chosen_studies() if self.studies[s].kind != "lr_range"]

    def report_lr_ranges(self) -> list:
        return [s for s in self._chosen_studies() if self.studies[s].kind == "lr_range"]

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


def _fail(plan: Plan, path: list, expected: str, received: Any) -> None:
    raise ConfigError(
        f"Invalid config ({plan.where()}):\n  - `{format_path(path)}`: expected {expected}. "
        f"Received: {received!r}."
    )


def resolve_baseline(config: dict, name: str) -> tuple[dict, str]:
    """The baseline's complete spec (data settings inlined from `datasets`) and its dataset name."""
    base = config["baselines"][name]
    dataset = base["dataset"]
    ds = config["datasets"][dataset]
    spec = {
        "data": {
            "source": ds["source"],
            "task": TASKS[ds["source"]],
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


@functools.cache
def _section_validators() -> dict:
    """One schema validator per spec section, built once (planning stays linear)."""
    from .config import _DefaultFilling, load_schema

    defs = load_schema()["definitions"]
    return {
        section: _DefaultFilling(dict(defs[section], definitions=defs))
        for section in ("model", "optimizer", "training", "split", "scaler")
    }


def _check_spec(plan: Plan, spec: dict, path: list) -> None:
    """Re-validate a spec after overrides, so a bad value is reported where it was written."""
    if spec["keras_backend"] not in ("tensorflow", "jax"):  # the schema's enum
        _fail(plan, path, "one of tensorflow, jax for `keras_backend`", spec["keras_backend"])
    parts = {
        ("model",): spec["model"],
        ("optimizer",): spec["optimizer"],
        ("training",): spec["training"],
        ("data", "split"): spec["data"]["split"],
        ("data", "scaler"): spec["data"]["scaler"],
    }
    for where, value in parts.items():
        for err_path, expected, received in _section_errors(where[-1], canonical_json(value)):
            _fail(plan, path, f"{expected} for `{format_path([*where, *err_path])}`", received)


@functools.lru_cache(maxsize=4096)
def _section_errors(section: str, value_json: str) -> tuple:
    """Schema errors of one spec section, as (path, expected, received); cached by content.

    Variants of a study share most sections (a learning-rate grid changes only `optimizer`),
    so validating each distinct section once keeps planning 10,000 experiments fast.
    """
    from .config import _expected

    errors = _section_validators()[section].iter_errors(json.loads(value_json))
    return tuple((tuple(e.absolute_path), _expected(e), e.instance) for e in errors)


def _check_data(plan: Plan, name: str, ds: dict) -> None:
    split = ds["split"]
    where = ["datasets", name, "split"]
    test, val = split["test"], split["validation"]
    if isinstance(test, float) and isinstance(val, float) and test + val >= 0.95:
        _fail(
            plan,
            where,
            "test + validation fractions < 0.95, leaving rows to train on",
            {"test": test, "validation": val},
        )
    if test == "canonical" and ds["source"] in ("digits", "diabetes"):
        _fail(
            plan,
            where + ["test"],
            f"a fraction: {ds['source']} has no canonical test split",
            test,
        )
    if "target_by" in ds["scaler"] and TASKS[ds["source"]] == "classification":
        _fail(
            plan,
            ["datasets", name, "scaler", "target_by"],
            f"no target scaling: {ds['source']} is a classification dataset (labels are classes)",
            ds["scaler"]["target_by"],
        )
    if val == "test" and split["validation_rows"] == "head":
        _fail(plan, where + ["validation_rows"], "random when validation is 'test'", "head")


def _missing_path_hint(spec: dict, key: str) -> str:
    """What `key` should have been: the keys its parent section does have, or the sections."""
    parent, _, _ = key.rpartition(".")
    try:
        section = get_path(spec, parent) if parent else None
    except KeyError:
        section = None
    if isinstance(section, dict):
        hint = f"a dotted path that exists in the baseline spec; `{parent}` there has the keys "
        hint += ", ".join(sorted(section))
        if parent == "optimizer":  # only the chosen optimizer's own keys are in a spec
            hint += (
                f" (those of optimizer {section.get('name')!r}; to change the optimizer as well, "
                "set optimizer.name in the same variant)"
            )
        return hint
    return (
        "a dotted path that exists in the baseline spec, such as optimizer.learning_rate, "
        "model.hidden, training.batch_size or model.regularizer.l2 (sections: "
        + ", ".join(k for k in spec if k != "version")
        + ")"
    )


class _Builder:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.config = plan.config
        self.lr_tests: dict[str, LRRange] = {}  # lr_range study name -> its test
        self.lr_by_baseline: dict[str, dict] = {}  # baseline -> {test id: study name}

    def experiment(self, spec: dict, dataset: str) -> Experiment:
        exp_id = short_hash(spec)
        if exp_id not in self.plan.experiments:
            self.plan.experiments[exp_id] = Experiment(exp_id, spec, dataset)
            self.plan.preps.setdefault(prep_id(spec["data"]), (dataset, spec["data"]))
        return self.plan.experiments[exp_id]

    def apply(self, base: dict, overrides: dict, path: list) -> dict:
        spec = json.loads(json.dumps(base))  # a deep copy of plain data, several times faster
        for key, value in overrides.items():
            try:
                get_path(spec, key)
            except KeyError:
                # A factor's values sit at factors.<key>[i]: name the factor, not key twice.
                at = path[:-1] if len(path) >= 2 and path[-2] == key else path + [key]
                _fail(self.plan, at, _missing_path_hint(spec, key), key)
            set_path(spec, key, value)
        return _normalise(spec)

    def reference(self, cfg: dict, path: list) -> tuple[dict, str]:
        """The study's reference spec (its baseline with `set` applied) and dataset name."""
        if cfg["baseline"] not in self.config["baselines"]:
            _fail(
                self.plan,
                path + ["baseline"],
                "one of the baselines " + ", ".join(self.config["baselines"]),
                cfg["baseline"],
            )
        base, dataset = resolve_baseline(self.config, cfg["baseline"])
        reference = self.apply(base, cfg["set"], path + ["set"])
        _check_spec(self.plan, reference, path + ["set"])
        return reference, dataset

    def study(self, name: str, cfg: dict, taken: set) -> Study:
        path = ["studies", name]
        reference, dataset = self.reference(cfg, path)
        kind = cfg["kind"]
        _check_kind_keys(self.plan, cfg, path)
        variants: list[tuple[str, dict, list]] = []  # label, overrides, config path
        if kind in ("ofat", "cv"):  # a cv study takes candidates in every form
            if kind == "ofat" and cfg["grid"]:
                _fail(self.plan, path + ["grid"], "no grid in an ofat study (use factors)", "grid")
            for key, values in cfg["factors"].items():
                short = key.rsplit(".", 1)[-1]
                for i, value in enumerate(values):
                    label = f"{short}={format_value(value)}"
                    variants.append((label, {key: value}, path + ["factors", key, i]))
            for i, v in enumerate(cfg["variants"]):
                variants.append((v["label"], v["set"], path + ["variants", i, "set"]))
            if kind == "ofat" and not variants:
                _fail(self.plan, path, "at least one entry in factors or variants", {})
        if kind == "grid" and not cfg["grid"]:
            _fail(self.plan, path + ["grid"], "a mapping of dotted paths to value lists", {})
        if kind in ("grid", "cv") and cfg["grid"]:
            keys = list(cfg["grid"])
            for combo in itertools.product(*(cfg["grid"][k] for k in keys)):
                label = ", ".join(
                    f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in zip(keys, combo)
                )
                variants.append((label, dict(zip(keys, combo)), path + ["grid"]))
        with_reference = cfg.get("reference", kind == "ofat")
        varied = list(
            dict.fromkeys(k for _, overrides, _ in variants for k in overrides if k != "__")
        )
        study = Study(
            name=name,
            slug=slugify(name, taken),
            kind=kind,
            title=cfg.get("title", name),
            description=cfg.get("description", ""),
            baseline=cfg["baseline"],
            task=reference["data"]["task"],
            varied=varied,
            cv=cfg.get("cv"),
            lr_range=self.lr_tests[name].id if kind == "lr_range" else None,
        )
        if kind == "lr_range":  # one test, no training runs
            return study
        repeats = cfg.get("repeats", self.config["repeats"])
        seen: dict[str, str] = {}
        labels: set[str] = set()
        entries = ([("baseline", {}, path)] if with_reference else []) + variants
        for label, overrides, where in entries:
            spec = self.apply(reference, overrides, where if overrides else path)
            if overrides:
                _check_spec(self.plan, spec, where)
            exp = self.experiment(self.resolve_lr(spec, where), dataset)
            if exp.id in seen:  # same spec twice in one study: keep the first label
                continue
            if label in labels:
                _fail(self.plan, where, "variant labels unique within a study", label)
            labels.add(label)
            seen[exp.id] = label
            values = {k: _safe_get(spec, k) for k in varied}
            study.variants.append(
                Variant(label, exp.id, values, is_reference=with_reference and not overrides)
            )
            if kind == "cv":  # one run per fold; the winner's refit (r0) is planned by the graph
                names = [f"f{i}of{cfg['cv']}" for i in range(cfg["cv"])]
            else:
                names = [f"r{r}" for r in range(repeats)]
            study.runs[label] = [self.run(exp, n) for n in names]
        if kind == "cv" and len(study.variants) < 2:
            _fail(
                self.plan,
                path,
                "at least 2 distinct candidates in a cv study (from reference, factors, "
                "variants and grid)",
                [v.label for v in study.variants],
            )
        return study

    def run(self, exp: Experiment, name: str) -> Run:
        run = make_run(exp, name)
        self.plan.runs.setdefault(run.key, run)
        return run

    def lr_range_test(self, name: str, cfg: dict) -> LRRange:
        """The learning-rate range test of an lr_range study: its reference without a learning rate."""
        path = ["studies", name]
        reference, dataset = self.reference(cfg, path)
        _check_kind_keys(self.plan, cfg, path)
        settings = cfg["lr_range"]  # filled with the schema's defaults
        if not settings["min_lr"] < settings["max_lr"]:
            _fail(
                self.plan,
                path + ["lr_range", "max_lr"],
                f"a number > min_lr ({settings['min_lr']})",
                settings["max_lr"],
            )
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
        self.plan.lr_ranges.setdefault(test.id, test)
        self.plan.preps.setdefault(test.prep_id, (dataset, spec["data"]))
        self.lr_tests[name] = test
        self.lr_by_baseline.setdefault(cfg["baseline"], {}).setdefault(test.id, name)
        return test

    def resolve_lr(self, spec: dict, path: list) -> dict:
        """Name the test behind `lr_range:<baseline>`, so the experiment id changes with it."""
        lr = spec["optimizer"]["learning_rate"]
        if not isinstance(lr, str) or "@" in lr:
            return spec
        baseline = lr.split(":", 1)[1]
        tests = self.lr_by_baseline.get(baseline, {})
        if len(tests) != 1:
            found = "studies " + ", ".join(tests.values()) if tests else "none"
            _fail(
                self.plan,
                path,
                f"exactly one study of kind lr_range with baseline `{baseline}` to take "
                f"optimizer.learning_rate from (found {found})",
                lr,
            )
        spec["optimizer"]["learning_rate"] = f"{lr}@{next(iter(tests))}"
        return spec


def _check_kind_keys(plan: Plan, cfg: dict, path: list) -> None:
    """Keys that belong to one study kind only."""
    kind = cfg["kind"]
    if "cv" in cfg and kind != "cv":
        _fail(plan, path + ["cv"], "`cv` only in a study of kind cv", cfg["cv"])
    if "lr_range" in cfg and kind != "lr_range":
        _fail(plan, path + ["lr_range"], "`lr_range` only in a study of kind lr_range", kind)
    if kind == "cv" and "repeats" in cfg:
        _fail(plan, path + ["repeats"], "no repeats in a cv study (one run per fold)", "repeats")
    if kind == "lr_range":
        for key in ("factors", "variants", "grid", "reference", "repeats"):
            if cfg.get(key):
                _fail(plan, path + [key], "no candidates in an lr_range study (set only)", key)


def _safe_get(spec: dict, path: str) -> Any:
    try:
        return get_path(spec, path)
    except KeyError:
        return None


def make_plan(config: dict, files: list | tuple = ()) -> Plan:
    """Expand a validated config (see `config.validate`) into a Plan. Linear in the experiments."""
    plan = Plan(config=config, files=[str(f) for f in files])
    for name, base in config["baselines"].items():
        if base["dataset"] not in config["datasets"]:
            _fail(
                plan,
                ["baselines", name, "dataset"],
                "one of the datasets " + ", ".join(config["datasets"]),
                base["dataset"],
            )
    for name, ds in config["datasets"].items():
        _check_data(plan, name, ds)
    builder = _Builder(plan)
    for name, cfg in config["studies"].items():  # first: other studies may take their suggestion
        if cfg["kind"] == "lr_range":
            builder.lr_range_test(str(name), cfg)
    taken: set[str] = set()
    for name, cfg in config["studies"].items():
        study = builder.study(str(name), cfg, taken)
        plan.studies[study.slug] = study
    for i, name in enumerate(config.get("report", {}).get("studies", [])):
        if name not in {s.name for s in plan.studies.values()}:
            _fail(
                plan,
                ["report", "studies", i],
                "the name of a study: " + ", ".join(s.name for s in plan.studies.values()),
                name,
            )
    return plan


def load_plan(files: list, config: dict | None = None) -> Plan:
    """Validate (the merged `config`, or the files) and plan. The one entry point for the Snakefile."""
    from . import config as config_mod

    if config is None:
        validated = config_mod.load(files)
    else:
        for f in files:  # strict re-read: duplicate keys and YAML errors name the file
            config_mod.read_yaml(f)
        validated = config_mod.validate(config, files)
    return make_plan(validated, files)


def write_json(path: str | Path, obj: Any) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
