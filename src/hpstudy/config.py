"""Load, validate and fill in the configuration.

Validation happens once, here, where the config enters. Every error names the key path, the
file it came from and what was expected, so a typo is found before any job is planned.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

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
        with open(path) as fh:  # a stream, so YAML marks carry the file name
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
    with open(path) as fh:
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


_DefaultFilling = _extend_with_defaults(jsonschema.Draft7Validator)


def _expected(error: jsonschema.ValidationError) -> str:
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


def _received(error: jsonschema.ValidationError) -> str:
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
    validator = _DefaultFilling(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors[:20]:
            lines.append(
                f"  - `{format_path(err.absolute_path)}`: expected {_expected(err)}. "
                f"Received: {_received(err)}."
            )
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ConfigError(f"Invalid config ({describe_source(files)}):\n" + "\n".join(lines) + more)
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


def main(argv: list[str] | None = None) -> int:
    """`python -m hpstudy.config FILE...`: check config files as the workflow would, run nothing.

    Snakemake parses a --configfile before any workflow code runs and, when the YAML is broken,
    says only "not valid JSON or YAML"; this names the file, the line and the column.
    """
    import sys

    from .plan import load_plan

    files = sys.argv[1:] if argv is None else argv
    if not files:
        print("usage: python -m hpstudy.config CONFIG.yaml [MORE.yaml ...]", file=sys.stderr)
        return 2
    try:
        plan = load_plan(files)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{describe_source(files)}: valid; {len(plan.studies)} studies, "
        f"{len(plan.experiments)} experiments, {len(plan.runs)} runs."
    )
    return 0


if __name__ == "__main__":
    from hpstudy.config import main as _main  # the package's module, whose ConfigError plan raises

    raise SystemExit(_main())
