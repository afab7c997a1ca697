"""The errors of a config: every one names the key path, the file it came from, what was
expected and what was received (at most `QUOTE_LIMIT` characters of it), in the user's terms.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema


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


#: How much of a received value an error message quotes.
QUOTE_LIMIT = 200


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` for an error message, cut to `limit` characters: "… (N characters)".

    Built piece by piece, so a huge value (or one repeating a part many times, as YAML aliases
    do) costs at most ~100,000 characters of work, and a list that contains itself ends.
    """
    budget = 100_000
    pieces, length = [], 0
    for piece in _repr_pieces(value, set()):
        if length <= limit:
            pieces.append(piece)
        length += len(piece)
        if length > budget:
            break
    if length <= limit:
        return "".join(pieces)
    total = f"{length:,} characters" if length <= budget else f"over {budget:,} characters"
    return "".join(pieces)[:limit] + f"… ({total})"


def _repr_pieces(value: Any, open_ids: set):
    """The pieces of `repr(value)` for plain data, lazily; `[...]` where a list contains itself."""
    brackets = {dict: "{}", list: "[]", tuple: "()"}
    kind = type(value)
    if kind not in brackets:
        yield repr(value)
        return
    if id(value) in open_ids:
        yield brackets[kind][0] + "..." + brackets[kind][1]
        return
    open_ids.add(id(value))
    yield brackets[kind][0]
    items = value.items() if kind is dict else value
    for i, item in enumerate(items):
        if i:
            yield ", "
        if kind is dict:
            yield from _repr_pieces(item[0], open_ids)
            yield ": "
            item = item[1]
        yield from _repr_pieces(item, open_ids)
    if kind is tuple and len(value) == 1:
        yield ","
    yield brackets[kind][1]
    open_ids.discard(id(value))


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
    if v == "maximum":  # a cap says why in its description
        why = " ".join(error.schema.get("description", "").split()).rstrip(".")
        return f"a number <= {arg}" + (f" ({why})" if why else "")
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
    return quote_text(error.message)  # jsonschema's own message quotes the value


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
        return quote_text("unknown key(s) " + ", ".join(map(quote, extra)))
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return "no key(s) " + ", ".join(map(repr, missing))
    return quote(error.instance)


def quote_text(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def invalid(files: Iterable[str | Path], path: Iterable[Any], expected: str, received: Any):
    """The ConfigError for one bad value: its key path, the file(s), expected and received."""
    return ConfigError(
        f"Invalid config ({describe_source(files)}):\n  - `{format_path(path)}`: expected "
        f"{expected}. Received: {quote(received)}."
    )
