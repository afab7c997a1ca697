"""Do fused and unfused runs of the same experiments agree in distribution?

On JAX a fused tower reads its own (seed, epoch) order through NumPy instead of Keras' own
shuffling, so a fused run and the unfused run of the same seed differ number for number; what
must hold is that, over the repeats, they come from the same distribution. Given the work
directories of a fused and an unfused run of one config (`bench_fused.py --default` leaves
them under /tmp/hpstudy-bench/fused/<backend>-<fused|unfused>-0), this compares, for every
experiment, the R fused runs with the R unfused runs on each metric with a two-sided
Mann-Whitney U test (scipy), Holm-adjusted over experiments (statsmodels), and prints the
experiments whose distributions differ detectably at 5%.

    python benchmarks/fused_distribution.py /tmp/hpstudy-bench/fused/jax-fused-0 \
        /tmp/hpstudy-bench/fused/jax-unfused-0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

METRICS = ["best_val_loss", "test_loss"]


def runs(workdir: Path) -> pd.DataFrame:
    """Every run of the work directory once (a baseline appears in several studies)."""
    tables = [pd.read_csv(p) for p in sorted((workdir / "results" / "studies").glob("*/runs.csv"))]
    table = pd.concat(tables, ignore_index=True)
    return table.drop_duplicates(["experiment", "run"]).set_index(["experiment", "run"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fused", type=Path)
    ap.add_argument("unfused", type=Path)
    args = ap.parse_args()
    fused, unfused = runs(args.fused), runs(args.unfused)
    experiments = sorted(
        set(fused.index.get_level_values(0)) & set(unfused.index.get_level_values(0))
    )
    for metric in METRICS:
        rows = []
        for exp in experiments:
            a = fused.loc[exp, metric].dropna().to_numpy()
            b = unfused.loc[exp, metric].dropna().to_numpy()
            if len(a) < 2 or len(b) < 2:
                continue
            p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
            rows.append((exp, len(a), len(b), a.mean(), b.mean(), p))
        p_holm = multipletests([r[-1] for r in rows], method="holm")[1]
        differ = [(r, q) for r, q in zip(rows, p_holm) if q < 0.05]
        raw = sum(r[-1] < 0.05 for r in rows)
        print(f"{metric}: {len(rows)} experiments, {raw} with p < 0.05 before adjustment, "
              f"{len(differ)} after Holm")  # fmt: skip
        for (exp, n_a, n_b, mean_a, mean_b, p), q in differ:
            print(f"  {exp}: fused {mean_a:.4g} (n={n_a}), unfused {mean_b:.4g} (n={n_b}), "
                  f"p={p:.3g}, Holm {q:.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
