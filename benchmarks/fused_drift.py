"""How far a fused tower drifts from its run trained alone, epoch by epoch, and whether the two
agree in distribution (TensorFlow, CPU).

A tower computes what its run alone computes, but a batched matmul adds a bias gradient's batch
sum in another order, so the last bits differ, and like any reordering of float sums the
difference grows as training goes on. This trains the default config's `main` baseline (seed
002's model on digits) for `--epochs` epochs with `--repeats` seeds, once as one fused job and
once seed by seed, in this process with one thread, and reports:

- the relative difference of the validation loss, |fused - alone| / |alone|, at chosen epochs:
  the median and the largest over the seeds;
- the best validation accuracy and the test loss of the fused runs against the runs alone:
  Wilcoxon's signed-rank test on the pairs (same seed) and Mann-Whitney's U on the two groups
  (scipy), with the mean paired difference and its 95% t-interval.

    python benchmarks/fused_drift.py --epochs 100 --repeats 10
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, table, write_section  # noqa: E402

from hpstudy import devices  # noqa: E402

devices.setup(threads=1, backend="tensorflow", gpus=0)

from hpstudy import datasets, fused, prepare, training  # noqa: E402
from hpstudy.config import load, validate  # noqa: E402
from hpstudy.ids import derive_seed  # noqa: E402
from hpstudy.plan import make_plan  # noqa: E402

OUTPUTS = {"history": "history.csv", "timing": "timing.csv", "metrics": "metrics.json",
           "model": "model.keras"}  # fmt: skip


def baseline(epochs: int):
    """The `main` baseline of config/config.yaml, with `epochs`."""
    cfg = copy.deepcopy(load([REPO / "config" / "config.yaml"]))
    cfg["baselines"]["main"]["training"]["epochs"] = epochs
    cfg["studies"] = {
        "one": {"kind": "ofat", "baseline": "main", "factors": {"optimizer.learning_rate": [0.05]}}
    }
    plan = make_plan(validate(cfg), [])
    reference = next(v for v in plan.studies["one"].variants if v.is_reference)
    return plan.experiments[reference.experiment]


def outs(directory: Path) -> dict:
    return {name: str(directory / file) for name, file in OUTPUTS.items()}


def train_both(exp, seeds: list[int], root: Path) -> tuple[list[Path], list[Path]]:
    """Each seed fused (one job) and alone; the run directories of each."""
    datasets.convert("digits", None, root / "digits.npz")
    arrays = prepare.prepare(datasets.load_npz(root / "digits.npz"), exp.spec["data"])
    data = root / "data.npz"
    prepare.save(arrays, data, prepare.describe(arrays, exp.spec["data"]))
    runs = [f"r{k}" for k in range(len(seeds))]
    together = [root / "fused" / run for run in runs]
    fused.train_repeats(exp.spec, [data] * len(seeds), [outs(d) for d in together], seeds, runs,
                        exp.id)  # fmt: skip
    alone = []
    for seed, run in zip(seeds, runs):
        alone.append(root / "alone" / run)
        training.train_run(exp.spec, data, outs(alone[-1]), seed, run, exp.id)
    return together, alone


def drift(together: list[Path], alone: list[Path], epochs: list[int]) -> list[list]:
    """Rows: epoch, median and largest relative difference of val_loss over the seeds."""
    rel = []
    for a, b in zip(together, alone):
        fa, fb = (pd.read_csv(d / "history.csv").set_index("epoch")["val_loss"] for d in (a, b))
        rel.append((fa - fb).abs() / fb.abs())
    wide = pd.concat(rel, axis=1)
    return [[e, f"{wide.loc[e].median():.1e}", f"{wide.loc[e].max():.1e}"] for e in epochs
            if e in wide.index]  # fmt: skip


def agreement(together: list[Path], alone: list[Path]) -> list[list]:
    """Rows: metric, mean fused, mean alone, mean paired difference [95% CI], Wilcoxon p, U p."""
    rows = []
    for metric in ("best_val_accuracy", "test_loss"):
        f, a = (np.array([json.loads((d / "metrics.json").read_text())[metric] for d in runs])
                for runs in (together, alone))  # fmt: skip
        diff = f - a
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        wilcoxon = stats.wilcoxon(f, a).pvalue if np.any(diff) else 1.0
        rows.append([metric, f"{f.mean():.5f}", f"{a.mean():.5f}",
                     f"{diff.mean():+.2e} [{diff.mean() - half:+.2e}, {diff.mean() + half:+.2e}]",
                     f"{wilcoxon:.2f}", f"{stats.mannwhitneyu(f, a).pvalue:.2f}"])  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    exp = baseline(args.epochs)
    seeds = [derive_seed(exp.spec["training"]["seed"], "repeat", k) for k in range(args.repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        together, alone = train_both(exp, seeds, Path(tmp))
        marks = [e for e in (1, 2, 5, 10, 20, 40, 60, 80, 100, 150, 200) if e <= args.epochs]
        rows = drift(together, alone, marks)
        agree = agreement(together, alone)
    text = (
        "### Fused towers against their runs alone, epoch by epoch\n\n"
        f"The default config's `main` baseline, {args.epochs} epochs, {args.repeats} seeds, fused "
        "in one job against each seed trained alone (TensorFlow, CPU, one thread).\n\n"
        "Relative difference of the validation loss, |fused - alone| / |alone|, over the seeds:\n\n"
        + table(["epoch", "median", "largest"], rows)
        + "\n\nFused against alone, per seed (paired) and as two groups:\n\n"
        + table(
            [
                "metric",
                "mean fused",
                "mean alone",
                "mean paired Δ [95% CI]",
                "Wilcoxon p",
                "Mann-Whitney p",
            ],
            agree,
        )  # fmt: skip
    )
    write_section("fused_drift", text, {"drift": rows, "agreement": agree})


if __name__ == "__main__":
    main()
