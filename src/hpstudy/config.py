"""Load, validate and fill in the configuration: every check of a config or a spec lives here.

Validation happens where the config enters: the schema (with its defaults), then the checks
across keys (`check_config`). The planner calls the remaining checks, those that need a spec
resolved from a baseline and a study's overrides (`check_override_path`, `check_spec`,
`check_unique_label`, `check_cv_candidates`, `check_lr_range_source`, `check_varied_split`). Every error names the
key path, the file it came from, what was expected and what was received.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .datasets import TASKS
from .ids import canonical_json

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says where and how."""


def format_path(parts: Iterable[Any]) -> str:
    """Render a key path as `a.b[0].c`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def describe_source(files: Iterable[str | Path]) -> str:
    """The config files, comma-separated, for error messages."""
    names = [str(f) for f in files]
    return ", ".join(names) if names else "the config given on the command line"


def _check_duplicates(node, path: tuple = ()) -> None:
    """Reject a key given twice in one mapping (plain YAML keeps the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"Duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at "
                    f"line {seen[key] + 1}) in {key_node.start_mark.name}, at "
                    f"`{format_path([*path, key])}`. Expected each key once in a mapping "
                    "(study names must be unique)."
                )
            seen[key] = key_node.start_mark.line
            _check_duplicates(value_node, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, (*path, i))


def read_yaml(path: str | Path) -> Any:
    """Parse one YAML file strictly; a syntax error or duplicate key names the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:  # a stream, so YAML marks carry the file name
            loader = yaml.SafeLoader(fh)
            try:
                node = loader.get_single_node()
                _check_duplicates(node)
                return None if node is None else loader.construct_document(node)
            finally:
                loader.dispose()
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}.") from None
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"Config file {path} is not valid YAML{where}: {problem}. "
            "Expected a YAML mapping with keys datasets, baselines and studies."
        ) from None


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


def describe_expected(error: jsonschema.ValidationError) -> str:
    """One sentence saying what was expected, in the user's terms."""
    v, arg = error.validator, error.validator_value
    if v == "enum":
        return "one of " + ", ".join(map(str, arg))
    if v == "type":
        kinds = arg if isinstance(arg, list) else [arg]
        return "a value of type " + " or ".join(kinds)
    if v == "minimum":
        return f"a number >= {arg}"
    if v == "exclusiveMinimum":
        return f"a number > {arg}"
    if v == "maximum":
        return f"a number <= {arg}"
    if v == "exclusiveMaximum":
        return f"a number < {arg}"
    if v == "required":
        return "the keys " + ", ".join(arg)
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return "only the keys " + ", ".join(allowed) if allowed else "no further keys"
    if v == "minItems":
        return f"a list of at least {arg} item(s)"
    if v == "minProperties":
        return f"a mapping with at least {arg} entr{'y' if arg == 1 else 'ies'}"
    if v == "minLength":
        return "a non-empty string"
    if v == "pattern":
        return f"a string matching {arg}"
    if v == "oneOf":
        return " or ".join(
            (s.get("description") or _schema_summary(s)) for s in arg if isinstance(s, dict)
        )
    return error.message


_NAMED = {"positive_number": "a number > 0", "non_negative_number": "a number >= 0"}


def _schema_summary(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _NAMED.get(name, name.replace("_", " "))
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    kind = schema.get("type", "value")
    bounds = [
        f"{op} {schema[key]}"
        for key, op in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" + (
        " " + " and ".join(bounds) if bounds else ""
    )


def describe_received(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return "unknown key(s) " + ", ".join(map(repr, extra))
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return "no key(s) " + ", ".join(map(repr, missing))
    return repr(error.instance)


def validate(config: dict, files: Iterable[str | Path] = (), schema: dict | None = None) -> dict:
    """Validate `config` against the schema and return a deep copy with defaults filled in.

    Raises ConfigError listing every problem, each with its key path, the file(s) and what was
    expected and received.
    """
    schema = schema or load_schema()
    filled = copy.deepcopy(config) if config is not None else {}
    if not isinstance(filled, dict):
        raise ConfigError(
            f"Config in {describe_source(files)}: expected a mapping with keys datasets, baselines "
            f"and studies. Received: {type(filled).__name__}."
        )
    validator = DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors[:20]:
            lines.append(
                f"  - `{format_path(err.absolute_path)}`: expected {describe_expected(err)}. "
                f"Received: {describe_received(err)}."
            )
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ConfigError(f"Invalid config ({describe_source(files)}):\n" + "\n".join(lines) + more)
    check_config(filled, files)
    return filled


def load(files: Iterable[str | Path], overrides: dict | None = None) -> dict:
    """Read config files strictly (later files override earlier ones key by key), then validate."""
    files = [Path(f) for f in files]
    merged: dict = {}
    for f in files:
        data = read_yaml(f)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError(
                f"Config file {f}: expected a mapping at the top level. "
                f"Received: {type(data).__name__}."
            )
        merged = deep_merge(merged, data)
    if overrides:
        merged = deep_merge(merged, overrides)
    return validate(merged, files)


def deep_merge(base: dict, update: dict) -> dict:
    """Merge `update` into a copy of `base`, recursing into mappings (Snakemake's semantics)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Checks across keys, run by `validate` after the schema ---------------------------------------


def invalid(files: Iterable[str | Path], path: Iterable[Any], expected: str, received: Any):
    """The ConfigError for one bad value: its key path, the file(s), expected and received."""
    return ConfigError(
        f"Invalid config ({describe_source(files)}):\n  - `{format_path(path)}`: expected "
        f"{expected}. Received: {received!r}."
    )


def check_config(config: dict, files: Iterable[str | Path] = ()) -> None:
    """The checks the schema cannot express: references between sections and between keys.

    `config` has been validated against the schema, with defaults filled in.
    """
    for name, base in config["baselines"].items():
        if base["dataset"] not in config["datasets"]:
            expected = "one of the datasets " + ", ".join(config["datasets"])
            raise invalid(files, ["baselines", name, "dataset"], expected, base["dataset"])
    for name, ds in config["datasets"].items():
        check_dataset(name, ds, files)
    check_repeats_vary(config["repeats_vary"], ["repeats_vary"], files)
    for name, study in config["studies"].items():
        check_study(str(name), study, config, files)
    names = [str(name) for name in config["studies"]]
    for i, name in enumerate(config["report"]["studies"]):
        if name not in names:
            raise invalid(
                files, ["report", "studies", i], "the name of a study: " + ", ".join(names), name
            )


def check_dataset(name: str, ds: dict, files: Iterable[str | Path] = ()) -> None:
    """A dataset's split and scaler fit its source."""
    split, where = ds["split"], ["datasets", name, "split"]
    test, val = split["test"], split["validation"]
    if isinstance(test, float) and isinstance(val, float) and test + val >= 0.95:
        raise invalid(
            files,
            where,
            "test + validation fractions < 0.95, leaving rows to train on",
            {"test": test, "validation": val},
        )
    if test == "canonical" and ds["source"] in ("digits", "diabetes"):
        expected = f"a fraction: {ds['source']} has no canonical test split"
        raise invalid(files, [*where, "test"], expected, test)
    if "target_by" in ds["scaler"] and TASKS[ds["source"]] == "classification":
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


# Checks of resolved specs, run by the planner -------------------------------------------------


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


def check_override_path(spec: dict, key: str, at: list, files: Iterable[str | Path] = ()) -> None:
    """A dotted path that a study overrides exists in the spec it is applied to."""
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
    for where, section in SPEC_SECTIONS.items():
        value: Any = spec
        for part in where:
            value = value[part]
        for err_path, expected, received in _section_errors(section, canonical_json(value)):
            raise invalid(
                files, path, f"{expected} for `{format_path([*where, *err_path])}`", received
            )


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
