"""What each task (classification, regression) records and how its runs are scored.

One table for the whole package: training writes these columns, analysis reads them.
"""

from __future__ import annotations

# Keras metrics recorded per epoch (and with a val_ prefix for the validation split).
HISTORY_METRICS = {
    "classification": ["loss", "accuracy"],
    "regression": ["loss", "mse", "mae", "rmse"],
}
# The metric that runs are compared on; for it, higher is better or lower is.
PRIMARY_METRIC = {"classification": "accuracy", "regression": "mae"}
GREATER_IS_BETTER = {"accuracy": True, "mae": False}
# Test metrics that runs.csv carries besides the loss and the primary metric.
EXTRA_TEST = {"classification": [], "regression": ["mse", "rmse"]}


def metric_of(task: str) -> str:
    """The primary metric of `task`: accuracy for classification, MAE for regression."""
    return PRIMARY_METRIC[task]


def history_columns(task: str) -> list[str]:
    """The columns of a run's history.csv, in order."""
    names = HISTORY_METRICS[task]
    return ["epoch", *names, *(f"val_{n}" for n in names), "learning_rate"]
