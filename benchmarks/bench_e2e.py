"""(a) end to end, (b) fixed cost per training job, (f) incremental rerun.

(a) `snakemake --cores all` on a copy of the default config, from an empty working directory,
    against `notebook_loop.py` training the same runs in one process; in each round the two run
    one after the other, on the same backend, and the ratio is taken within the round.
(b) From the workflow's own runs: process start to the first epoch (`timing.startup_seconds` in
    metrics.json) as a share of the job's wall time (Snakemake's `benchmark.tsv`).
(f) After a round, one value of one study is changed and Snakemake runs again: the rerun's wall
    time against the wall time of the one training job it had to run.

    python benchmarks/bench_e2e.py [--rounds 2] [--backends tensorflow,jax] [--epochs N]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml
from _common import (
    PYTHON,
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


def write_config(source: Path, workdir: Path, backend: str, epochs: int | None, edit=None) -> Path:
    config = yaml.safe_load(Path(source).read_text())
    config["keras_backend"] = backend
    if epochs:
        for base in config["baselines"].values():
            base.setdefault("training", {})["epochs"] = epochs
    if edit:
        edit(config)
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, config: Path, log: Path) -> float:
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "all",
    ]
    return run_timed(cmd, log=log)


def job_seconds(run_dir: Path) -> float:
    """The training job's wall time as Snakemake measured it (benchmark.tsv, column s)."""
    with open(run_dir / "benchmark.tsv") as fh:
        return float(next(csv.DictReader(fh, delimiter="\t"))["s"])


def run_dirs(workdir: Path) -> dict:
    return {p.parent: p for p in (workdir / "results" / "runs").glob("*/*/metrics.json")}


def fixed_costs(workdir: Path) -> list[dict]:
    """Per training job: wall, start-up (process start to first epoch), first epoch, fit."""
    rows = []
    for run_dir in sorted(run_dirs(workdir)):
        timing = json.loads((run_dir / "metrics.json").read_text())["timing"]
        rows.append({"job": job_seconds(run_dir), **timing})
    return rows


def change_one_value(round_: int):
    """Edit: the last value of the first numeric ofat factor, scaled (a new experiment each time)."""

    def edit(config):
        for study in config["studies"].values():
            for values in (study.get("factors") or {}).values():
                if isinstance(values[-1], float):
                    values[-1] = round(values[-1] * (0.9 - 0.1 * round_), 6)
                    return
        raise SystemExit("no numeric ofat factor to change in the default config")

    return edit


def summarise(args, raw: dict, rounds_done: int) -> None:
    epochs = f"{args.epochs} epochs (quick check)" if args.epochs else "the config's epochs"
    rows_a, rows_b, rows_f = [], [], []
    for backend, d in raw.items():
        if not d["workflow"]:
            continue
        ratio = ratio_stats(d["workflow"], d["notebook"])
        rows_a.append(
            [
                backend,
                fmt(stats(d["workflow"])),
                fmt(stats(d["notebook"])),
                fmt(ratio, "×"),
                "yes"
                if ratio["max"] <= 0.8
                else ("median only" if ratio["median"] <= 0.8 else "no"),
            ]
        )
        jobs = d["jobs"]
        startup = [j["startup_seconds"] for j in jobs]
        share = [100 * j["startup_seconds"] / j["job"] for j in jobs]
        first = [100 * j["first_epoch_seconds"] / j["job"] for j in jobs]
        rows_b.append(
            [
                backend,
                len(jobs),
                fmt(stats([j["job"] for j in jobs]), "s", 1),
                fmt(stats(startup), "s", 1),
                fmt(stats(share), "%", 0),
                fmt(stats(first), "%", 0),
            ]
        )
        extra = [a - b for a, b in zip(d["rerun"], d["job"])]
        rows_f.append(
            [
                backend,
                fmt(stats(d["rerun"]), "s", 1),
                fmt(stats(d["job"]), "s", 1),
                fmt(stats(extra), "s", 1),
                "yes" if max(extra) <= 20 else "no",
            ]
        )
    md = "\n\n".join(
        [
            "## (a) End to end: workflow against the notebook loop",
            f"Config `{Path(args.config).relative_to(REPO) if Path(args.config).is_relative_to(REPO) else args.config}` ({epochs}), from an empty working directory, "
            "`snakemake --cores all` against `benchmarks/notebook_loop.py` (same runs, data, epochs; "
            "one process). Each round runs both, one after the other; the ratio is taken per round. "
            f"Load average at the start of the rounds: {', '.join(f'{x:.1f}' for b in raw.values() for x in b['load'])}.",  # noqa: E501
            table(
                ["backend", "workflow", "notebook loop", "workflow / notebook", "≤ 0.8×?"], rows_a
            ),
            "## (b) Fixed cost per training job",
            "Start-up = process start to the first epoch (interpreter, imports, data, model); the first "
            "epoch also traces and compiles the step. Shares are of the job's wall time (`benchmark.tsv`).",
            table(
                ["backend", "jobs", "job wall", "start-up", "start-up share", "first-epoch share"],
                rows_b,
            ),
            "## (f) Incremental: one value changed",
            "After each round, the last value of the first numeric factor of an ofat study is changed; "
            "Snakemake then retrains that one experiment and rebuilds its study and the report.",
            table(
                ["backend", "rerun wall", "its training job", "rerun − training", "≤ +20 s?"],
                rows_f,
            ),
        ]
    )
    write_section("e2e", md, {"epochs": args.epochs, "rounds": rounds_done, "raw": raw})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", default="tensorflow,jax")
    ap.add_argument("--epochs", type=int, default=None, help="override (quick check only)")
    ap.add_argument("--root", default="/tmp/hpstudy-bench/e2e")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    args = ap.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    backends = args.backends.split(",")
    raw = {
        b: {"workflow": [], "notebook": [], "load": [], "jobs": [], "rerun": [], "job": []}
        for b in backends
    }
    for r in range(args.rounds):
        for backend in backends:
            wd = fresh_dir(root / f"{backend}-{r}")
            config = write_config(args.config, wd, backend, args.epochs)
            raw[backend]["load"].append(load())
            wf = snakemake(wd, config, root / f"{backend}-{r}.workflow.log")
            nb = run_timed(
                [
                    PYTHON,
                    str(REPO / "benchmarks" / "notebook_loop.py"),
                    "--config",
                    str(config),
                    "--workdir",
                    str(wd),
                    "--backend",
                    backend,
                ],
                log=root / f"{backend}-{r}.notebook.log",
            )
            raw[backend]["workflow"].append(wf)
            raw[backend]["notebook"].append(nb)
            raw[backend]["jobs"] += fixed_costs(wd)
            # (f) one value changed: what does the rerun cost beyond its one training?
            before = set(run_dirs(wd))
            config = write_config(args.config, wd, backend, args.epochs, change_one_value(r))
            rerun = snakemake(wd, config, root / f"{backend}-{r}.rerun.log")
            new = sorted(set(run_dirs(wd)) - before)
            if len(new) != 1:
                raise SystemExit(f"expected one new run after the change, got {new}")
            raw[backend]["rerun"].append(rerun)
            raw[backend]["job"].append(job_seconds(new[0]))
            print(
                f"round {r} {backend}: workflow {wf:.1f} s, notebook {nb:.1f} s, "
                f"rerun {rerun:.1f} s for a {raw[backend]['job'][-1]:.1f} s job",
                flush=True,
            )

            summarise(args, raw, rounds_done=r + 1)  # partial results survive an interrupted run


if __name__ == "__main__":
    main()
