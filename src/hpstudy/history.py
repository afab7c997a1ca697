"""A run's history: the rows of its history.csv, their mean over repeats, where it diverged.

One place for what every stage asks of a curve: training and the fused towers record divergence
with `first_non_finite` on the rows they write, the observations and figures read it back from
the file with `first_divergence`, and the figures and observations draw and judge the same
`mean_curves`. Pure pandas/numpy: no TensorFlow, no plotting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd


def read_history(path: str | Path) -> pd.DataFrame:
    """A run's history.csv."""
    return pd.read_csv(path)


def first_non_finite(rows: Iterable[dict]) -> int | None:
    """The first epoch whose training or validation loss is NaN or infinite, or None.

    `rows` are history.csv's rows as dicts (`epoch`, `loss`, `val_loss`, ...).
    """
    return next(
        (
            int(r["epoch"])
            for r in rows
            if not (math.isfinite(float(r["loss"])) and math.isfinite(float(r["val_loss"])))
        ),
        None,
    )


def first_divergence(history: pd.DataFrame) -> int | None:
    """`first_non_finite` of a history.csv read as a frame."""
    return first_non_finite(history[["epoch", "loss", "val_loss"]].to_dict("records"))


def mean_curves(histories: list[pd.DataFrame], column: str) -> pd.DataFrame:
    """Mean and std of `column` across repeats, epoch by epoch (over the repeats that reached it)."""
    frames = [h.set_index("epoch")[column].rename(i) for i, h in enumerate(histories)]
    wide = pd.concat(frames, axis=1).replace([np.inf, -np.inf], np.nan)
    return pd.DataFrame(
        {"mean": wide.mean(axis=1), "std": wide.std(axis=1, ddof=1).fillna(0.0)}
    ).reset_index()
