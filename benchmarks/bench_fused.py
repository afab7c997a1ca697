"""Fused repeats (issue 12): what training R repeats together costs, against R jobs.

Two parts, each measured side by side in one run:

- **towers** (`--towers`): seconds per epoch and peak memory of one fused job of R towers, for
  R = 1, 2, 5, 10, 20, of the digits `main` model (64-32-16-64-32-16-64-10, batch 256) and of the
  MNIST-shaped 784-300-100-10 MLP (synthetic 784-pixel rows, batch 32). Each R runs in its own
  process (so its peak RSS is its own); an epoch's time is the median of epochs 2..E. "per tower"
  is the fused epoch divided by R times the epoch of the run trained alone (`training.train_run`,
  as an unfused job trains it): 1.0 means no gain, 1/R means R towers cost one run.
- **default** (`--default`): the default config with `repeats: 5`, from prepared data to the
  report, fused (`execution.fuse_repeats: true`) against unfused (one job per repeat), and the
  notebook loop that trains the same runs one after another in one Python process.

    python benchmarks/bench_fused.py --towers --rounds 3
    python benchmarks/bench_fused.py --default --rounds 1 --backends tensorflow,jax
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import (
    PYTHON,
    REPO,
    fmt,
    fresh_dir,
    ratio_stats,
    run_timed,
    stats,
    table,
    write_section,
)

TOWERS = [1, 2, 5, 10, 20]
MODELS = {
    "digits main": {"hidden": [32, 16, 64, 32, 16, 64], "rows": 1077, "features": 64, "batch": 256},
    "784-300-100-10": {"hidden": [300, 100], "rows": 6000, "features": 784, "batch": 32},
}

# One fused job of R towers, in a process of its own: prints {"epoch_seconds": [...], "rss_mb"}.
CHILD = r"""
import json, resource, sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
from hpstudy import devices
devices.setup(threads=1, backend=sys.argv[3], gpus=0)
from hpstudy import fused, prepare, training
case = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
n, f = case["rows"], case["features"]
x = rng.normal(size=(n + 400, f)).astype("float32")
y = rng.integers(0, 10, size=n + 400).astype("int64")
arrays = {"x_train": x[:n], "y_train": y[:n], "x_val": x[n:n+200], "y_val": y[n:n+200],
          "x_test": x[n+200:], "y_test": y[n+200:]}
root = Path(tempfile.mkdtemp())
prepare.save(arrays, root / "data.npz", {"input_shape": [f], "n_classes": 10})
spec = {"data": {"task": "classification"},
        "model": {"kind": "mlp", "hidden": case["hidden"], "activation": "relu",
                  "initializer": "he_normal", "output_initializer": "glorot_uniform",
                  "regularizer": {"l1": 0.0, "l2": 0.0, "layers": "hidden", "bias": False},
                  "dropout": {"rate": 0.0, "layers": "all"}},
        "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.45, "nesterov": False},
        "training": {"epochs": case["epochs"], "batch_size": case["batch"], "shuffle": True,
                     "seed": 42, "steps_per_execution": 1}}
R = case["towers"]  # 0: the run alone (training.train_run), as an unfused job trains it
outs = [{k: str(root / f"r{i}" / f"{k}.{e}") for k, e in
         (("history", "csv"), ("timing", "csv"), ("metrics", "json"), ("model", "keras"))}
        for i in range(max(R, 1))]
if R == 0:
    training.train_run(spec, root / "data.npz", outs[0], 1, "r0", "bench")
else:
    fused.train_repeats(spec, [root / "data.npz"] * R, outs, list(range(1, R + 1)),
                        [f"r{i}" for i in range(R)], "bench")
seconds = [float(l.split(",")[1]) for l in Path(outs[0]["timing"]).read_text().splitlines()[1:]]
print(json.dumps({"epoch_seconds": seconds,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def tower_case(model: dict, towers: int, epochs: int, backend: str) -> dict:
    case = {**model, "towers": towers, "epochs": epochs}
    proc = subprocess.run(
        [PYTHON, "-c", CHILD, json.dumps(case), str(REPO / "src"), backend],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    per_epoch = sorted(out["epoch_seconds"][1:])  # the first epoch compiles
    return {"epoch": per_epoch[len(per_epoch) // 2], "rss_mb": out["rss_mb"]}


def towers(args) -> None:
    raw: dict = {}
    rows = []
    for name, model in MODELS.items():
        for backend in args.backends.split(","):
            samples = {r: [] for r in [0, *TOWERS]}
            for _ in range(args.rounds):
                for r in samples:  # side by side: the run alone and every R in each round
                    samples[r].append(tower_case(model, r, args.tower_epochs, backend))
            one = [s["epoch"] for s in samples[0]]
            for r in samples:
                epoch = [s["epoch"] for s in samples[r]]
                rss = stats([s["rss_mb"] for s in samples[r]])
                per_tower = ratio_stats(epoch, [max(r, 1) * o for o in one])
                raw[f"{name}/{backend}/{r or 'alone'}"] = {
                    "epoch": stats(epoch),
                    "per_tower": per_tower,
                    "rss": rss,
                }
                rows.append([name, backend, r or "alone", fmt(stats(epoch), "s", 4),
                             fmt(per_tower, "×"), fmt(rss, "MB", 0)])  # fmt: skip
    markdown = "\n\n".join(
        [
            "## Fused repeats: R towers in one job (`bench_fused.py --towers`)",
            "Seconds per epoch of one fused job of R towers (median of epochs 2..E, then median "
            "over rounds), per tower against R epochs of the run trained alone (`alone`: "
            "`training.train_run`, as an unfused job trains it; 1.0: no gain; 1/R: R towers cost "
            "one run), and the job's peak resident memory. One thread per job, as in the "
            "workflow.",
            table(["model", "backend", "R", "s / epoch", "per tower", "peak memory"], rows),
        ]
    )
    write_section(
        "fused_towers", markdown, {"rounds": args.rounds, "epochs": args.tower_epochs, **raw}
    )


def default_config(args) -> None:
    import bench_e2e

    root = Path(args.root)
    raw: dict = {}
    rows = []
    for backend in args.backends.split(","):
        times = {"fused": [], "unfused": [], "notebook": []}
        for round_ in range(args.rounds):
            modes = args.modes.split(",")
            for mode in modes:
                work = fresh_dir(root / f"{backend}-{mode}-{round_}")

                def edit(config, mode=mode):
                    config["repeats"] = 5
                    config["execution"] = {"fuse_repeats": mode == "fused"}

                config = bench_e2e.write_config(Path(args.config), work, backend, args.epochs, edit)
                times[mode].append(bench_e2e.snakemake(work, config, work / "snakemake.log"))
                # After the last mode, on its prepared data (the same in every mode).
                if mode == modes[-1] and backend in args.notebook_backends.split(","):
                    loop = [
                        PYTHON, str(REPO / "benchmarks" / "notebook_loop.py"),
                        "--config", str(config), "--workdir", str(work), "--backend", backend,
                    ]  # fmt: skip
                    times["notebook"].append(run_timed(loop, log=work / "notebook.log"))
            print(backend, {k: v[-1] for k, v in times.items() if v}, flush=True)
        ran = {k: bool(v) for k, v in times.items()}  # --modes, --notebook-backends
        both = ran["unfused"] and ran["fused"]
        fused_vs_unfused = ratio_stats(times["fused"], times["unfused"]) if both else None
        looped = ran["notebook"] and ran["fused"]
        fused_vs_loop = ratio_stats(times["fused"], times["notebook"]) if looped else None
        raw[backend] = {k: stats(v) for k, v in times.items() if v} | {
            "fused/unfused": fused_vs_unfused,
            "fused/notebook": fused_vs_loop,
        }
        cells = [fmt(stats(times[k])) if ran[k] else "not run" for k in times]
        rows.append([backend, *cells, fmt(fused_vs_unfused, "×") if both else "not run",
                     fmt(fused_vs_loop, "×") if looped else "not run"])  # fmt: skip
    epochs = f"{args.epochs} epochs (quick check)" if args.epochs else "the config's epochs"
    markdown = "\n\n".join(
        [
            "## Fused repeats: the default config with `repeats: 5` (`bench_fused.py --default"
            + ("`)" if args.name == "fused_default" else f" --modes {args.modes}`)"),
            f"`snakemake --cores all` on the default config with `repeats: 5` ({epochs}), from an "
            "empty `results/` to the report, fused and unfused, and the notebook loop over the "
            "same runs (on the prepared data of the round's last workflow run, the same in every mode), "
            "measured in the same round.",
            table(
                [
                    "backend",
                    "fused",
                    "unfused",
                    "notebook loop",
                    "fused / unfused",
                    "fused / notebook loop",
                ],
                rows,
            ),  # fmt: skip
        ]
    )
    write_section(args.name, markdown, {"rounds": args.rounds, "modes": args.modes, **raw})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--towers", action="store_true")
    ap.add_argument("--default", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="--default: override (quick check)")
    ap.add_argument("--tower-epochs", type=int, default=6, help="--towers: epochs per job")
    ap.add_argument("--backends", default="tensorflow")
    ap.add_argument("--modes", default="fused,unfused", help="--default: the workflow runs to time")
    ap.add_argument("--name", default="fused_default", help="--default: its section's name")
    ap.add_argument(
        "--notebook-backends",
        default="tensorflow,jax",
        help="--default: the backends whose notebook loop is timed too (the longest part)",
    )
    ap.add_argument("--root", default="/tmp/hpstudy-bench/fused")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    if args.towers:
        towers(args)
    if args.default:
        default_config(args)


if __name__ == "__main__":
    main()
