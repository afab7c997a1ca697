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


@dataclass(frozen=True)
class Experiment:
    """A fully resolved spec, named by the hash of its content."""

    id: str
    spec: dict
    dataset: str  # the config's name for the data, for display only (not hashed)

    @property
    def json(self) -> str:
        return canonical_json(self.spec)

    @property
    def prep_id(self) -> str:
        return prep_id(self.spec["data"])

    @property
    def task(self) -> str:
        return self.spec["data"]["task"]


def prep_id(data: dict) -> str:
    return short_hash(data, 8)


@dataclass(frozen=True)
class Run:
    """One training job: an experiment with a repeat."""

    experiment: str
    name: str  # "r0", "r1", ...
    repeat: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.name}"

    @property
    def dir(self) -> str:
        return f"results/runs/{self.experiment}/{self.name}"


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
                        for r in self.runs[v.label]
                    ],
                }
                for v in self.variants
            ],
        }


@dataclass
class Plan:
    config: dict
    files: list
    experiments: dict = field(default_factory=dict)  # id -> Experiment
    runs: dict = field(default_factory=dict)  # "exp/rN" -> Run
    studies: dict = field(default_factory=dict)  # slug -> Study
    preps: dict = field(default_factory=dict)  # prep id -> (dataset name, data spec)

    def where(self) -> str:
        return describe_source(self.files)

    # Targets -----------------------------------------------------------------
    def run_outputs(self, name: str) -> list:
        return [f"{run.dir}/{name}" for run in self.runs.values()]

    def report_studies(self) -> list:
        chosen = self.config.get("report", {}).get("studies") or list(self.studies)
        by_name = {s.name: s.slug for s in self.studies.values()}
        return [by_name.get(name, name) for name in chosen]


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
    from .config import _expected

    validators = _section_validators()
    parts = {
        ("model",): spec["model"],
        ("optimizer",): spec["optimizer"],
        ("training",): spec["training"],
        ("data", "split"): spec["data"]["split"],
        ("data", "scaler"): spec["data"]["scaler"],
    }
    for where, value in parts.items():
        for err in validators[where[-1]].iter_errors(copy.deepcopy(value)):
            spec_path = format_path([*where, *err.absolute_path])
            _fail(plan, path, f"{_expected(err)} for `{spec_path}`", err.instance)


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
    if val == "test" and split["validation_rows"] == "head":
        _fail(plan, where + ["validation_rows"], "random when validation is 'test'", "head")


class _Builder:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.config = plan.config

    def experiment(self, spec: dict, dataset: str) -> Experiment:
        exp_id = short_hash(spec)
        if exp_id not in self.plan.experiments:
            self.plan.experiments[exp_id] = Experiment(exp_id, spec, dataset)
            self.plan.preps.setdefault(prep_id(spec["data"]), (dataset, spec["data"]))
        return self.plan.experiments[exp_id]

    def apply(self, base: dict, overrides: dict, path: list) -> dict:
        spec = copy.deepcopy(base)
        for key, value in overrides.items():
            try:
                get_path(spec, key)
            except KeyError:
                _fail(
                    self.plan,
                    path + [key],
                    "a dotted path that exists in the baseline spec, such as "
                    "optimizer.learning_rate, model.hidden, training.batch_size or "
                    "model.regularizer.l2 (sections: "
                    + ", ".join(k for k in spec if k != "version")
                    + ")",
                    key,
                )
            set_path(spec, key, value)
        return _normalise(spec)

    def study(self, name: str, cfg: dict, taken: set) -> Study:
        path = ["studies", name]
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
        kind = cfg["kind"]
        variants: list[tuple[str, dict, list]] = []  # label, overrides, config path
        if kind == "ofat":
            if cfg["grid"]:
                _fail(self.plan, path + ["grid"], "no grid in an ofat study (use factors)", "grid")
            for key, values in cfg["factors"].items():
                short = key.rsplit(".", 1)[-1]
                for i, value in enumerate(values):
                    label = f"{short}={format_value(value)}"
                    variants.append((label, {key: value}, path + ["factors", key, i]))
            for i, v in enumerate(cfg["variants"]):
                variants.append((v["label"], v["set"], path + ["variants", i, "set"]))
            if not variants:
                _fail(self.plan, path, "at least one entry in factors or variants", {})
        else:
            if not cfg["grid"]:
                _fail(self.plan, path + ["grid"], "a mapping of dotted paths to value lists", {})
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
        )
        repeats = cfg.get("repeats", self.config["repeats"])
        seen: dict[str, str] = {}
        labels: set[str] = set()
        entries = ([("baseline", {}, path)] if with_reference else []) + variants
        for label, overrides, where in entries:
            spec = self.apply(reference, overrides, where if overrides else path)
            if overrides:
                _check_spec(self.plan, spec, where)
            exp = self.experiment(spec, dataset)
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
            study.runs[label] = [self.run(exp, r) for r in range(repeats)]
        return study

    def run(self, exp: Experiment, repeat: int) -> Run:
        seed = derive_seed(exp.spec["training"]["seed"], "repeat", repeat)
        run = Run(exp.id, f"r{repeat}", repeat, seed)
        self.plan.runs.setdefault(run.key, run)
        return run


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
