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
# The range of each primary metric; the difference of two means lies in [low - high, high - low].
METRIC_RANGE = {"accuracy": (0.0, 1.0), "mae": (0.0, float("inf"))}
# Test metrics that runs.csv carries besides the loss and the primary metric.
EXTRA_TEST = {"classification": [], "regression": ["mse", "rmse"]}


def metric_of(task: str) -> str:
    """The primary metric of `task`: accuracy for classification, MAE for regression."""
    return PRIMARY_METRIC[task]


def delta_range(metric: str) -> tuple[float, float] | None:
    """The values a difference of two means of `metric` can take: [-1, 1] for accuracy; None
    when it is unbounded (MAE)."""
    low, high = METRIC_RANGE[metric]
    span = high - low
    return (-span, span) if span != float("inf") else None


def history_columns(task: str) -> list[str]:
    """The columns of a run's history.csv, in order."""
    names = HISTORY_METRICS[task]
    return ["epoch", *names, *(f"val_{n}" for n in names), "learning_rate"]
