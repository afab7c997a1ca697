"""Run the benchmarks and write benchmarks/RESULTS.md (what `make bench` does).

    python benchmarks/run.py                  # everything: about an hour on an idle 2-core machine
    python benchmarks/run.py --only plan,report
    python benchmarks/run.py --assemble       # only rebuild RESULTS.md from benchmarks/out/

Each benchmark saves its section in benchmarks/out/ as soon as it has numbers, and RESULTS.md is
rebuilt after each one, so an interrupted run still leaves what it measured. Run it on an
otherwise idle machine: every comparison is side by side, but other work still adds noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import OUT, PYTHON, REPO, machine_facts

# name -> (script, arguments); in the order they run and appear in RESULTS.md
BENCHMARKS = {
    "plan": ("bench_plan.py", ["--rounds", "3"]),
    "report": ("bench_report.py", ["--rounds", "3"]),
    "fit": ("bench_fit.py", ["--rounds", "3"]),
    "levers": ("bench_fit.py", ["--levers", "--rounds", "3"]),
    "e2e": ("bench_e2e.py", ["--rounds", "2", "--backends", "jax,tensorflow"]),
    "fused": (
        "bench_fused.py",
        ["--towers", "--default", "--rounds", "1", "--backends", "tensorflow,jax"],
    ),
    "fused_drift": ("fused_drift.py", ["--epochs", "200", "--repeats", "10"]),
    "fused_experiments": ("bench_groups.py", ["--rounds", "1"]),
}
# (a, b, f), fused repeats, (c), (d), (e), levers
ORDER = [
    "e2e",
    "fused_default",
    "fused_default_loop",
    "fused_towers",
    "fused_drift",
    "fused_experiments",
    "fit",
    "plan",
    "report",
    "levers",
    "slurm",
]
RESULTS = REPO / "benchmarks" / "RESULTS.md"


def assemble() -> None:
    facts = machine_facts()
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    parts = [
        "# Benchmark results",
        "Written by `make bench` (`python benchmarks/run.py`); see benchmarks/README.md for what "
        "each figure measures. Every figure is `median (min–max, n=samples)`; every comparison "
        "was measured side by side in the same run and is given as a ratio of paired samples.",
        f"**Machine:** {facts['cpu']}, {facts['cores']} cores, {facts['memory_gb']} GB RAM, "
        f"{facts['os']}, Python {facts['python']}; {versions}.",
    ]
    notes = REPO / "benchmarks" / "NOTES.md"
    if notes.exists():
        parts.append(notes.read_text().strip())
    missing = []
    for name in ORDER:
        md = OUT / f"{name}.md"
        if not md.exists():
            missing.append(name)
            continue
        raw = json.loads((OUT / f"{name}.json").read_text())
        parts.append(md.read_text().strip())
        parts.append(
            f"<sub>Measured {raw['finished']}; load average afterwards {raw['load_after']}.</sub>"
        )
    if missing:
        parts.append(f"**Not measured in this run:** {', '.join(missing)}.")
    RESULTS.write_text("\n\n".join(parts) + "\n")
    print(f"wrote {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(BENCHMARKS))
    ap.add_argument("--assemble", action="store_true")
    args = ap.parse_args()
    if not args.assemble:
        for name in args.only.split(","):
            script, extra = BENCHMARKS[name]
            start = time.time()
            print(f"== {name}: {script} {' '.join(extra)}", flush=True)
            proc = subprocess.run([PYTHON, str(REPO / "benchmarks" / script), *extra])
            print(
                f"== {name}: exit {proc.returncode} after {time.time() - start:.0f} s", flush=True
            )
            assemble()
            if proc.returncode:
                sys.exit(proc.returncode)
    assemble()


if __name__ == "__main__":
    main()
