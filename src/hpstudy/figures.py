"""Study figures: train/val loss and metric for every variant, the reference drawn to stand out."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .analysis import mean_curves, metric_of  # noqa: E402
from .io import atomic_path  # noqa: E402

# Paul Tol's "bright" and "muted" qualitative schemes: distinguishable with colour blindness.
PALETTE = [
    "#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
]  # fmt: skip
REFERENCE_COLOUR = "#1a1a1a"
METRIC_LABEL = {"accuracy": "accuracy", "mae": "mean absolute error"}


def colours(study: dict) -> dict:
    """One colour per variant label, the same in every panel and in the report's table."""
    out, i = {}, 0
    for variant in study["variants"]:
        if variant["is_reference"]:
            out[variant["label"]] = REFERENCE_COLOUR
        else:
            out[variant["label"]] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _spans_decades(values: list[np.ndarray]) -> bool:
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values] or [np.array([])])
    return finite.size > 0 and finite.max() / finite.min() > 30


def plot_study(
    study: dict, histories: dict[str, list[pd.DataFrame]], path: str | Path, dpi: int = 110
) -> None:
    """Four panels (train loss, val loss, train metric, val metric), written atomically.

    `histories` maps each variant label to the history DataFrames of its repeats. With repeats
    the mean is drawn with a ±1 std band. Diverged runs stop at their last finite value, marked
    with a cross; a dot marks the epoch of lowest validation loss.
    """
    metric = metric_of(study["task"])
    palette = colours(study)
    panels = [
        ("loss", "Training loss"),
        ("val_loss", "Validation loss"),
        (metric, f"Training {METRIC_LABEL[metric]}"),
        (f"val_{metric}", f"Validation {METRIC_LABEL[metric]}"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.2), sharex=True)
    loss_values = []
    for variant in study["variants"]:
        label = variant["label"]
        runs = histories.get(label) or []
        if not runs:
            continue
        ref = variant["is_reference"]
        style = {
            "color": palette[label],
            "linewidth": 2.6 if ref else 1.4,
            "zorder": 3 if ref else 2,
            "alpha": 1.0 if ref else 0.9,
        }
        best_epoch = None
        for ax, (column, _) in zip(axes.flat, panels):
            curve = mean_curves(runs, column)
            finite = curve[np.isfinite(curve["mean"])]
            if finite.empty:
                continue
            ax.plot(finite["epoch"], finite["mean"], label=label if column == "loss" else None,
                    **style)  # fmt: skip
            if len(runs) > 1:
                ax.fill_between(
                    finite["epoch"],
                    finite["mean"] - finite["std"],
                    finite["mean"] + finite["std"],
                    color=style["color"],
                    alpha=0.18,
                    linewidth=0,
                )
            if column in ("loss", "val_loss"):
                loss_values.append(finite["mean"].to_numpy())
            if column == "val_loss":
                best_epoch = int(finite.loc[finite["mean"].idxmin(), "epoch"])
            if best_epoch is not None and column.startswith("val_"):
                at = finite[finite["epoch"] == best_epoch]
                if not at.empty:
                    ax.plot(at["epoch"], at["mean"], "o", color=style["color"], markersize=6,
                            markeredgecolor="white", zorder=4)  # fmt: skip
            if len(finite) < len(curve):  # diverged: mark where the curve ends
                last = finite.iloc[-1]
                ax.plot(last["epoch"], last["mean"], "X", color=style["color"], markersize=9,
                        markeredgecolor="black", zorder=5)  # fmt: skip
    log_loss = _spans_decades(loss_values)
    for ax, (column, title) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
        if column in ("loss", "val_loss") or (metric == "mae" and log_loss):
            ax.set_yscale("log" if log_loss else "linear")
        ax.set_ylabel(
            title.split(" ", 1)[1] + (" (log scale)" if log_loss and "loss" in column else "")
        )
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles += [
        plt.Line2D([], [], marker="o", linestyle="", color="grey", label="lowest val loss"),
        plt.Line2D([], [], marker="X", linestyle="", color="grey", markeredgecolor="black",
                   label="diverged (last finite value)"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=9,
               frameon=False)  # fmt: skip
    fig.suptitle(study["title"], fontsize=13)
    rows = math.ceil(len(handles) / 5)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 1))
    save(fig, path, dpi)


def save(fig, path: str | Path, dpi: int = 110) -> None:
    """Write a figure atomically and reproducibly (no timestamps, stable SVG ids)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    plt.rcParams["svg.hashsalt"] = "hpstudy"
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    if fmt == "svg":
        metadata["Creator"] = None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
    plt.close(fig)
