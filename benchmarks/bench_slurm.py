"""(g) The default config through the real SLURM cluster against the same run on this machine.

In each round, from empty working directories, `snakemake --cores 2` (the local executor on the
cluster node's 2 cores) and `snakemake --profile profiles/slurm` (the shipped profile, through
the single-node cluster of tools/slurm/up.sh) run the default config one after the other, with
its epochs cut to `--epochs` as the issue's measurement did; the ratio is taken within the round.
Needs the cluster up (`bash tools/slurm/up.sh`).

    python benchmarks/bench_slurm.py [--rounds 1] [--epochs 20]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import (
    REPO,
    SNAKEMAKE,
    fmt,
    fresh_dir,
    ratio_stats,
    run_timed,
    stats,
    table,
    write_section,
)
from bench_e2e import write_config

WORK = Path(tempfile.gettempdir()) / "hpstudy-bench" / "slurm"


def run(workdir, config, log, *how: str) -> float:
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), *how]  # fmt: skip
    return run_timed(cmd, cwd=REPO, log=log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    if not shutil.which("sbatch"):
        raise SystemExit("sbatch not found: bring the cluster up with tools/slurm/up.sh")
    local, cluster = [], []
    for r in range(args.rounds):
        for name, how, out in (
            ("local", ("--cores", "2"), local),
            # This cluster keeps no accounting: the status comes from squeue (README, "Running
            # on a cluster"); the rest is the shipped profile as it is.
            (
                "slurm",
                ("--profile", str(REPO / "profiles" / "slurm"), "--slurm-status-command", "squeue"),
                cluster,
            ),  # fmt: skip
        ):
            workdir = fresh_dir(WORK / f"{name}-{r}")
            config = write_config(
                REPO / "config" / "config.yaml", workdir, "tensorflow", args.epochs
            )
            out.append(run(workdir, config, workdir / "snakemake.log", *how))
            print(f"round {r}: {name} {out[-1]:.1f} s", flush=True)
    ratio = ratio_stats(cluster, local)
    text = (
        f"### (g) The default config through SLURM against locally\n\n"
        f"The default config with {args.epochs} epochs, from empty directories, fused repeats (the "
        "default): `--cores 2` against `--profile profiles/slurm --slurm-status-command squeue` (this "
        "cluster keeps no accounting) on the single-node cluster "
        "(the same 2 cores), one after the other in each round.\n\n"
        + table(
            ["", "wall time"],
            [
                ["local (`--cores 2`)", fmt(stats(local))],
                ["SLURM (shipped profile, squeue status)", fmt(stats(cluster))],
                ["SLURM / local", fmt(ratio, unit="×")],
            ],
        )  # fmt: skip
    )
    write_section("slurm", text, {"local": local, "slurm": cluster, "ratio": ratio})


if __name__ == "__main__":
    main()
