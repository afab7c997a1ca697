"""The command line, for what needs no Snakemake:

    python -m hpstudy check CONFIG.yaml [MORE.yaml ...]   check config files, run nothing
    python -m hpstudy summary [STUDY]                     the verdict tables of the last run
    python -m hpstudy status [CONFIG.yaml ...]            per study: runs done, running, left
    python -m hpstudy diff OLD.yaml NEW.yaml              experiments, specs and verdicts that differ

`--directory DIR` (all but check) reads the results of another working directory. Snakemake
parses a --configfile before any workflow code runs and, when the YAML is broken, says only
"not valid JSON or YAML"; `check` names the file, the line and the column, and checks everything
the workflow checks when it loads (schema, keys across sections, every study).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import terminal
from .config import ConfigError, describe_source
from .plan import load_plan

DEFAULT_CONFIG = "config/config.yaml"


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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m hpstudy", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    c = commands.add_parser("check", help="check config files as the workflow would")
    c.add_argument("files", nargs="+", metavar="CONFIG.yaml")
    s = commands.add_parser("summary", help="the verdict tables of the last run")
    s.add_argument("study", nargs="?", help="one study (its name): also its test-split table")
    st = commands.add_parser("status", help="per study: runs done, running, interrupted, left")
    st.add_argument("files", nargs="*", metavar="CONFIG.yaml", help=f"default: {DEFAULT_CONFIG}")
    d = commands.add_parser("diff", help="what differs between two configs")
    d.add_argument("old", metavar="OLD.yaml")
    d.add_argument("new", metavar="NEW.yaml")
    for sub in (s, st, d):
        sub.add_argument("--directory", "-d", default=".", help="the working directory (.)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "check":
        return check(args.files)
    root = Path(args.directory)
    try:
        if args.command == "summary":
            print(terminal.summary(root, args.study))
        elif args.command == "status":
            files = args.files or [str(root / DEFAULT_CONFIG)]
            print(terminal.status(load_plan(files), root))
        else:
            print(terminal.diff(load_plan([args.old]), load_plan([args.new]), root))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
