"""Observations: short sentences computed from a study's histories, each by one documented rule.

These are the judgments the course notebooks make by eye ("it overfits after about 150 epochs").
Every sentence carries its numbers and names the history.csv and epochs it was computed from, so a
reader can check it. Pure pandas/numpy: no TensorFlow, no plotting.

A variant's curve is its run's history.csv, or with repeats the epoch-by-epoch mean of its runs'
history.csv (the curve drawn in the figure). With repeats, each rule is also applied to every
repeat's own curve: a finding is stated only when it fires, the same way, in most repeats, and
the sentence says in how many ("..., in 3 of 3 repeats"). The rules, in the order they are reported:

- **divergence** (per run): the first epoch whose training or validation loss is not finite.
  "diverged at epoch 3 (last finite val loss 2.31 at epoch 2)".
- **not_converged**: the epoch of the best validation metric is in the last 10% of the epochs a
  run ran (at least its last epoch) in most repeats: the training had not converged, and more
  epochs may still change the comparison. "not converged: the best val accuracy comes at epochs
  19–20 of 20, in the last 10% of the epochs, in 3 of 3 repeats; more epochs may still improve it".
- **overfitting**: the validation loss reaches its minimum at epoch m, then its mean over the last
  10% of epochs (after m) is at least 10% higher. "val loss reaches its minimum 0.301 at epoch 148
  and rises 23% by epochs 451–500 (mean 0.370): overfitting starts near epoch 148".
- **speed** (variants against the baseline): the first epoch at which the variant's validation
  metric reaches the baseline's best, against the first epoch the baseline itself reaches it.
  Reported when one is at least 1.5× the other, or when the variant never reaches it.
- **oscillation** (variants against the baseline): over the last 20% of epochs, the validation
  loss's epoch-to-epoch movement beyond its net trend, relative to its level:
  (sum |Δ val_loss| − |last − first|) / ((n − 1) · mean val_loss), averaged over repeats.
  Reported when the variant's index is at least 2× the baseline's or at most half of it, and the
  larger of the two is at least 0.5% of the loss per epoch (noise on a flat line is not news).
- **gap**: the final val − train loss gap at the last finite epoch. For the baseline: reported when
  the validation loss is at least 2× the training loss. For a variant: when its gap is at least 2×
  the baseline's or at most half of it (or has closed, val ≤ train, while the baseline's has not).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .history import first_divergence, mean_curves
from .stages import StudyInfo, VariantInfo
from .tasks import GREATER_IS_BETTER, metric_of

OVERFIT_MIN_RISE = 0.10  # relative rise of val loss after its minimum
OVERFIT_TAIL = 0.10  # fraction of epochs at the end over which the rise is measured
SPEED_RATIO = 1.5  # sooner/later only when the epochs differ at least this much
OSCILLATION_TAIL = 0.20  # fraction of epochs at the end where oscillation is measured
OSCILLATION_RATIO = 2.0
OSCILLATION_FLOOR = 0.005  # 0.5% of the loss level per epoch
OSCILLATION_MIN_POINTS = 5  # fewer finite epochs say nothing about oscillation
GAP_RATIO = 2.0
CONVERGED_TAIL = 0.10  # a best epoch in the last 10% of epochs: the training had not converged

RULES = {
    "divergence": "first epoch whose training or validation loss is not finite (per run)",
    "overfitting": (
        f"validation loss reaches its minimum at epoch m, then its mean over the last "
        f"{OVERFIT_TAIL:.0%} of epochs (all after m) is at least {OVERFIT_MIN_RISE:.0%} higher"
    ),
    "speed": (
        "first epoch at which a variant's validation metric reaches the baseline's best, against "
        f"the epoch the baseline first reaches it; reported when one is ≥ {SPEED_RATIO:g}× the "
        "other, or when the variant never reaches it"
    ),
    "oscillation": (
        f"over the last {OSCILLATION_TAIL:.0%} of epochs, (Σ|Δ val loss| − |last − first|) / "
        "((n − 1) · mean val loss), averaged over repeats; reported when a variant's index is "
        f"≥ {OSCILLATION_RATIO:g}× the baseline's or ≤ 1/{OSCILLATION_RATIO:g} of it, and the larger "
        f"is ≥ {OSCILLATION_FLOOR:.1%} per epoch"
    ),
    "not_converged": (
        f"the epoch of the best validation metric is in the last {CONVERGED_TAIL:.0%} of the "
        "epochs run (at least the last epoch) in most repeats: more epochs may still improve it"
    ),
    "gap": (
        "final val − train loss at the last finite epoch; for the baseline reported when val loss "
        f"≥ {GAP_RATIO:g}× train loss, for a variant when its gap is ≥ {GAP_RATIO:g}× or "
        f"≤ 1/{GAP_RATIO:g} of the baseline's, or has closed while the baseline's has not"
    ),
}


@dataclass(frozen=True)
class Observation:
    """One sentence about one variant of a study, with where to check it."""

    variant: str
    rule: str  # a key of RULES
    text: str  # the sentence, without the variant's label
    source: str  # the history.csv file(s) and epochs it was computed from
    value: float  # the headline number (epoch, ratio or relative rise)


def num(x: float, digits: int = 3) -> str:
    """Numbers in sentences: `digits` significant digits, no exponent below a million."""
    if 10**digits <= abs(x) < 1e6:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def pct(x: float) -> str:
    """A share as a percentage: two decimals, or two significant digits below 1% (never "0.00%")."""
    if x == 0 or abs(x) >= 0.01:
        return f"{x:.2%}"
    return f"{x * 100:.2g}%"


def _finite(curve: pd.DataFrame, column: str) -> pd.DataFrame:
    return curve[np.isfinite(curve[column].astype(float))]


def curve(runs: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The variant's curve: one run's history, or the epoch-by-epoch mean over its repeats."""
    if len(runs) == 1:
        return runs[0][["epoch", *columns]].astype({"epoch": int})
    out = None
    for column in columns:
        mean = mean_curves(runs, column)[["epoch", "mean"]].rename(columns={"mean": column})
        out = mean if out is None else out.merge(mean, on="epoch")
    return out


def divergence(history: pd.DataFrame) -> tuple[str, int] | None:
    """Rule `divergence`: (sentence, epoch) when the run diverged."""
    epoch = first_divergence(history)
    if epoch is None:
        return None
    before = _finite(history[history["epoch"] < epoch], "val_loss")
    text = f"diverged at epoch {epoch}"
    if not before.empty:
        last = before.iloc[-1]
        text += f" (last finite val loss {num(last['val_loss'])} at epoch {int(last['epoch'])})"
    return text, epoch


def overfitting(c: pd.DataFrame) -> tuple[str, float, str] | None:
    """Rule `overfitting`: (sentence, relative rise, epochs) when val loss rises after its minimum."""
    c = _finite(c, "val_loss")
    if len(c) < 10:
        return None
    tail = max(1, round(OVERFIT_TAIL * len(c)))
    low = c.loc[c["val_loss"].idxmin()]
    end = c.iloc[-tail:]
    if int(low["epoch"]) >= int(end["epoch"].iloc[0]):
        return None
    rise = end["val_loss"].mean() / low["val_loss"] - 1
    if not rise >= OVERFIT_MIN_RISE:
        return None
    m, first, last = int(low["epoch"]), int(end["epoch"].iloc[0]), int(end["epoch"].iloc[-1])
    span = f"epoch {last}" if first == last else f"epochs {first}–{last}"
    text = (
        f"val loss reaches its minimum {num(low['val_loss'])} at epoch {m} and rises "
        f"{rise:.0%} by {span} (mean {num(end['val_loss'].mean())}): overfitting starts near "
        f"epoch {m}"
    )
    return text, float(rise), f"epochs {m}, {first}–{last}"


def _reaches(values: pd.Series, target: float, higher: bool) -> pd.Series:
    # A tiny tolerance so the baseline reaches its own best despite float rounding in the mean.
    tol = 1e-9 * max(1.0, abs(target))
    return values >= target - tol if higher else values <= target + tol


def speed(
    c: pd.DataFrame, ref: pd.DataFrame, column: str, higher: bool
) -> tuple[str, float, str] | None:
    """Rule `speed`: how much sooner or later than the baseline the variant reaches its best."""
    ref = _finite(ref, column)
    c = _finite(c, column)
    if ref.empty or c.empty:
        return None
    target = ref[column].max() if higher else ref[column].min()
    e_ref = int(ref.loc[_reaches(ref[column], target, higher), "epoch"].iloc[0])
    hit = c.loc[_reaches(c[column], target, higher), "epoch"]
    name = column.replace("_", " ")
    if hit.empty:
        best = c[column].max() if higher else c[column].min()
        text = (
            f"never reaches the baseline's best {name} {num(target, 4)} (epoch {e_ref}); "
            f"its best is {num(best, 4)} in {_epochs(int(c['epoch'].iloc[-1]))}"
        )
        return text, math.inf, f"epoch {e_ref} (baseline), all epochs"
    e_var = int(hit.iloc[0])
    ratio = e_var / e_ref
    if 1 / SPEED_RATIO < ratio < SPEED_RATIO:
        return None
    how = f"{ratio:.1f}× later" if ratio > 1 else f"{1 / ratio:.1f}× sooner"
    text = (
        f"reaches the baseline's best {name} {num(target, 4)} at epoch {e_var}, {how} than the "
        f"baseline (epoch {e_ref})"
    )
    return text, float(ratio), f"epochs {e_var} and {e_ref} (baseline)"


def oscillation_index(
    history: pd.DataFrame, tail: float = OSCILLATION_TAIL
) -> tuple[float, int, int]:
    """(index, first epoch, last epoch) of val loss movement beyond its trend, per epoch and level."""
    c = _finite(history, "val_loss")
    w = c.iloc[-max(OSCILLATION_MIN_POINTS, round(tail * len(c))) :]
    v = w["val_loss"].to_numpy(float)
    if len(v) < OSCILLATION_MIN_POINTS or v.mean() <= 0:
        return math.nan, 0, 0
    excess = np.abs(np.diff(v)).sum() - abs(v[-1] - v[0])
    return (
        float(excess / ((len(v) - 1) * v.mean())),
        int(w["epoch"].iloc[0]),
        int(w["epoch"].iloc[-1]),
    )


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def oscillation(
    runs: list[pd.DataFrame], ref_runs: list[pd.DataFrame]
) -> tuple[str, float, str] | None:
    """Rule `oscillation`: the variant's validation loss oscillates much more or less than the baseline's."""
    ours = [oscillation_index(h) for h in runs]
    theirs = [oscillation_index(h) for h in ref_runs]
    o, o_ref = _mean([x[0] for x in ours]), _mean([x[0] for x in theirs])
    if not (math.isfinite(o) and math.isfinite(o_ref)) or max(o, o_ref) < OSCILLATION_FLOOR:
        return None
    ratio = o / o_ref if o_ref > 0 else math.inf
    if 1 / OSCILLATION_RATIO < ratio < OSCILLATION_RATIO:
        return None
    first, last = ours[0][1], ours[0][2]
    numbers = f"{pct(o)} vs {pct(o_ref)} of its level per epoch"
    tail = f"over the last {OSCILLATION_TAIL:.0%} of epochs ({numbers})"
    if math.isinf(ratio):
        text = f"validation loss oscillates {tail}, while the baseline's is smooth"
    elif ratio == 0:
        text = f"validation loss is smooth {tail}, while the baseline's oscillates"
    elif ratio > 1:
        text = f"validation loss oscillates {ratio:.1f}× more than the baseline {tail}"
    else:
        text = f"validation loss oscillates {1 / ratio:.1f}× less than the baseline {tail}"
    return text, float(ratio), f"epochs {first}–{last}"


def best_epoch_late(history: pd.DataFrame, column: str, higher: bool) -> int | None:
    """The epoch of the run's best `column` when it is in the last tenth of its epochs."""
    c = _finite(history, column)
    if c.empty:
        return None
    best = int(c.loc[c[column].idxmax() if higher else c[column].idxmin(), "epoch"])
    last = int(history["epoch"].iloc[-1])
    tail = max(1, round(CONVERGED_TAIL * len(history)))
    return best if best > last - tail else None


def not_converged(runs: list[pd.DataFrame], column: str, higher: bool) -> tuple | None:
    """Rule `not_converged`: (sentence, share of repeats, epochs) when most repeats have their
    best epoch in the last tenth of the epochs they ran."""
    late = [best_epoch_late(h, column, higher) for h in runs]
    hit = sorted(e for e in late if e is not None)
    if not runs or 2 * len(hit) <= len(runs):
        return None
    last = int(runs[0]["epoch"].iloc[-1])
    where = f"epoch {hit[0]}" if hit[0] == hit[-1] else f"epochs {hit[0]}–{hit[-1]}"
    name = column.replace("_", " ")
    text = (
        f"not converged: the best {name} comes at {where} of {last}, in the last "
        f"{CONVERGED_TAIL:.0%} of the epochs, in {len(hit)} of {len(runs)} repeats; more epochs "
        "may still improve it"
    )
    return text, len(hit) / len(runs), where


def _final(c: pd.DataFrame) -> pd.Series | None:
    c = c[np.isfinite(c["loss"].astype(float)) & np.isfinite(c["val_loss"].astype(float))]
    return None if c.empty else c.iloc[-1]


def gap(c: pd.DataFrame, ref: pd.DataFrame | None) -> tuple[str, float, str] | None:
    """Rule `gap`: a large final val − train loss gap (baseline) or one far from the baseline's."""
    last = _final(c)
    if last is None:
        return None
    e, val, train = int(last["epoch"]), float(last["val_loss"]), float(last["loss"])
    g = val - train
    if ref is None:  # the baseline itself
        if train > 0 and val >= GAP_RATIO * train:
            text = (
                f"final validation loss is {val / train:.1f}× the training loss ({num(val)} vs "
                f"{num(train)} at epoch {e}): it fits the training data far better than unseen data"
            )
            return text, val / train, f"epoch {e}"
        return None
    ref_last = _final(ref)
    if ref_last is None:
        return None
    g_ref = float(ref_last["val_loss"] - ref_last["loss"])
    where = f"epoch {e}, baseline epoch {int(ref_last['epoch'])}"
    if g_ref <= 0:
        return None
    if g <= 0:
        text = (
            f"no train−val gap: final val loss {num(val)} is below the training loss {num(train)} "
            f"at epoch {e}, while the baseline's gap is {num(g_ref)}"
        )
        return text, g / g_ref, where
    ratio = g / g_ref
    if ratio >= GAP_RATIO:
        how = f"{ratio:.1f}× the baseline's"
    elif ratio <= 1 / GAP_RATIO:
        how = f"{1 / ratio:.1f}× smaller than the baseline's"
    else:
        return None
    text = f"final val − train loss gap is {num(g)} at epoch {e}, {how} {num(g_ref)}"
    return text, ratio, where


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _files(paths: list[str]) -> str:
    """One path, or the mean of several: `results/runs/<exp>/{r0,r1}/history.csv` when they
    differ only in the run directory."""
    if len(paths) == 1:
        return paths[0]
    parts = [p.rsplit("/", 2) for p in paths]
    if all(len(x) == 3 for x in parts) and len({(x[0], x[2]) for x in parts}) == 1:
        return f"mean of {parts[0][0]}/{{{','.join(x[1] for x in parts)}}}/{parts[0][2]}"
    return f"mean of {', '.join(paths)}"


def observe(
    study: StudyInfo,
    histories: dict[str, list[pd.DataFrame]],
    paths: dict[str, list[str]] | None = None,
) -> list[Observation]:
    """Every rule on every variant of `study` (its description from the plan).

    `histories` maps each variant label to its runs' history DataFrames, `paths` to the matching
    history.csv paths cited as sources (default: `<run dir>/history.csv` from the study).
    """
    metric = metric_of(study["task"])
    higher = GREATER_IS_BETTER[metric]
    if paths is None:
        paths = {
            v["label"]: [f"{r['dir']}/history.csv" for r in v["runs"]] for v in study["variants"]
        }
    columns = ["loss", "val_loss", f"val_{metric}"]
    ref_variant = next((v for v in study["variants"] if v["is_reference"]), None)
    ref_runs = histories.get(ref_variant["label"], []) if ref_variant else []
    ref_curve = curve(ref_runs, columns) if ref_runs else None
    ref_paths = paths.get(ref_variant["label"], []) if ref_variant else []
    out: list[Observation] = []
    for variant in study["variants"]:
        label = variant["label"]
        runs = histories.get(label) or []
        if not runs:
            continue
        src = paths.get(label, [])

        def add(rule, found, both=False, per_run=None, label=label, src=src, each=None):
            if found is not None and per_run is not None and len(per_run) > 1:
                found = agreed(found, per_run, rule, each)
            if found is not None:
                text, value, where = found
                files = _files(src) + (f"; baseline {_files(ref_paths)}" if both else "")
                out.append(Observation(label, rule, text, f"{files}: {where}", float(value)))

        out.extend(divergences(variant, runs, src))
        if not any(first_divergence(h) is not None for h in runs):
            add("not_converged", not_converged(runs, f"val_{metric}", higher))
        c = curve(runs, columns)
        each = [curve([h], columns) for h in runs]  # every repeat's own curve
        add("overfitting", overfitting(c), per_run=[overfitting(r) for r in each], each=each)
        compare = ref_curve is not None and not variant["is_reference"]
        if compare:
            target = f"val_{metric}"
            add("speed", speed(c, ref_curve, target, higher), both=True,
                per_run=[speed(r, ref_curve, target, higher) for r in each])  # fmt: skip
            add("oscillation", oscillation(runs, ref_runs), both=True,
                per_run=[oscillation([h], ref_runs) for h in runs])  # fmt: skip
        if any(first_divergence(h) is not None for h in runs):
            continue  # the gap at the epoch before a blow-up says nothing
        if variant["is_reference"]:
            add("gap", gap(c, None), per_run=[gap(r, None) for r in each])
        elif compare:
            add("gap", gap(c, ref_curve), both=True, per_run=[gap(r, ref_curve) for r in each])
    return out


def divergences(
    variant: VariantInfo, runs: list[pd.DataFrame], src: list[str]
) -> list[Observation]:
    """Rule `divergence` on each run of a variant, naming the run when there are several."""
    out = []
    for i, history in enumerate(runs):
        found = divergence(history)
        if found is None:
            continue
        text, epoch = found
        run = variant["runs"][i]["run"] if i < len(variant["runs"]) else f"r{i}"
        if len(runs) > 1:
            text += f" (run {run})"
        files = src[i] if i < len(src) else _files(src)
        out.append(
            Observation(variant["label"], "divergence", text, f"{files}: epoch {epoch}", epoch)
        )
    return out


def agreed(found: tuple, per_run: list, rule: str, curves: list | None = None) -> tuple | None:
    """The mean curve's finding, if the rule also fires, the same way, in most repeats.

    A finding seen in only a minority of repeats is not stated: it is not a property of the
    variant but of some seeds. The sentence says in how many repeats it fires and, for
    overfitting, the range of the epochs where each repeat's validation loss bottoms out
    (`curves`: each repeat's own curve, in the order of `per_run`).
    """
    text, value, where = found
    same = [f for f in per_run if f is not None and (f[1] >= 1) == (value >= 1)]
    if rule == "overfitting":
        same = [f for f in per_run if f is not None]
    if 2 * len(same) <= len(per_run):
        return None
    text += f", in {len(same)} of {len(per_run)} repeats"
    if rule == "overfitting" and curves is not None:
        minima = sorted(minimum_epoch(c) for c, f in zip(curves, per_run) if f is not None)
        text += f" (their minima at epochs {minima[0]}–{minima[-1]})" if len(minima) > 1 else ""
    return text, value, where


def minimum_epoch(c: pd.DataFrame) -> int:
    """The epoch where a curve's (finite) validation loss is lowest."""
    c = _finite(c, "val_loss")
    return int(c.loc[c["val_loss"].idxmin(), "epoch"])


def to_frame(study: StudyInfo, observations: list[Observation]) -> pd.DataFrame:
    """observations.csv: one row per observation, in report order."""
    rows = [{"study": study["name"], **asdict(o)} for o in observations]
    return pd.DataFrame(rows, columns=["study", "variant", "rule", "text", "source", "value"])


def study_observations(study: StudyInfo) -> pd.DataFrame:
    """observations.csv of a study, from the history.csv files of its runs (paths as cited)."""
    histories, paths = {}, {}
    for v in study["variants"]:
        paths[v["label"]] = [f"{r['dir']}/history.csv" for r in v["runs"]]
        histories[v["label"]] = [pd.read_csv(p) for p in paths[v["label"]]]
    return to_frame(study, observe(study, histories, paths))
