"""Study figures: train/val loss and metric for every variant, the reference drawn to stand out."""

from __future__ import annotations

import functools
import math
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from . import grid, statistics  # noqa: E402
from .history import first_divergence, mean_curves  # noqa: E402
from .io import atomic_path  # noqa: E402
from .stages import StudyInfo  # noqa: E402
from .tasks import GREATER_IS_BETTER, metric_of  # noqa: E402

# Paul Tol's "bright" and "muted" qualitative schemes: distinguishable with colour blindness.
PALETTE = [
    "#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
]  # fmt: skip
REFERENCE_COLOUR = "#1a1a1a"
METRIC_LABEL = {"accuracy": "accuracy", "mae": "mean absolute error"}

# Keeps a 100-experiment report small (see tests/test_report_size.py): text stays text instead of
# glyph outlines, and line segments that deviate less than a quarter point from a straight line are
# merged (invisible at any sane zoom). Paths are simplified when they are created, so this style
# must be active while plotting, not only while saving.
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "hpstudy", "path.simplify_threshold": 0.25}
MAX_POINTS = 1500  # per curve; longer curves keep each bucket's minimum and maximum


def styled(fn):
    """Run a plotting function under STYLE."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _text(text) -> str:
    """A user string drawn as typed: matplotlib would parse text between two `$` as a formula,
    and a malformed one (a label such as "costs $5 or $\\frac{") would stop the figure job."""
    return str(text).replace("$", r"\$")


def decimate(low: np.ndarray, high: np.ndarray | None = None, max_points: int = MAX_POINTS):
    """Indices of at most about `max_points` points that keep each bucket's extremes: the
    minimum of `low` and the maximum of `high` (default `low`), so the envelope is unchanged.

    Thousands of epochs on a panel a few hundred pixels wide would only add bytes: every
    pixel column still shows its lowest and highest value, so spikes stay visible.
    """
    high = low if high is None else high
    n = len(low)
    if n <= max_points:
        return np.arange(n)
    edges = np.linspace(0, n, max_points // 2 + 1).astype(int)
    keep = {0, n - 1}
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            keep.add(lo + int(np.argmin(low[lo:hi])))
            keep.add(lo + int(np.argmax(high[lo:hi])))
    return np.array(sorted(keep))


def _plain_log_axis(ax) -> None:
    """Log-scale ticks as plain numbers (0.3, 1, 2) instead of 3×10⁻¹. Minor ticks are labelled
    where the major ones are too few: 2–6 and 8 within a decade, 2, 3 and 5 within two."""
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = ax.get_ylim()
    span = hi / lo if lo > 0 else math.inf
    keep = "234568" if span < 10 else "235" if span < 100 else ""
    ax.yaxis.set_minor_formatter(
        ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in keep else "")
    )


def colours(study: StudyInfo) -> dict:
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
    return finite.size > 0 and finite.max() / finite.min() >= 10


@styled
def plot_study(
    study: StudyInfo, histories: dict[str, list[pd.DataFrame]], path: str | Path, dpi: int = 110
) -> None:
    """Four panels (train loss, val loss, train metric, val metric), written atomically.

    `histories` maps each variant label to the history DataFrames of its repeats. With repeats
    the mean is drawn with a ±1 std band. Diverged runs stop at their last finite value, marked
    with a cross; a dot marks the epoch of lowest validation loss.
    """
    panels = study_panels(study["task"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.2), sharex=True)
    legend, loss_values = _draw_variants(axes, panels, study, histories)
    _label_panels(axes, panels, metric_of(study["task"]), _spans_decades(loss_values))
    handles = legend + [
        plt.Line2D([], [], marker="o", linestyle="", color="grey", label="lowest val loss"),
        plt.Line2D([], [], marker="X", linestyle="", color="grey", markeredgecolor="black",
                   label="diverged (last finite value)"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=9,
               frameon=False)  # fmt: skip
    fig.suptitle(_text(study["title"]), fontsize=13)
    rows = math.ceil(len(handles) / 5)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 1))
    save(fig, path, dpi)


def study_panels(task: str) -> list[tuple[str, str]]:
    """(history column, panel title) of a study figure's four panels."""
    metric = metric_of(task)
    # The loss a model minimises: crossentropy or MSE, plus any L1/L2 penalty.
    loss = "loss (crossentropy)" if task == "classification" else "loss (MSE)"
    return [
        ("loss", f"Training {loss}"),
        ("val_loss", f"Validation {loss}"),
        (metric, f"Training {METRIC_LABEL[metric]}"),
        (f"val_{metric}", f"Validation {METRIC_LABEL[metric]}"),
    ]


def _draw_variants(axes, panels, study: StudyInfo, histories: dict) -> tuple[list, list]:
    """Every variant's curves; returns the legend handles and the loss curves drawn."""
    palette = colours(study)
    loss_values, legend = [], []
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
        # The mean ± std is over the runs that finished; a diverged run is drawn on its own
        # (dashed beside finished repeats) so it neither drags the mean nor vanishes into it.
        ok = [h for h in runs if first_divergence(h) is None]
        if ok:
            _plot_variant(axes, panels, ok, style, loss_values)
        for h in runs:
            if first_divergence(h) is not None:
                look = {**style, "linestyle": "--", "linewidth": 1.1} if ok else style
                _plot_variant(axes, panels, [h], look, loss_values)
        drawn = any(np.isfinite(h["val_loss"].astype(float)).any() for h in runs)
        legend.append(
            plt.Line2D([], [], color=style["color"], linewidth=style["linewidth"],
                       label=_text(label if drawn else f"{label} (diverged at once: no finite value)"))
        )  # fmt: skip
    return legend, loss_values


def _label_panels(axes, panels, metric: str, log_loss: bool) -> None:
    """Titles, axis labels and scales; a log-scale axis says so in its label."""
    for ax, (column, title) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
        if column in ("loss", "val_loss") or (metric == "mae" and log_loss):
            ax.set_yscale("log" if log_loss else "linear")
        ylabel = title.split(" ", 1)[1]
        if ax.get_yscale() == "log":  # "loss (MSE)" -> "loss (MSE, log scale)"
            ylabel = (
                ylabel[:-1] + ", log scale)" if ylabel.endswith(")") else f"{ylabel} (log scale)"
            )
            _plain_log_axis(ax)
        ax.set_ylabel(ylabel)
    for ax in axes[1]:
        ax.set_xlabel("epoch")


def _plot_variant(axes, panels, runs, style, loss_values) -> None:
    """One variant's curves (mean ± std over `runs`) on the four panels, with its markers."""
    best_epoch = None
    for ax, (column, _) in zip(axes.flat, panels):
        curve = mean_curves(runs, column)
        finite = curve[np.isfinite(curve["mean"])]
        if finite.empty:
            continue
        epochs, mean = finite["epoch"].to_numpy(), finite["mean"].to_numpy()
        keep = decimate(mean)
        # A line through one point draws nothing: a one-epoch run shows as a marker.
        ax.plot(epochs[keep], mean[keep], **style, **({"marker": "s"} if len(mean) == 1 else {}))
        if len(runs) > 1:
            low, high = mean - finite["std"].to_numpy(), mean + finite["std"].to_numpy()
            keep = decimate(low, high)
            ax.fill_between(epochs[keep], low[keep], high[keep], color=style["color"],
                            alpha=0.18, linewidth=0)  # fmt: skip
        if column in ("loss", "val_loss"):
            loss_values.append(mean)
        if column == "val_loss":
            best_epoch = int(epochs[np.argmin(mean)])
        if best_epoch is not None and column.startswith("val_"):
            at = finite[finite["epoch"] == best_epoch]
            if not at.empty:
                ax.plot(at["epoch"], at["mean"], "o", color=style["color"], markersize=6,
                        markeredgecolor="white", zorder=4)  # fmt: skip
        if len(finite) < len(curve):  # diverged: mark where the curve ends
            ax.plot(epochs[-1], mean[-1], "X", color=style["color"], markersize=9,
                    markeredgecolor="black", zorder=5)  # fmt: skip


OVERVIEW_LABEL = {"accuracy": "validation accuracy", "mae": "validation MAE"}


def _short(text: str, width: int = 38) -> str:
    return _text(text if len(text) <= width else text[: width - 1] + "…")


@styled
def plot_overview(
    studies: list[StudyInfo], effects: pd.DataFrame, path: str | Path, dpi: int = 110
):
    """Horizontal bars: each variant's mean best val metric minus its study's baseline, with its
    95% CI whisker, grouped by study (one panel per metric).

    `effects` is `analysis.effects_table`; studies without a reference have no bars. A bar is
    coloured as in the study's figure when its verdict is better or worse, pale otherwise; a grey
    band shows the study's mean CI half-width (differences inside it are not detectable).
    """
    # variants whose every run diverged have no score: listed, marked, without a bar
    unscored = effects["best_val"].isna() & (effects["diverged"] > 0)
    rows = effects[
        ~effects["is_reference"]
        & effects["reference_best_val"].notna()
        & (effects["delta"].notna() | unscored)
    ]
    metrics = list(dict.fromkeys(rows["metric"]))
    sizes = [len(rows[rows["metric"] == m]) + rows[rows["metric"] == m]["slug"].nunique()
             for m in metrics]  # fmt: skip
    height = 0.9 * len(metrics) + 0.24 * sum(sizes) + 0.3
    if not metrics:
        fig, ax = plt.subplots(figsize=(10, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No study has a baseline to compare with.", ha="center", va="center")
        save(fig, path, dpi)
        return 1.2
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, height), squeeze=False,
                             gridspec_kw={"height_ratios": [n + 2 for n in sizes]})  # fmt: skip
    for ax, metric in zip(axes[:, 0], metrics):
        ticks, labels, bottom = _overview_bars(ax, rows[rows["metric"] == metric])
        ax.set_yticks(ticks, labels, fontsize=9)
        ax.set_ylim(bottom + 0.3, 0.7)
        ax.axvline(0, color=REFERENCE_COLOUR, linewidth=1)
        lo, hi = ax.get_xlim()
        pad = 0.18 * (hi - lo)  # room for the value labels
        ax.set_xlim(lo - pad * (lo < 0), hi + pad)
        better = "higher" if GREATER_IS_BETTER[metric] else "lower"
        ax.set_xlabel(
            f"mean best {OVERVIEW_LABEL[metric]} minus the study's baseline, with 95% "
            f"simultaneous CI ({better} is better; green: better, red: worse, grey: no "
            "detectable difference)"
        )
        ax.grid(True, axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save(fig, path, dpi)


def _overview_bars(ax, sub: pd.DataFrame) -> tuple[list, list, float]:
    """One metric's panel: per study a title line, its noise band, then one bar per variant."""
    y, ticks, labels = 0.0, [], []
    for _, group in sub.groupby("slug", sort=False):
        ax.text(0.005, y, _text(group["title"].iloc[0]), transform=ax.get_yaxis_transform(),
                fontweight="bold", va="center", ha="left", fontsize=9.5)  # fmt: skip
        top = y - 0.5
        y -= 1
        for rec in group.to_dict("records"):
            ticks.append(y)
            mark = " (diverged)" if rec["diverged"] and np.isfinite(rec["delta"]) else ""
            labels.append(_short(rec["variant"]) + mark)
            _overview_bar(ax, y, rec, DIRECTION_COLOURS.get(rec.get("verdict"), UNDECIDED_COLOUR))
            y -= 1
        low, high = _interval_columns(group)
        half = (group[high] - group[low]).astype(float) / 2
        if half.notna().any():
            width = float(half.mean())
            ax.fill_between([-width, width], y + 0.5, top, color="#bbbbbb", alpha=0.35,
                            linewidth=0, zorder=0)  # fmt: skip
        y -= 0.4
    return ticks, labels, y


#: One meaning across the report: the verdict's direction (the report's CSS --better, --worse).
DIRECTION_COLOURS = {"better": "#1b7a2e", "worse": "#b3263e"}
UNDECIDED_COLOUR = "#8a8a8a"  # no detectable difference, single run


def _interval_columns(group: pd.DataFrame) -> tuple[str, str]:
    """The columns of the interval the overview shows: the simultaneous one where present."""
    if "delta_ci_low_adjusted" in group and group["delta_ci_low_adjusted"].notna().any():
        return "delta_ci_low_adjusted", "delta_ci_high_adjusted"
    return "delta_ci_low", "delta_ci_high"


def _overview_bar(ax, y: float, rec: dict, colour: str) -> None:
    """A variant's Δ bar (solid when its verdict is detectable), CI whisker and value label."""
    if not np.isfinite(rec["delta"]):
        ax.annotate(" ✕ diverged, no score", (0, y), va="center", ha="left", fontsize=8.5,
                    color="#b3263e")  # fmt: skip
        return
    detectable = rec.get("verdict") in ("better", "worse")
    ax.barh(y, rec["delta"], color=colour, height=0.7, alpha=1.0 if detectable else 0.35,
            hatch="//" if rec["diverged"] else None, edgecolor="white")  # fmt: skip
    low, high = statistics.shown_interval(rec)
    end = rec["delta"]
    if low is not None and np.isfinite(low):
        ax.errorbar(rec["delta"], y, xerr=[[rec["delta"] - low], [high - rec["delta"]]],
                    fmt="none", ecolor="#333333", elinewidth=1, capsize=2.5)  # fmt: skip
        end = high if rec["delta"] >= 0 else low
    verdict = {"better": " better", "worse": " worse"}.get(rec.get("verdict"), "")
    ax.annotate(f" {rec['delta']:+.3g}{verdict} ", (end, y), va="center",
                ha="left" if rec["delta"] >= 0 else "right", fontsize=8.5)  # fmt: skip


def save(fig, path: str | Path, dpi: int = 110) -> None:
    """Write a figure atomically and reproducibly (no timestamps, stable SVG ids)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    if fmt == "svg":
        metadata["Creator"] = None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
        if fmt == "svg":
            svg = round_svg_paths(_METADATA.sub("", tmp.read_text(encoding="utf-8"), count=1))
            tmp.write_text(svg, encoding="utf-8")
    plt.close(fig)


_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)  # RDF boilerplate: bytes, URLs
_PATH_DATA = re.compile(r' d="[^"]*"')
_DECIMAL = re.compile(r"-?\d+\.\d+")


def round_svg_paths(svg: str) -> str:
    """Path coordinates to 0.1 pt (matplotlib writes 6 decimals): a third fewer bytes, same picture."""

    def short(m: re.Match) -> str:
        text = f"{float(m.group()):.1f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text

    return _PATH_DATA.sub(lambda m: _DECIMAL.sub(short, m.group()), svg)


@styled
def plot_lr_range(
    curve: pd.DataFrame, suggestion: dict, path: str | Path, title: str, dpi: int = 110
) -> None:
    """Loss against learning rate (log x axis) of a range test, the suggestion marked.

    `curve` has the columns lr, loss, smoothed_loss (lr_range.csv); `suggestion` is its
    suggestion.json. The y axis stops a little above the first smoothed loss, so the divergence
    that ends the test does not flatten the part worth reading.
    """
    fig, ax = plt.subplots(figsize=(8, 4.6))
    ax.plot(curve["lr"], curve["loss"], color=PALETTE[4], linewidth=0.8, alpha=0.7,
            label="loss of each batch")  # fmt: skip
    ax.plot(curve["lr"], curve["smoothed_loss"], color=PALETTE[0], linewidth=2.2,
            label="smoothed loss (EMA, bias-corrected)")  # fmt: skip
    ax.set_xscale("log")
    finite = curve["smoothed_loss"][np.isfinite(curve["smoothed_loss"])]
    if len(finite):
        raw = curve["loss"][np.isfinite(curve["loss"])]
        low, top = float(min(finite.min(), raw.min())), float(finite.iloc[0])
        span = max(top - low, 1e-12)
        ax.set_ylim(low - 0.1 * span, top + 0.35 * span)
    ax.plot(suggestion["min_loss_lr"], suggestion["min_smoothed_loss"], "o", color=PALETTE[2],
            markeredgecolor="white", markersize=8, zorder=4,
            label=f"minimum of the smoothed loss (lr {suggestion['min_loss_lr']:.3g})")  # fmt: skip
    lr = suggestion["suggested_lr"]
    rule = "steepest descent" if suggestion["rule"] == "steepest" else "lr at minimum / 10"
    if suggestion.get("fallback"):
        rule = "lr at minimum / 10 (no descent to measure)"
    ax.axvline(lr, color=PALETTE[1], linewidth=1.6, linestyle="--",
               label=f"suggested lr {lr:.3g} ({rule})")  # fmt: skip
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, frameon=False, loc="upper left")
    ax.set_title(title, fontsize=12)
    fig.tight_layout()
    save(fig, path, dpi)


# The grid analysis of a grid or cv study (grid.py computes, these draw) ---------------------------


@styled
def plot_grid(
    table: pd.DataFrame,
    factors: list,
    path: str | Path,
    *,
    label: str,
    higher: bool,
    title: str,
    score: str = grid.SCORE,
    dpi: int = 110,
) -> None:
    """A grid's main effects, its interaction heatmaps (two or more factors) and its parallel
    coordinates (three or more), in one figure written atomically.

    `table` is `grid.observations`' table (one row per run, a column per factor); `label` names
    the score ("best validation accuracy"), `higher` whether higher is better.
    """
    axis = f"mean {label}\n({'higher' if higher else 'lower'} is better)"
    parts = [(_main_effect_panels, 2.9 * math.ceil(len(factors) / 4))]
    pairs = math.comb(len(factors), 2)
    if pairs:
        rows = math.ceil(pairs / 3)
        parts.append((_interaction_panels, rows * max(3.0, 0.32 * _most_levels(table, factors))))
    if len(factors) >= 3:
        parts.append((_parallel_panel, 4.4))
    heights = [h + 0.5 for _, h in parts]
    fig = plt.figure(figsize=(11, sum(heights) + 0.5), layout="constrained")
    subs = fig.subfigures(len(parts), 1, squeeze=False, height_ratios=heights)[:, 0]
    for sub, (draw, _) in zip(subs, parts):
        draw(sub, table, factors, score, axis, higher)
    fig.suptitle(_text(title), fontsize=13)
    save(fig, path, dpi)


def _most_levels(table: pd.DataFrame, factors: list) -> int:
    return max(len(grid.levels(table, f)) for f in factors)


def _level_ticks(ax, which: str, names: list, width: int = 18) -> None:
    """Categorical tick labels, shortened; slanted on the x axis when they are long."""
    labels = [_short(str(n), width) for n in names]
    if which == "x":
        slant = max((len(t) for t in labels), default=0) > 6
        ax.set_xticks(
            range(len(labels)),
            labels,
            rotation=30 if slant else 0,
            ha="right" if slant else "center",
            fontsize=8.5,
        )
    else:
        ax.set_yticks(range(len(labels)), labels, fontsize=8.5)


def _main_effect_panels(sub, table, factors, score, axis, higher) -> None:
    """One panel per factor: the mean score at each level with its 95% t interval."""
    effects = grid.main_effects(table, factors, score)
    ncols = min(len(factors), 4)
    axes = sub.subplots(math.ceil(len(factors) / ncols), ncols, squeeze=False, sharey=True)
    scores = pd.to_numeric(table[score], errors="coerce")
    grand = float(scores[np.isfinite(scores)].mean()) if len(table) else math.nan
    for ax, factor in zip(axes.flat, factors):
        rows = effects[effects["factor"] == factor]
        mean = rows["mean"].to_numpy(float)
        low = np.nan_to_num(mean - rows["ci_low"].to_numpy(float))
        high = np.nan_to_num(rows["ci_high"].to_numpy(float) - mean)
        ax.errorbar(
            range(len(rows)),
            mean,
            yerr=[low, high],
            fmt="o-",
            color=PALETTE[0],
            ecolor="#333333",
            capsize=3,
            linewidth=1.6,
            markersize=5,
        )
        if np.isfinite(grand):
            ax.axhline(grand, color="#888888", linestyle="--", linewidth=0.9)
        _level_ticks(ax, "x", list(rows["level"]))
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_xlabel(_text(factor))
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(axis)
    for ax in list(axes.flat)[len(factors) :]:
        ax.axis("off")
    sub.suptitle(
        "Main effects: mean at each level with its 95% CI (dashed: mean of all runs)", fontsize=11
    )


def _better_colours(higher: bool):
    """viridis, bright where the score is better; missing cells grey."""
    return plt.get_cmap("viridis" if higher else "viridis_r").with_extremes(bad="#e4e4e4")


def _interaction_panels(sub, table, factors, score, axis, higher) -> None:
    """One heatmap per pair of factors: the mean score of each combination of their levels,
    written in the cell, on one colour scale for all pairs."""
    pairs = grid.interactions(table, factors, score)
    ncols = min(len(pairs), 3)
    axes = sub.subplots(math.ceil(len(pairs) / ncols), ncols, squeeze=False)
    values = np.concatenate([m.to_numpy(float).ravel() for m in pairs.values()])
    values = values[np.isfinite(values)]
    norm = matplotlib.colors.Normalize(*(values.min(), values.max()) if values.size else (0, 1))
    cmap = _better_colours(higher)
    for ax, ((a, b), means) in zip(axes.flat, pairs.items()):
        grid_values = means.to_numpy(float)
        image = ax.imshow(np.ma.masked_invalid(grid_values), cmap=cmap, norm=norm, aspect="auto")
        ax.set_box_aspect(min(max(grid_values.shape[0] / grid_values.shape[1], 0.5), 1.2))
        for (i, j), v in np.ndenumerate(grid_values):
            red, green, blue, _ = cmap(norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(
                j,
                i,
                f"{v:.3g}" if np.isfinite(v) else "–",
                ha="center",
                va="center",
                fontsize=7.5,
                color="white" if dark else "black",
            )
        _level_ticks(ax, "x", list(means.columns))
        _level_ticks(ax, "y", list(means.index))
        ax.set_xlabel(_text(b))
        ax.set_ylabel(_text(a))
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    sub.colorbar(image, ax=[a for a in axes.flat if a.axison], label=axis, shrink=0.9)
    sub.suptitle(
        "Interactions: mean of each combination of two factors' levels, over the other "
        "factors and the runs",
        fontsize=11,
    )


def _parallel_panel(sub, table, factors, score, axis, higher) -> None:
    """Parallel coordinates: one line per cell through its level on each factor's axis, ending
    at its mean score, coloured by it; the best cells are drawn last (on top)."""
    ax = sub.subplots()
    cells = grid.cell_means(table, factors, score).sort_values("mean", ascending=higher)
    k, cmap = len(factors), _better_colours(higher)
    lo, hi = (cells["mean"].min(), cells["mean"].max()) if len(cells) else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-12)
    spread = (np.arange(len(cells)) / max(len(cells) - 1, 1) - 0.5) * 0.35
    places = {f: _axis_places(grid.levels(table, f)) for f in factors}
    for offset, rec in zip(spread, cells.to_dict("records")):
        ys = [places[f][rec[f]] + offset * _level_gap(places[f]) for f in factors]
        ax.plot(
            range(k + 1),
            [*ys, norm(rec["mean"])],
            color=cmap(norm(rec["mean"])),
            linewidth=1.5,
            alpha=0.85,
        )
    for i, f in enumerate(factors):
        ax.axvline(i, color="#444444", linewidth=0.9, zorder=0)
        for name, y in places[f].items():
            ax.text(
                i - 0.03,
                y,
                _short(str(name), 16),
                ha="right",
                va="center",
                fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
            )
    ax.axvline(k, color="#444444", linewidth=0.9, zorder=0)
    for v in np.linspace(lo, hi, 5) if hi > lo else [lo]:
        ax.text(k + 0.03, norm(v), f"{v:.3g}", ha="left", va="center", fontsize=8)
    names = [_short(f, 24) for f in factors] + [textwrap.fill(axis.split("\n")[0], 20)]
    ax.set_xticks(range(k + 1), names, fontsize=9)
    ax.set_xlim(-0.6, k + 0.35)
    ax.set_ylim(-0.22, 1.22)
    ax.set_yticks([])
    ax.spines[["left", "right", "top", "bottom"]].set_visible(False)
    sub.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, label=axis, shrink=0.9)
    sub.suptitle(
        "Parallel coordinates: one line per cell, through its levels to its mean score", fontsize=11
    )


def _axis_places(names: list) -> dict:
    """Where each level sits on its factor's axis, from 0 (first in the config) to 1."""
    if len(names) == 1:
        return {names[0]: 0.5}
    return {name: i / (len(names) - 1) for i, name in enumerate(names)}


def _level_gap(places: dict) -> float:
    return 1 / (len(places) - 1) if len(places) > 1 else 0.5


@styled
def plot_response(
    study: StudyInfo, summary: pd.DataFrame, path: str | Path, dpi: int = 110
) -> None:
    """The best validation metric against each numeric factor's value (plan.response_factors),
    one panel per factor: the mean over repeats with its 95% interval, coloured by the verdict
    against the reference (black), on a log axis when the values span a decade or more."""
    from .analysis import response_table
    from .plan import response_factors

    factors = response_factors(study)
    metric = metric_of(study["task"])
    fig, axes = plt.subplots(1, max(1, len(factors)), figsize=(5.2 * max(1, len(factors)), 3.8),
                             squeeze=False)  # fmt: skip
    for ax, factor in zip(axes[0], factors):
        table = response_table(study, summary, factor)
        ax.plot(table["value"], table["mean"], color="#999999", linewidth=1, zorder=1)
        for rec in table.to_dict("records"):
            colour = REFERENCE_COLOUR if rec["is_reference"] else DIRECTION_COLOURS.get(
                rec["verdict"], UNDECIDED_COLOUR)  # fmt: skip
            if np.isfinite(rec["low"]):
                ax.errorbar(rec["value"], rec["mean"], yerr=[[rec["mean"] - rec["low"]],
                            [rec["high"] - rec["mean"]]], fmt="none", ecolor=colour,
                            elinewidth=1.2, capsize=3, zorder=2)  # fmt: skip
            ax.plot(rec["value"], rec["mean"], "o", color=colour, zorder=3)
        positive = table["value"] > 0
        if positive.all() and table["value"].max() / table["value"].min() >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(_text(factor))
        better = "higher" if GREATER_IS_BETTER[metric] else "lower"
        ax.set_ylabel(f"best val {metric} ({better} is better)")
        ax.set_title(_text(factor.rsplit(".", 1)[-1]), fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    if not factors:
        axes[0][0].axis("off")
    fig.suptitle(_text(study["title"]), fontsize=11)
    fig.text(0.5, 0.01, "mean over repeats with its 95% interval · black: the reference · green "
             "better, red worse, grey no detectable difference", ha="center", fontsize=8.5,
             color="#555555")  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, path, dpi)


SLICES_PER_ROW = 4


@styled
def plot_search(
    table: pd.DataFrame,
    scales: dict,
    path: str | Path,
    label: str,
    higher: bool,
    title: str,
    retested: list[int] = (),
    curves: pd.DataFrame | None = None,
    rungs: list[int] = (),
    curve_label: str = "",
) -> None:
    """A search study's trials (trials.csv): the optimisation history (each trial's score and
    the best so far), one slice per searched key (score against its value; log axis where the
    space is log), parallel coordinates (every trial across the keys, coloured by score) and,
    given `curves` (curves.csv), each trial's validation curve up to where it stopped, with the
    successive-halving `rungs` marked.

    `scales` maps each searched key to "log", "linear" or "categorical", in space order;
    `retested` are the trial numbers re-tested on fresh seeds (ringed, and drawn thicker).
    Pruned trials (stopped at a rung) are left out of the slices and parallel coordinates: their
    scores come from fewer epochs and are not comparable with the full-budget ones.
    """
    keys = list(scales)
    rows = math.ceil(len(keys) / SLICES_PER_ROW)
    extra = curves is not None and len(curves) > 0
    heights = [3.2] + [2.6] * rows + [3.2] + ([3.2] if extra else [])
    fig = plt.figure(figsize=(10, sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(heights), SLICES_PER_ROW, height_ratios=heights)
    done = table[table["status"] == "ok"]
    pruned = table[table["status"] == "pruned"]
    failed = table[~table["status"].isin(["ok", "pruned"])]
    ring = table["trial"].isin(list(retested))
    _history_panel(fig.add_subplot(grid[0, :]), table, done, failed, ring, label, higher, pruned)
    slices = []
    for i, key in enumerate(keys):
        ax = fig.add_subplot(grid[1 + i // SLICES_PER_ROW, i % SLICES_PER_ROW])
        dots = _slice_panel(ax, done, key, scales[key], label if i % SLICES_PER_ROW == 0 else None)
        slices.append(ax)
    if len(done):
        fig.colorbar(dots, ax=slices, label="trial (slices' colour)", fraction=0.03, pad=0.01)
    _search_parallel(fig.add_subplot(grid[1 + rows, :]), done, keys, scales, label, higher, ring)
    if extra:
        _curves_panel(fig.add_subplot(grid[2 + rows, :]), curves, rungs, curve_label, ring, table)
    counts = f"{len(pruned)} pruned, " if rungs else ""
    fig.suptitle(_text(f"{title}: {len(table)} trials ({counts}{len(failed)} diverged)"))
    save(fig, path)


def _history_panel(ax, table, done, failed, ring, label: str, higher: bool, pruned=None) -> None:
    ax.scatter(done["trial"], done["score"], s=18, color=PALETTE[0], label="trial", zorder=3)
    if pruned is not None and len(pruned):
        ax.scatter(pruned["trial"], pruned["score"], s=14, color="#9a9a9a", marker="v",
                   label="pruned (its score at the rung where it stopped)", zorder=2)  # fmt: skip
    best = pd.to_numeric(table["best_so_far"], errors="coerce")
    ax.step(table["trial"], best, where="post", color=REFERENCE_COLOUR, lw=1.3,
            label=f"best so far ({'highest' if higher else 'lowest'}, full budget)")  # fmt: skip
    shown = table[ring & (table["status"] == "ok")]
    ax.scatter(shown["trial"], shown["score"], s=90, facecolors="none", edgecolors="#b3263e",
               lw=1.4, label="re-tested on fresh seeds", zorder=4)  # fmt: skip
    if len(failed):
        low = ax.get_ylim()[0]
        ax.scatter(failed["trial"], [low] * len(failed), marker="x", color="#b3263e",
                   label="diverged (no score)", zorder=3, clip_on=False)  # fmt: skip
    ax.set_xlabel("trial (proposal order)")
    ax.set_ylabel(_text(label))
    ax.set_title("Optimisation history", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _curves_panel(ax, curves: pd.DataFrame, rungs, label: str, ring, table) -> None:
    """Each trial's validation curve as far as it trained: full-budget trials in colour (the
    re-tested ones thicker), pruned ones in grey ending in a triangle where they stopped;
    dashed lines at the rungs' epochs."""
    retested = set(table.loc[ring, "trial"])
    for trial, curve in curves.groupby("trial", sort=True):
        status = curve["status"].iloc[0]
        values = pd.to_numeric(curve["value"], errors="coerce")
        if status == "ok":
            ax.plot(curve["epoch"], values, lw=2.0 if trial in retested else 0.9,
                    color=PALETTE[0], alpha=0.9 if trial in retested else 0.5)  # fmt: skip
        else:
            ax.plot(curve["epoch"], values, lw=0.8, color="#9a9a9a", alpha=0.7)
            last = values.last_valid_index()
            if last is not None:
                ax.scatter([curve["epoch"][last]], [values[last]], marker="v", s=14,
                           color="#9a9a9a", zorder=3)  # fmt: skip
    for k, epochs in enumerate(rungs):
        ax.axvline(epochs, ls="--", lw=0.8, color=REFERENCE_COLOUR,
                   label="rung (trials compared here)" if k == 0 else None)  # fmt: skip
    ax.plot([], [], color=PALETTE[0], label="full budget")
    ax.plot([], [], color="#9a9a9a", marker="v", ms=4, label="pruned (stopped here)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(_text(label))
    ax.set_title("Learning curves: where each trial stopped", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _slice_panel(ax, done, key: str, scale: str, label: str | None):
    """Score against one key's value, each trial coloured by its number; returns the dots."""
    sub = done[done[key].notna()]
    vmax = max(int(done["trial"].max()), 1)
    colour = {"c": sub["trial"], "cmap": "viridis", "s": 16, "vmin": 0, "vmax": vmax}
    if scale == "categorical":
        names = list(dict.fromkeys(sub[key].astype(str)))
        dots = ax.scatter([names.index(v) for v in sub[key].astype(str)], sub["score"], **colour)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([_short(_text(n), 14) for n in names], fontsize=7, rotation=20)
        ax.set_xlim(-0.5, len(names) - 0.5)
    else:
        dots = ax.scatter(pd.to_numeric(sub[key]), sub["score"], **colour)
        if scale == "log":
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # no overlapping 2x10^-1
    ax.set_title(_text(key), fontsize=9)
    ax.tick_params(labelsize=7)
    if label:
        ax.set_ylabel(_text(label), fontsize=8)
    return dots


def _search_parallel(ax, done, keys, scales, label: str, higher: bool, ring) -> None:
    """Each finished trial as a line across the keys (each axis min to max of the trials' values;
    log where the space is log, categories in order of appearance) and its score."""
    columns = []
    for key in keys:
        values = done[key]
        if scales[key] == "categorical":
            names = list(dict.fromkeys(values.dropna().astype(str)))
            pos = values.astype(str).map({n: i for i, n in enumerate(names)})
            columns.append((pos / max(len(names) - 1, 1), names[0], names[-1]))
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        shown = np.log10(numbers) if scales[key] == "log" else numbers
        lo, hi = shown.min(), shown.max()
        span = (hi - lo) or 1.0
        columns.append(((shown - lo) / span, f"{numbers.min():.3g}", f"{numbers.max():.3g}"))
    scores = pd.to_numeric(done["score"])
    lo, hi = scores.min(), scores.max()
    columns.append(((scores - lo) / ((hi - lo) or 1.0), f"{lo:.3g}", f"{hi:.3g}"))
    names = [*keys, label]
    goodness = columns[-1][0] if higher else 1 - columns[-1][0]
    cmap = plt.get_cmap("viridis")
    order = np.argsort(goodness.to_numpy())  # the best drawn last, on top
    for i in order:
        ys = [col[0].iloc[i] for col in columns]
        thick = bool(ring[done.index[i]])
        ax.plot(range(len(names)), ys, color=cmap(float(goodness.iloc[i])),
                lw=2.4 if thick else 0.9, alpha=1.0 if thick else 0.7)  # fmt: skip
    for x, (_, low, high) in enumerate(columns):
        ax.axvline(x, color="#999999", lw=0.6)
        ax.text(x, -0.06, _short(_text(low), 14), ha="center", va="top", fontsize=7)
        ax.text(x, 1.06, _short(_text(high), 14), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([_short(_text(n), 22) for n in names], fontsize=8)
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(axis="x", pad=14)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.set_title(
        "Parallel coordinates (colour: score, yellow = best; thick: re-tested; "
        "each axis from the trials' lowest to highest value)",
        fontsize=9,
    )
