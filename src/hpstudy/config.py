"""Load, validate and fill in the configuration.

Validation happens where the config enters: reading a file strictly (YAML errors, duplicate keys,
aliases expanding past `MAX_VALUES`, YAML 1.2 numbers such as 1e-3), the schema with its
defaults (`checks.DefaultFillingValidator`), then the checks across keys (`checks.check_config`).
The planner calls the remaining checks of `hpstudy.checks` itself, on specs it resolves. Errors
are `errors.ConfigError`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .checks import DefaultFillingValidator, check_config, load_schema
from .errors import (
    ConfigError,
    describe_expected,
    describe_received,
    describe_source,
    format_path,
    quote,
)

#: At most this many values (scalars, lists and mappings) in one config file, each alias counted
#: as the values it repeats. Aliases nested in aliases multiply: nine levels of ten make 10**9
#: values from a 500-byte file, which every later stage (the schema, planning, error messages)
#: would walk one by one. The largest config/*.yaml holds under 1,000.
MAX_VALUES = 100_000


class _AliasRecordingLoader(yaml.SafeLoader):
    """PyYAML's safe loader, remembering each alias (*name): its anchor, where, and its node."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases: list = []  # (anchor name, mark of the alias, the node it repeats)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self.anchors:  # else PyYAML raises "found undefined alias"
                self.aliases.append((event.anchor, event.start_mark, self.anchors[event.anchor]))
        return super().compose_node(parent, index)


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(node, aliases: list, path: Path) -> None:
    """Refuse a file whose aliases expand to more than MAX_VALUES values, or into themselves.

    Counts each node once (linear in the file), remembering how many values it expands to.
    """
    sizes: dict[int, int | None] = {}  # id(node) -> values it expands to; None while counting

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] is None:  # reached again from inside itself: an alias to an ancestor
                raise _alias_error(path, aliases, node, None, None)
            return sizes[key]  # type: ignore[return-value]
        sizes[key] = None
        sizes[key] = 1 + sum(size(child) for child in _children(node))
        return sizes[key]  # type: ignore[return-value]

    total = size(node)
    if total > MAX_VALUES:
        # Name the alias that repeats the most, unless the file is that large without aliases.
        repeated = [n for _, _, n in aliases] if len(sizes) <= MAX_VALUES else []
        largest = max(repeated, key=size, default=None)
        raise _alias_error(path, aliases, largest, total, largest and size(largest))


def _alias_error(path, aliases: list, node, total, repeated) -> ConfigError:
    """An alias to `node` makes the file expand to `total` values (None: into itself)."""
    expected = (
        f"Expected at most {MAX_VALUES:,} values (scalars, lists and mappings) in a config file, "
        "each alias (*name) counted as the values it repeats"
    )
    alias = next(((name, mark) for name, mark, n in aliases if n is node), None)
    if alias is None:  # no alias involved: the file itself is that large
        return ConfigError(f"Config file {path} holds {total:,} values. {expected}.")
    name, mark = alias
    where = f"the alias *{name} at line {mark.line + 1}, column {mark.column + 1}"
    start = node.start_mark
    anchor = f"the anchor &{name} at line {start.line + 1}, column {start.column + 1}"
    if total is None:
        return ConfigError(
            f"Config file {path}: {where} repeats {anchor}, which contains it, so it never ends "
            f"expanding. {expected}; an alias can only repeat a value given before it."
        )
    return ConfigError(
        f"Config file {path}: its aliases expand it to {total:,} values; {where} repeats "
        f"{anchor}, which alone expands to {repeated:,} values (aliases nested in aliases "
        f"multiply). {expected}: write repeated parts out, or nest fewer aliases."
    )


def _check_duplicates(node, path: tuple = (), visited: set | None = None) -> None:
    """Reject a key given twice in one mapping (plain YAML keeps the last one silently).

    Each node is walked once: a node repeated by aliases (*name) is checked where it first
    appears, so nested aliases cost nothing more (`visited` holds the ids of walked nodes).
    """
    visited = set() if visited is None else visited
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"Duplicate key {quote(key)} at line {key_node.start_mark.line + 1} (first at "
                    f"line {seen[key] + 1}) in {key_node.start_mark.name}, at "
                    f"`{format_path([*path, key])}`. Expected each key once in a mapping "
                    "(study names must be unique)."
                )
            seen[key] = key_node.start_mark.line
            _check_duplicates(value_node, (*path, key), visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, (*path, i), visited)


def read_yaml(path: str | Path) -> Any:
    """Parse one YAML file strictly; a syntax error or duplicate key names the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:  # a stream, so YAML marks carry the file name
            loader = _AliasRecordingLoader(fh)
            try:
                node = loader.get_single_node()
                if node is not None:
                    _check_expansion(node, loader.aliases, path)
                _check_duplicates(node)
                return None if node is None else loader.construct_document(node)
            finally:
                loader.dispose()
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}.") from None
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(
            f"Config file {path} nests lists or mappings too deeply to be read. Expected a YAML "
            "mapping with keys datasets, baselines and studies, nested a few levels deep."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"Config file {path} is not valid YAML{where}: {problem}. "
            "Expected a YAML mapping with keys datasets, baselines and studies."
        ) from None


#: A number in exponent form without a dot (`1e-3`, `5E4`): a float in YAML 1.2, the current
#: YAML, but a string to PyYAML (YAML 1.1 wants `1.0e-3`), and so to Snakemake's config too.
EXPONENT_NUMBER = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


def yaml12_numbers(value: Any) -> Any:
    """`value` with every string of the form `1e-3` read as YAML 1.2 reads it: a float."""
    if isinstance(value, dict):
        return {k: yaml12_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [yaml12_numbers(v) for v in value]
    if isinstance(value, str) and EXPONENT_NUMBER.match(value.strip()):
        return float(value)
    return value


def validate(config: dict, files: Iterable[str | Path] = (), schema: dict | None = None) -> dict:
    """Validate `config` against the schema and return a deep copy with defaults filled in.

    Raises ConfigError listing every problem, each with its key path, the file(s) and what was
    expected and received.
    """
    schema = schema or load_schema()
    filled = yaml12_numbers(copy.deepcopy(config)) if config is not None else {}
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
