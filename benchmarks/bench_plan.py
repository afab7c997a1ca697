"""(d) Planning: `snakemake -n` on generated configs of 100, 1,000 and 10,000 experiments.

Each config is one grid study around the default config's `main` baseline (learning rate × L2 ×
momentum × batch size), one run per experiment. The floor is Snakemake itself: a minimal
Snakefile with the same number of jobs (one rule, one output each, plus a target rule), dry-run
the same way, side by side in each round. Output goes to a file, so printing is included.
The planner alone (`hpstudy.plan.load_plan`, in-process) is timed too.

    python benchmarks/bench_plan.py [--sizes 100,1000,10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import yaml
from _common import (
    REPO,
    SNAKEMAKE,
    fmt,
    fresh_dir,
    load,
    ratio_stats,
    run_timed,
    stats,
    table,
    write_section,
)

FACTORS = {
    "optimizer.learning_rate": [round(0.001 * (i + 1), 4) for i in range(10)],
    "model.regularizer.l2": [round(0.0001 * (i + 1), 5) for i in range(10)],
    "optimizer.momentum": [round(0.05 * i, 2) for i in range(10)],
    "training.batch_size": [16 * (i + 1) for i in range(10)],
}

MINIMAL = """N = {n}


rule all:
    input:
        expand("out/{i}.txt", i=range(N)),


rule job:
    output:
        "out/{i}.txt",
    shell:
        "touch {output}"
"""


def grid_config(n: int) -> dict:
    """The default config's datasets and `main` baseline, with one grid of exactly `n` experiments."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    k = {100: 2, 1000: 3, 10000: 4}[n]
    grid = dict(itertools.islice(FACTORS.items(), k))
    return {
        "title": f"{n} experiments",
        "datasets": {"digits": base["datasets"]["digits"]},
        "baselines": {"main": base["baselines"]["main"]},
        "studies": {"grid": {"kind": "grid", "baseline": "main", "grid": grid}},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", default="/tmp/hpstudy-bench/plan")
    args = ap.parse_args()
    root = Path(args.root)
    from hpstudy.plan import load_plan

    rows, raw = [], {}
    for n in map(int, args.sizes.split(",")):
        wd = fresh_dir(root / f"ours-{n}")
        cfg = wd / "config" / "config.yaml"
        cfg.parent.mkdir()
        cfg.write_text(yaml.safe_dump(grid_config(n), sort_keys=False))
        floor_dir = fresh_dir(root / f"floor-{n}")
        (floor_dir / "Snakefile").write_text(MINIMAL.replace("{n}", str(n)))
        ours, floor, planner, loads = [], [], [], []
        for r in range(args.rounds):
            loads.append(load())
            ours.append(
                run_timed(
                    [
                        SNAKEMAKE,
                        "-n",
                        "--cores",
                        "1",
                        "--snakefile",
                        str(REPO / "Snakefile"),
                        "--directory",
                        str(wd),
                        "--configfile",
                        str(cfg),
                    ],
                    log=root / f"ours-{n}-{r}.log",
                )
            )
            floor.append(
                run_timed(
                    [
                        SNAKEMAKE,
                        "-n",
                        "--cores",
                        "1",
                        "--snakefile",
                        str(floor_dir / "Snakefile"),
                        "--directory",
                        str(floor_dir),
                    ],
                    log=root / f"floor-{n}-{r}.log",
                )
            )
            t0 = time.perf_counter()
            plan = load_plan([cfg])
            planner.append(time.perf_counter() - t0)
        assert len(plan.experiments) == n, (n, len(plan.experiments))
        ratio = ratio_stats(ours, floor)
        raw[n] = {"ours": ours, "floor": floor, "planner": planner, "load": loads}
        rows.append(
            [
                f"{n:,}",
                fmt(stats(ours)),
                fmt(stats(floor)),
                fmt(ratio, "×"),
                fmt(stats(planner)),
                "yes"
                if ratio["max"] <= 1.5
                else ("median only" if ratio["median"] <= 1.5 else "no"),
            ]
        )
        print(rows[-1], flush=True)
    md = "\n\n".join(
        [
            "## (d) Planning: `snakemake -n`",
            "Generated configs: one grid study around `main` with 100, 1,000 or 10,000 experiments "
            "(one run each). Floor: a minimal Snakefile with the same number of jobs, dry-run side by "
            "side in each round. Planner = `hpstudy.plan.load_plan` alone, in-process.",
            table(
                [
                    "experiments",
                    "workflow `snakemake -n`",
                    "minimal Snakefile",
                    "ratio",
                    "planner alone",
                    "≤ 1.5×?",
                ],
                rows,
            ),
        ]
    )
    write_section("plan", md, {"rounds": args.rounds, "raw": raw})


if __name__ == "__main__":
    main()
