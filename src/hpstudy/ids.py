"""How things are named: experiment ids, run names, seeds and path-safe study names.

Pure standard library, so a training job can parse its run name without importing the planner.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

HASH_LENGTH = 10


def format_value(value: Any) -> str:
    """A short, readable rendering of a hyperparameter value for labels and tables
    (a grid cell's label, a varied value in a table)."""
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


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal specs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def short_hash(obj: Any, length: int = HASH_LENGTH) -> str:
    """The first `length` hex digits of the SHA-256 of `obj`'s canonical JSON."""
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


def fused_label(runs) -> str:
    """What names a fused job of an experiment in its log and backup: `3-repeats` for r0..r2
    (the first jobs of every experiment), `r3-r4` for repeats added later."""
    runs = list(runs)
    if runs == [f"r{k}" for k in range(len(runs))]:
        return f"{len(runs)}-repeats"
    return "-".join(runs)


def fused_rule_name(runs) -> str:
    """The rule of a fused job: `train_3_repeats` for r0..r2, `train_r3_r4` for r3 and r4."""
    label = fused_label(runs)
    return f"train_{label.replace('-', '_')}"


RUN_NAME = re.compile(r"^(?:r(?P<repeat>\d+)|f(?P<fold>\d+)of(?P<folds>\d+))$")


def parse_run(name: str) -> dict:
    """`r3` -> {"repeat": 3}; `f1of5` -> {"fold": 1, "folds": 5} (the run wildcard's two forms)."""
    match = RUN_NAME.match(name)
    if not match or (match["fold"] and not int(match["fold"]) < int(match["folds"])):
        raise ValueError(f"Expected a run name r<repeat> or f<fold>of<k>. Received: {name!r}")
    return {k: int(v) for k, v in match.groupdict().items() if v is not None}
