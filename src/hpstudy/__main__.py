"""`python -m hpstudy check CONFIG.yaml [MORE.yaml ...]`: check config files, run nothing.

Snakemake parses a --configfile before any workflow code runs and, when the YAML is broken,
says only "not valid JSON or YAML"; this names the file, the line and the column, and checks
everything the workflow checks when it loads (schema, keys across sections, every study).
"""

from __future__ import annotations

import sys

from .config import ConfigError, describe_source
from .plan import load_plan

USAGE = "usage: python -m hpstudy check CONFIG.yaml [MORE.yaml ...]"


def check(files: list[str]) -> int:
    """Plan `files` as the workflow would; print what they plan, or the error. Returns 0 or 1."""
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


def main(argv: list[str] | None = None) -> int:
    """The command line: `check FILE...` (the only command so far)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "check":
        print(USAGE, file=sys.stderr)
        return 2
    return check(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
