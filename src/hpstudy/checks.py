"""Every check of a config or a resolved spec beyond loading it, and the bounds of the plan.

The config's JSON schema (with a validator that fills its defaults), the checks across keys that
`config.validate` runs after the schema (`check_config`), those the planner runs on specs
resolved from a baseline and a study's overrides (`check_override_path`, `check_spec`,
`check_unique_label`, `check_cv_candidates`, `check_lr_range_source`, `check_varied_split`), and
the bounds of the plan (`estimate_memory`, `check_memory`, `check_same_spec`, `warn_many_runs`).
Every error is an `errors.ConfigError` naming the key path, the file, expected and received.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import components, userdata, usermodel
from .datasets import FILE_SOURCE, SOURCES, task_of
from .errors import (
    ConfigError,
    describe_expected,
    describe_source,
    format_path,
    invalid,
    quote,
)
from .ids import canonical_json
from .tasks import history_columns

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config's JSON schema (workflow/schemas/config.schema.yaml) as a dict."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _extend_with_defaults(validator_class):
    """A validator that fills `default` values in as it validates (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "$ref" in subschema and "default" not in subschema:
                    resolved = validator._resolver.lookup(subschema["$ref"]).contents
                    if "default" in resolved and name not in instance:
                        instance[name] = copy.deepcopy(resolved["default"])
                elif "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


#: A Draft 7 validator that fills in the schema's defaults while it validates.
DefaultFillingValidator = _extend_with_defaults(jsonschema.Draft7Validator)


def _type_ok(kind: str, value) -> bool:
    """Whether `value` is of JSON type `kind` (`integers`, `numbers`: a list of them)."""
    if kind in ("integers", "numbers"):
        return (
            isinstance(value, list) and bool(value) and all(_type_ok(kind[:-1], v) for v in value)
        )
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    return isinstance(value, int | float)


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "boolean": "true or false",
               "integers": "a list of integers", "numbers": "a list of numbers"}  # fmt: skip


def check_optimizer_key(name: str, key: str, value, path: list, files: Iterable[str | Path] = ()):
    """`key` of an optimizer block (or `optimizer.<key>` of a study) is one that optimizer `name`
    takes in Keras (components.OPTIMIZERS), with a value of its type.

    A baseline's keys that another optimizer lacks are dropped when a study switches
    `optimizer.name` alone: that variant chose another optimizer, not another momentum.
    """
    first = key.split(".", 1)[0]
    if first in ("name", "learning_rate") or (first == "schedule" and "." in key):
        return
    if first == "schedule":
        check_schedule(value, path, files)
        return
    args = components.optimizer_args(name)
    if first not in args:
        taken = ", ".join(["learning_rate", *args, "schedule"])
        raise invalid(
            files,
            path,
            f"a key that optimizer {name!r} takes (an argument of keras.optimizers."
            f"{components.OPTIMIZERS[name].keras_class}): {taken} (it has no {first!r})",
            value,
        )
    kind = components.arg_type(first, args[first])
    if "." not in key and not _type_ok(kind, value):
        raise invalid(files, path, f"{_TYPE_NAMES[kind]} for optimizer {name!r}'s {first}", value)


def check_schedule(schedule, path: list, files: Iterable[str | Path] = ()) -> None:
    """An `optimizer.schedule`: a known name, its required arguments, and only its arguments."""
    if not isinstance(schedule, dict) or schedule.get("name") not in components.SCHEDULES:
        expected = "a mapping with a name, one of " + ", ".join(components.SCHEDULES)
        raise invalid(files, path, expected, schedule)
    entry = components.SCHEDULES[schedule["name"]]
    for arg, value in schedule.items():
        if arg == "name":
            continue
        if arg not in entry.args:
            taken = ", ".join(entry.args)
            expected = (
                f"an argument of keras.optimizers.schedules.{entry.keras_class}: {taken} (the "
                f"initial rate is optimizer.learning_rate; it has no {arg!r})"
            )
            raise invalid(files, [*path, arg], expected, value)
        kind = components.schedule_type(entry, arg)
        if not (value is None and entry.args[arg] is None) and not _type_ok(kind, value):
            raise invalid(files, [*path, arg], _TYPE_NAMES[kind], value)
    missing = [a for a, d in entry.args.items() if d == components.REQUIRED and a not in schedule]
    if missing:
        expected = f"the arguments {schedule['name']} requires: {', '.join(missing)}"
        raise invalid(files, path, expected, schedule)
    if schedule["name"] == "piecewise_constant_decay":
        bounds, values = schedule["boundaries"], schedule["values"]
        if len(values) != len(bounds) + 1 or bounds != sorted(set(bounds)):
            expected = "increasing boundaries and one more value than boundaries"
            raise invalid(files, path, expected, schedule)


def check_training_callbacks(spec: dict, path: list, files: Iterable[str | Path] = ()) -> None:
    """Early stopping and ReduceLROnPlateau monitor a recorded column; the latter needs a
    plain learning rate (Keras cannot lower a schedule's)."""
    training, task = spec["training"], spec["data"]["task"]
    columns = [c for c in history_columns(task) if c not in ("epoch", "learning_rate")]
    for key in components.CALLBACKS:
        if training.get(key) is None:
            continue
        monitor = training[key]["monitor"]
        if monitor not in columns:
            expected = f"one of the recorded {task} metrics: {', '.join(columns)}"
            raise invalid(files, [*path, "training", key, "monitor"], expected, monitor)
    if training.get("reduce_lr_on_plateau") is not None and spec["optimizer"].get("schedule"):
        raise invalid(
            files,
            [*path, "training", "reduce_lr_on_plateau"],
            "a plain learning rate: ReduceLROnPlateau cannot lower the rate of "
            "optimizer.schedule (use one or the other)",
            spec["optimizer"]["schedule"],
        )


def check_model_file(model: dict, path: list, files: Iterable[str | Path] = ()) -> None:
    """A user model's file (and helper files) exist and parse, with the function it names."""
    for i, file in enumerate([model["file"], *(model.get("files") or [])]):
        at = [*path, "file"] if i == 0 else [*path, "files", i - 1]
        if not Path(file).is_file():
            expected = f"a Python file (looked for {Path(file).resolve()})"
            raise invalid(files, at, expected, file)
        if i == 0 and Path(file).suffix != ".py":
            raise invalid(files, at, "a .py file", file)
    try:
        usermodel.inspect_file(model["file"], model["function"], tuple(model.get("files") or ()))
    except usermodel.ModelFileError as exc:
        raise invalid(
            files, [*path, "function"], f"a function of the file: {exc}", model["function"]
        ) from None


COMPILED = components.COMPILED


#: The optimizer section a baseline has when it sets none (the schema's defaults).
DEFAULT_OPTIMIZER = {"name": "sgd", "learning_rate": 0.01}


def compiled_by_file(model: dict) -> str | None:
    """The model file's name if the config's or spec's user model compiles its own model."""
    if model.get("kind") != "python":
        return None
    if isinstance(model["file"], dict):
        facts, name = usermodel.facts_of(model), usermodel.file_paths(model)[0]
    else:
        facts = usermodel.inspect_file(model["file"], model["function"],
                                       tuple(model.get("files") or ()))  # fmt: skip
        name = model["file"]
    return name if facts.compiles else None


def check_compiled_optimizer(base: dict, path: list, files: Iterable[str | Path] = ()) -> None:
    """A model its own file compiles keeps its optimizer: the baseline may not set one."""
    name = compiled_by_file(base["model"])
    if name and base["optimizer"] != DEFAULT_OPTIMIZER:
        raise invalid(
            files,
            path,
            f"no optimizer: {name} compiles its own model, whose optimizer, loss and metrics "
            "stand (drop the optimizer section, or return the model uncompiled to have the "
            "config's optimizer compile it)",
            base["optimizer"],
        )


def check_config(config: dict, files: Iterable[str | Path] = ()) -> None:
    """The checks the schema cannot express: references between sections and between keys.

    `config` has been validated against the schema, with defaults filled in.
    """
    for name, base in config["baselines"].items():
        if base["dataset"] not in config["datasets"]:
            expected = "one of the datasets " + ", ".join(config["datasets"])
            raise invalid(files, ["baselines", name, "dataset"], expected, base["dataset"])
    for name, base in config["baselines"].items():
        for key in base["optimizer"]:
            at = ["baselines", name, "optimizer", key]
            check_optimizer_key(base["optimizer"]["name"], key, base["optimizer"][key], at, files)
        if base["model"]["kind"] == "python":
            check_model_file(base["model"], ["baselines", name, "model"], files)
            check_compiled_optimizer(base, ["baselines", name, "optimizer"], files)
    for name, ds in config["datasets"].items():
        check_dataset(name, ds, files)
    check_repeats_vary(config["repeats_vary"], ["repeats_vary"], files)
    for name, study in config["studies"].items():
        check_study(str(name), study, config, files)
        check_combine(str(name), study, config, files)
    names = [str(name) for name in config["studies"]]
    for i, name in enumerate(config["report"]["studies"]):
        if name not in names:
            raise invalid(
                files, ["report", "studies", i], "the name of a study: " + ", ".join(names), name
            )


def check_dataset(name: str, ds: dict, files: Iterable[str | Path] = ()) -> None:
    """A dataset's split and scaler fit its source; a user's file exists and has its columns."""
    split, where = ds["split"], ["datasets", name, "split"]
    own = [key for key in ("path", "test_path", "target", "features", "task") if key in ds]
    if ds["source"] != FILE_SOURCE and own:
        expected = f"no {own[0]} for source {ds['source']!r}: only a file source has one"
        raise invalid(files, ["datasets", name, own[0]], expected, ds[own[0]])
    if ds["source"] == FILE_SOURCE:
        problem = userdata.check(name, ds)
        if problem:
            key_path, expected = problem
            received = ds
            for key in key_path[2:]:
                received = received.get(key) if isinstance(received, dict) else None
            raise invalid(files, key_path, expected, received)
    test, val = split["test"], split["validation"]
    if isinstance(test, float) and isinstance(val, float) and test + val >= 0.95:
        raise invalid(
            files,
            where,
            "test + validation fractions < 0.95, leaving rows to train on",
            {"test": test, "validation": val},
        )
    if test == "canonical" and (
        ds["source"] in ("digits", "diabetes")
        or (ds["source"] == FILE_SOURCE and "test_path" not in ds)
    ):
        expected = f"a fraction: {ds['source']} has no canonical test split"
        if ds["source"] == FILE_SOURCE:
            expected = "a fraction: canonical needs a test_path (a file of test rows)"
        raise invalid(files, [*where, "test"], expected, test)
    if "target_by" in ds["scaler"] and task_of(ds) == "classification":
        raise invalid(
            files,
            ["datasets", name, "scaler", "target_by"],
            f"no target scaling: {ds['source']} is a classification dataset (labels are classes)",
            ds["scaler"]["target_by"],
        )
    if val == "test" and split["validation_rows"] == "head":
        raise invalid(
            files, [*where, "validation_rows"], "random when validation is 'test'", "head"
        )


def check_study(name: str, cfg: dict, config: dict, files: Iterable[str | Path] = ()) -> None:
    """A study names a known baseline and has the keys of its kind, and only those."""
    path, kind = ["studies", name], cfg["kind"]
    if cfg["baseline"] not in config["baselines"]:
        expected = "one of the baselines " + ", ".join(config["baselines"])
        raise invalid(files, [*path, "baseline"], expected, cfg["baseline"])
    if "cv" in cfg and kind != "cv":
        raise invalid(files, [*path, "cv"], "`cv` only in a study of kind cv", cfg["cv"])
    if "lr_range" in cfg and kind != "lr_range":
        raise invalid(
            files, [*path, "lr_range"], "`lr_range` only in a study of kind lr_range", kind
        )
    for key in ("space", "search"):
        if key in cfg and kind != "search":
            raise invalid(files, [*path, key], f"`{key}` only in a study of kind search", kind)
    if kind == "search":
        for key in ("factors", "variants", "grid"):
            if cfg.get(key):
                expected = "no listed candidates in a search study (its space proposes them)"
                raise invalid(files, [*path, key], expected, key)
        if "reference" in cfg and not cfg["reference"]:
            expected = "true: a search's re-tested trials are compared with its reference"
            raise invalid(files, [*path, "reference"], expected, cfg["reference"])
        halving = (cfg.get("search") or {}).get("halving")
        if halving and "training.epochs" in (cfg.get("space") or {}):
            expected = (
                "training.epochs outside the space when search.halving is set (successive "
                "halving divides the reference's epochs into rungs)"
            )
            raise invalid(files, [*path, "space", "training.epochs"], expected, "training.epochs")
    if kind == "cv" and "repeats" in cfg:
        expected = "no repeats in a cv study (one run per fold)"
        raise invalid(files, [*path, "repeats"], expected, "repeats")
    if kind in ("cv", "lr_range") and "repeats_vary" in cfg:
        expected = (
            "no repeats_vary in a cv study (one run per fold: the folds already vary the split)"
            if kind == "cv"
            else "no repeats_vary in an lr_range study (one range test, no repeats)"
        )
        raise invalid(files, [*path, "repeats_vary"], expected, cfg["repeats_vary"])
    if "repeats_vary" in cfg:  # the split it may vary is checked on each resolved spec
        check_repeats_vary(cfg["repeats_vary"], [*path, "repeats_vary"], files)
    if kind == "lr_range":
        for key in ("factors", "variants", "grid", "reference", "repeats"):
            if cfg.get(key):
                expected = "no candidates in an lr_range study (set only)"
                raise invalid(files, [*path, key], expected, key)
        settings = cfg["lr_range"]
        if not settings["min_lr"] < settings["max_lr"]:
            expected = f"a number > min_lr ({settings['min_lr']})"
            raise invalid(files, [*path, "lr_range", "max_lr"], expected, settings["max_lr"])
    if kind == "ofat" and cfg["grid"]:
        raise invalid(files, [*path, "grid"], "no grid in an ofat study (use factors)", "grid")
    if kind == "ofat" and not (cfg["factors"] or cfg["variants"]):
        raise invalid(files, path, "at least one entry in factors or variants", {})
    if kind == "grid" and not cfg["grid"]:
        raise invalid(files, [*path, "grid"], "a mapping of dotted paths to value lists", {})


def check_repeats_vary(vary: list, path: list, files: Iterable[str | Path] = ()) -> None:
    """`repeats_vary` lists init_and_order: every repeat has its own seed."""
    if "init_and_order" not in vary:
        expected = (
            "[init_and_order] or [init_and_order, split] (each repeat has its own seed, so the "
            "initial weights, the data order and the Dropout masks always vary)"
        )
        raise invalid(files, path, expected, vary)


def check_combine(name: str, cfg: dict, config: dict, files: Iterable[str | Path] = ()) -> None:
    """A combine study lists ofat studies around its own reference, varying disjoint keys."""
    path, kind = ["studies", name], cfg["kind"]
    if "combine" in cfg and kind != "combine":
        raise invalid(files, [*path, "combine"], "`combine` only in a study of kind combine", kind)
    if kind != "combine":
        return
    for key in ("factors", "variants", "grid", "cv", "lr_range", "reference"):
        if cfg.get(key) not in (None, {}, []):
            expected = "no candidates of its own in a combine study (baseline, set, combine)"
            raise invalid(files, [*path, key], expected, key)
    if not cfg.get("combine"):
        raise invalid(files, [*path, "combine"], "a list of ofat studies to combine", None)
    studies, owners = config["studies"], {}
    for i, listed in enumerate(cfg["combine"]):
        at = [*path, "combine", i]
        other = studies.get(listed)
        if other is None or other["kind"] != "ofat" or listed == name:
            ofat = [str(n) for n, s in studies.items() if s["kind"] == "ofat"]
            raise invalid(files, at, "the name of an ofat study: " + ", ".join(ofat), listed)
        if other["baseline"] != cfg["baseline"] or canonical_json(other["set"]) != canonical_json(
            cfg["set"]
        ):
            expected = (
                f"an ofat study around the same reference (baseline {cfg['baseline']!r} and the "
                f"same `set`): its variants were compared with that reference"
            )
            raise invalid(files, at, expected, listed)
        for key in [*other["factors"], *(k for v in other["variants"] for k in v["set"])]:
            clash = next((o for o in owners if o == key or key.startswith(o + ".")
                          or o.startswith(key + ".")), None)  # fmt: skip
            if clash is not None and owners[clash] != listed:
                expected = "studies that vary different keys (their winners are set together)"
                raise invalid(files, at, expected, f"{listed} and {owners[clash]} both set {key}")
            owners.setdefault(key, listed)


def check_varied_split(spec: dict, study: str, label: str, path: list, files=()) -> None:
    """With repeats_vary: split (set at `path`), the spec's validation rows are a random draw.

    Not so with `validation: test` (the validation rows are the test rows, which stay fixed)
    or `validation_rows: head` (always the first rows): there is nothing to draw again.
    """
    split = spec["data"]["split"]
    if split["validation"] == "test":
        fixed = "data.split.validation: test (its validation rows are the test rows, kept fixed)"
    elif split["validation_rows"] == "head":
        fixed = "data.split.validation_rows: head (its validation rows are the first rows)"
    else:
        return
    raise invalid(
        files,
        path,
        f"a random validation split to draw again for each repeat of study {study} (repeats_vary "
        f"with split), but its variant {label!r} has {fixed}. To keep that study's repeats on one "
        "split, give it its own `repeats_vary: [init_and_order]`",
        split,
    )


def _addable(spec: dict, key: str) -> bool:
    """A path absent from the spec that a study may still set: an optimizer argument (checked
    against the optimizer the variant ends up with), a schedule, a training callback."""
    parts = key.split(".")
    if parts[0] == "optimizer" and len(parts) >= 2 and spec["optimizer"]["name"] != COMPILED:
        known = {a for name in components.OPTIMIZERS for a in components.optimizer_args(name)}
        return parts[1] in known or parts[1] == "schedule"
    return parts[0] == "training" and len(parts) >= 2 and parts[1] in components.CALLBACKS


def check_override_path(spec: dict, key: str, at: list, files: Iterable[str | Path] = ()) -> None:
    """A dotted path that a study overrides exists in the spec it is applied to."""
    if key.startswith("optimizer.") and spec["optimizer"]["name"] == COMPILED:
        name = usermodel.file_paths(spec["model"])[0]
        expected = (
            f"no optimizer key: {name} compiles its own model, whose optimizer stands (return "
            "the model uncompiled to study the optimizer)"
        )
        raise invalid(files, at, expected, key)
    if _addable(spec, key):
        return
    node: Any = spec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise invalid(files, at, _missing_path_hint(spec, key), key)
        node = node[part]


def _missing_path_hint(spec: dict, key: str) -> str:
    """What `key` should have been: the keys its parent section does have, or the sections."""
    parent, _, _ = key.rpartition(".")
    section: Any = spec
    for part in parent.split(".") if parent else []:
        section = section.get(part) if isinstance(section, dict) else None
    if parent == "model.hyperparameters":
        return (
            "a hyperparameter the baseline declares: give it its baseline value in the "
            "baseline's model.hyperparameters (declared: "
            + (", ".join(sorted(section)) if isinstance(section, dict) and section else "none")
            + ")"
        )
    if parent and isinstance(section, dict):
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


SPEC_SECTIONS = {
    ("model",): "model",
    ("optimizer",): "optimizer",
    ("training",): "training",
    ("data", "split"): "split",
    ("data", "scaler"): "scaler",
}


def check_spec(spec: dict, path: list, files: Iterable[str | Path] = ()) -> None:
    """Re-validate a spec after a study's overrides, so a bad value is reported where it was set."""
    if spec["keras_backend"] not in ("tensorflow", "jax"):  # the schema's enum
        expected = "one of tensorflow, jax for `keras_backend`"
        raise invalid(files, path, expected, spec["keras_backend"])
    user_model = spec["model"]["kind"] == "python"
    for where, section in SPEC_SECTIONS.items():
        if (user_model and section == "model") or spec[where[0]].get("name") == COMPILED:
            continue  # a user model's spec holds its files' SHA-256, not their paths
        value: Any = spec
        for part in where:
            value = value[part]
        for err_path, expected, received in _section_errors(section, canonical_json(value)):
            raise invalid(
                files, path, f"{expected} for `{format_path([*where, *err_path])}`", received
            )
    if user_model:
        problem = usermodel.check_hyperparameters(spec["model"])
        if problem:
            name, expected = problem
            received = spec["model"]["hyperparameters"].get(name) if name else None
            where = "model.hyperparameters" + (f".{name}" if name else "")
            raise invalid(files, path, f"{expected}, for `{where}`", received or name or {})
    if spec["optimizer"].get("schedule"):
        check_schedule(spec["optimizer"]["schedule"], [*path, "optimizer.schedule"], files)
    check_training_callbacks(spec, path, files)


@functools.cache
def _section_validators() -> dict:
    """One schema validator per spec section, built once (planning stays linear)."""
    defs = load_schema()["definitions"]
    return {
        section: DefaultFillingValidator(dict(defs[section], definitions=defs))
        for section in set(SPEC_SECTIONS.values())
    }


@functools.lru_cache(maxsize=4096)
def _section_errors(section: str, value_json: str) -> tuple:
    """Schema errors of one spec section, as (path, expected, received); cached by content.

    Variants of a study share most sections (a learning-rate grid changes only `optimizer`),
    so validating each distinct section once keeps planning 10,000 experiments fast.
    """
    errors = _section_validators()[section].iter_errors(json.loads(value_json))
    return tuple((tuple(e.absolute_path), describe_expected(e), e.instance) for e in errors)


def check_unique_label(labels: set, label: str, where: list, files: Iterable[str | Path] = ()):
    """Two distinct experiments of one study need distinct labels."""
    if label in labels:
        raise invalid(files, where, "variant labels unique within a study", label)


def check_cv_candidates(labels: list, path: list, files: Iterable[str | Path] = ()) -> None:
    """A cv study chooses between at least two distinct candidates."""
    if len(labels) < 2:
        raise invalid(
            files,
            path,
            "at least 2 distinct candidates in a cv study (from reference, factors, "
            "variants and grid)",
            labels,
        )


def check_lr_range_source(tests: dict, baseline: str, lr: str, path: list, files=()) -> None:
    """`lr_range:<baseline>` needs exactly one lr_range study of that baseline (`tests`: id -> study)."""
    if len(tests) != 1:
        found = "studies " + ", ".join(tests.values()) if tests else "none"
        raise invalid(
            files,
            path,
            f"exactly one study of kind lr_range with baseline `{baseline}` to take "
            f"optimizer.learning_rate from (found {found})",
            lr,
        )


def _shape_source(data: dict):
    """The registered source, or for a user's file one with the shape planning read from it
    (two classes at least: the labels are not read before the job)."""
    if data["source"] != FILE_SOURCE:
        return SOURCES[data["source"]]
    rows, features = userdata.SHAPES[data["file"]["sha256"]]
    return dataclasses.replace(
        SOURCES["digits"],
        name=FILE_SOURCE,
        task=data["task"],
        n_classes=2,
        features=features,
        rows=rows,
    )


def estimate_memory(spec: dict) -> dict:
    """What a training job of `spec` needs at least, in bytes, from its sizes alone.

    Parameters (dense layers: (inputs + 1) x units each, with the source's input width; wide &
    deep feeds the input to the output layer too) x 4 bytes x (weights, gradients and optimizer
    slots); activations: a batch (at most all rows) x the widths of every layer x 4 bytes x 2
    (forward and backward); the prepared data: rows x features x 4 bytes. A lower bound: the
    framework itself (TensorFlow: about 0.5 GB) and temporary copies are left out.
    """
    source = _shape_source(spec["data"])
    model, opt = spec["model"], spec["optimizer"]
    rows, n = source.rows, spec["data"].get("subsample", 0)
    if n:  # the first n training rows and n/4 validation and test rows
        rows = min(rows, n + 2 * max(1, n // 4))
    if not components.MODEL_KINDS[model["kind"]].dense_memory:
        # A user's model: its size is known only once built; the data's is known now.
        parts = {"weights": 0, "activations": 0, "data": rows * source.features * 4}
        return {"bytes": parts["data"], "parts": parts, "parameters": None, "slots": 0,
                "batch": min(spec["training"]["batch_size"], rows), "rows": rows,
                "features": source.features}  # fmt: skip
    outputs = source.n_classes if spec["data"]["task"] == "classification" else 1
    hidden = list(model["hidden"])
    last = hidden[-1] + (source.features if model["kind"] == "wide_deep" else 0)
    parameters = (
        sum((inputs + 1) * units for inputs, units in zip([source.features, *hidden], hidden))
        + (last + 1) * outputs
    )
    slots = components.optimizer_slots(opt)
    batch = min(spec["training"]["batch_size"], rows)
    widths = source.features + sum(hidden) + outputs
    widths += last if model["kind"] == "wide_deep" else 0  # the concatenation
    parts = {
        "weights": parameters * 4 * (2 + slots),
        "activations": batch * widths * 4 * 2,
        "data": rows * source.features * 4,
    }
    return {
        "bytes": sum(parts.values()),
        "parts": parts,
        "parameters": parameters,
        "slots": slots,
        "batch": batch,
        "rows": rows,
        "features": source.features,
    }


def _mb(n_bytes: int) -> str:
    mb = n_bytes / 2**20
    return f"{mb:.2g} MB" if mb < 10 else f"{round(mb):,} MB"


def check_memory(spec: dict, where: list, config: dict, files: Iterable[str | Path] = ()) -> None:
    """An experiment (or range test) whose estimated memory exceeds `resources.mem_mb` is refused.

    `where` is the key path that made the spec: a study's factor, variant or grid, its `set`, or
    the baseline of its reference.
    """
    limit_mb = config["resources"]["mem_mb"]
    need = estimate_memory(spec)
    if need["bytes"] <= limit_mb * 2**20:
        return
    parts, opt = need["parts"], spec["optimizer"]
    slots = f"{need['slots']} optimizer slot{'s' if need['slots'] != 1 else ''} ({opt['name']})"
    raise ConfigError(
        f"Invalid config ({describe_source(files)}):\n  - `{format_path(where)}`: expected an "
        f"experiment that fits resources.mem_mb = {limit_mb:,} MB per training job. Received: "
        f"one that needs at least {_mb(need['bytes'])}: {need['parameters']:,} parameters "
        f"(model.hidden {quote(spec['model']['hidden'], 80)}, model.kind "
        f"{spec['model']['kind']}, on {need['features']:,} inputs) x 4 bytes for the weights, "
        f"their gradients and {slots}: {_mb(parts['weights'])}; the activations of a batch of "
        f"{need['batch']:,} rows: {_mb(parts['activations'])}; the prepared data "
        f"({need['rows']:,} rows x {need['features']:,} values): {_mb(parts['data'])}. "
        "Lower model.hidden or training.batch_size (or use a subsample), or raise "
        "resources.mem_mb to what the jobs may really use."
    )


def warn_many_runs(runs: int, config: dict, files: Iterable[str | Path] = ()) -> bool:
    """Print one line to stderr when the plan has more runs than `limits.max_runs_warning`."""
    limit = config.get("limits", {}).get("max_runs_warning", 2000)
    if runs <= limit:
        return False
    print(
        f"hpstudy: warning: {describe_source(files)} plans {runs:,} training runs, more than "
        f"limits.max_runs_warning ({limit:,}); each run is one job. Check repeats, cv and the "
        "sizes of grids, or raise limits.max_runs_warning if they are meant.",
        file=sys.stderr,
    )
    return True


def check_same_spec(
    kind: str, id_: str, first: tuple[dict, list], spec: dict, where: list, files=()
) -> None:
    """Two specs named by one id must be one spec: else it is a collision of the short hash.

    `first` is the spec planned under `id_` and the key path it came from; `kind` says what the
    id names ("experiment" or "range test").
    """
    first_spec, first_where = first
    if canonical_json(first_spec) == canonical_json(spec):
        return
    a, b = _flat(first_spec), _flat(spec)
    diff = [
        k
        for k in sorted(set(a) | set(b))
        if k not in a or k not in b or canonical_json(a[k]) != canonical_json(b[k])
    ]
    shown = "; ".join(
        f"{k}: {quote(a.get(k, 'absent'), 60)} and {quote(b.get(k, 'absent'), 60)}"
        for k in diff[:3]
    )
    raise ConfigError(
        f"Invalid config ({describe_source(files)}):\n  - `{format_path(where)}`: expected a spec "
        f"whose {kind} id no other spec has. Received: the id {id_}, which "
        f"`{format_path(first_where)}` already gives a different spec (they differ at {shown}"
        f"{'; ...' if len(diff) > 3 else ''}). This is a hash collision: an id is the first "
        f"{len(id_)} hex digits of the spec's SHA-256, and these two specs share them; planning "
        "both under one id would silently drop one. Change one of the values slightly (e.g. the "
        "last digit of a learning rate), and please report the two specs to the project."
    )


def _flat(node: Any, prefix: str = "") -> dict:
    """A spec as {dotted path: value}, for saying where two specs differ."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
