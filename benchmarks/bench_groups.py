"""Fused experiments (issue 21): the default config with experiments fused against each
experiment's own fused repeats, side by side in each round, and whether the verdicts agree.

`snakemake --cores all` on the default config (3 repeats), from an empty `results/` to the
report, with `execution.fuse_experiments` on (the default: experiments that differ only in
values a tower holds on its own train as one job) and off (one job per experiment, its repeats
fused), alternating which goes first. Then every study's verdicts (`summary.csv`: `verdict` and
`test_verdict` of each variant) are compared between the two: fused and unfused towers differ in
float noise only, so the verdicts a person reads should be the same.

    python benchmarks/bench_groups.py --rounds 1
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from _common import REPO, fmt, fresh_dir, ratio_stats, stats, table, write_section

MODES = {"experiments fused": True, "repeats fused only": False}


def verdicts(workdir: Path) -> dict:
    """(study, variant, column) -> verdict, over every study's summary.csv."""
    out = {}
    for path in sorted((workdir / "results" / "studies").glob("*/summary.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for column in ("verdict", "test_verdict"):
                    if row.get(column):
                        out[(path.parent.name, row["variant"], column)] = row[column]
    return out


def training_jobs(log: Path) -> int | None:
    """How many training jobs the run planned (the logger's first line)."""
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("hpstudy: ") and "training jobs" in line:
            return int(line.split()[1])
    return None


def main() -> None:
    import bench_e2e

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=None, help="override (quick check only)")
    ap.add_argument("--root", default="/tmp/hpstudy-bench/groups")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    args = ap.parse_args()
    root = Path(args.root)
    times: dict = {mode: [] for mode in MODES}
    jobs: dict = {}
    agree, compared, differ = 0, 0, []
    for round_ in range(args.rounds):
        order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
        found = {}
        for mode in order:
            work = fresh_dir(root / f"{'on' if MODES[mode] else 'off'}-{round_}")

            def edit(config, on=MODES[mode]):
                config["execution"] = {"fuse_experiments": on}

            config = bench_e2e.write_config(
                Path(args.config), work, "tensorflow", args.epochs, edit
            )
            log = work / "snakemake.log"
            times[mode].append(bench_e2e.snakemake(work, config, log))
            jobs[mode] = training_jobs(log)
            found[mode] = verdicts(work)
            print(mode, round(times[mode][-1], 1), "s,", jobs[mode], "training jobs", flush=True)
        on, off = (found[m] for m in MODES)
        for key in sorted(set(on) | set(off)):
            compared += 1
            if on.get(key) == off.get(key):
                agree += 1
            else:
                differ.append(f"round {round_}: {key}: {on.get(key)} against {off.get(key)}")
    on, off = list(MODES)
    ratio = ratio_stats(times[on], times[off])
    rows = [[m, jobs[m], fmt(stats(times[m]))] for m in MODES]
    epochs = f"{args.epochs} epochs (quick check)" if args.epochs else "the config's epochs"
    markdown = "\n\n".join(
        [
            "## Fused experiments: the default config (`bench_groups.py`)",
            f"`snakemake --cores all` on the default config (3 repeats, {epochs}), from an empty "
            "`results/` to the report, with `execution.fuse_experiments` on and off, alternating "
            "which goes first in each round.",
            table(["mode", "training jobs", "wall time"], rows),
            f"Experiments fused / repeats fused only: {fmt(ratio, '×')} (paired by round).",
            f"Verdicts (`verdict` and `test_verdict` of every variant of every study): {agree} of "
            f"{compared} the same." + ("" if not differ else " Differing: " + "; ".join(differ)),
        ]
    )
    raw = {"rounds": args.rounds, "times": times, "jobs": jobs, "ratio": ratio,
           "verdicts_same": agree, "verdicts_compared": compared, "differ": differ}  # fmt: skip
    write_section("fused_experiments", markdown, raw)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    main()
