"""Learning-rate range test: raise the learning rate every batch and watch the training loss.

The test trains the study's reference model on the training split, batch after batch, with the
learning rate rising exponentially (the same factor each batch, seed 003's
exp(log(max/min) / N)) from `min_lr` to `max_lr` over N batches. The loss of each batch is
smoothed by a bias-corrected exponential moving average, beta = 0.98 by default:

    avg_t = beta * avg_(t-1) + (1 - beta) * loss_t,    smoothed_t = avg_t / (1 - beta^t)

The test stops early once the smoothed loss exceeds `stop_factor` (4) times its lowest value so
far, or once a loss is not finite: past that point the model is diverging.

Suggested learning rate (`suggestion`):
- `steepest` (default): the learning rate where the smoothed loss falls fastest, i.e. the most
  negative slope d(smoothed loss) / d(log10 lr), searched from the end of the first tenth of the
  planned batches (where the average still covers only a few noisy losses; fastai's lr_find skips
  them too) up to the minimum of the smoothed loss. Falls back to `min_loss_over_10` when that
  leaves fewer than 3 batches (no descent to measure).
- `min_loss_over_10`: a tenth of the learning rate at the minimum of the smoothed loss.

Everything here is plain NumPy; the Keras loop that runs the test is `training.train_range_test`.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np

from .io import atomic_write_text

RULES = ("steepest", "min_loss_over_10")


def schedule(min_lr: float, max_lr: float, iterations: int) -> np.ndarray:
    """The learning rate of each batch: min_lr * (max_lr / min_lr) ** (t / (iterations - 1))."""
    if not (0 < min_lr < max_lr and iterations >= 2):
        raise ValueError(
            f"Expected 0 < min_lr < max_lr and iterations >= 2. "
            f"Received: min_lr={min_lr!r}, max_lr={max_lr!r}, iterations={iterations!r}"
        )
    return min_lr * (max_lr / min_lr) ** (np.arange(iterations) / (iterations - 1))


class Smoother:
    """Bias-corrected exponential moving average, updated one loss at a time."""

    def __init__(self, beta: float = 0.98):
        self.beta = beta
        self.avg = 0.0
        self.count = 0

    def update(self, loss: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        return self.avg / (1 - self.beta**self.count)


def smooth(losses, beta: float = 0.98) -> np.ndarray:
    smoother = Smoother(beta)
    return np.array([smoother.update(float(x)) for x in losses])


def should_stop(loss: float, smoothed: float, lowest: float, stop_factor: float) -> bool:
    """True once the loss is not finite or the smoothed loss exceeds stop_factor x its minimum."""
    return not (math.isfinite(loss) and math.isfinite(smoothed)) or smoothed > stop_factor * lowest


def suggest(lrs, smoothed, rule: str = "steepest", skip: int | None = None) -> dict:
    """The suggested learning rate from the recorded curve (see the module docstring).

    `skip`: batches left out at the start of the steepest-descent search (default: a tenth).
    """
    if rule not in RULES:
        raise ValueError(f"Expected suggestion rule one of {', '.join(RULES)}. Received: {rule!r}")
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    finite = np.isfinite(smoothed)
    n = int(np.argmax(~finite)) if not finite.all() else len(smoothed)  # the finite prefix
    if n == 0:
        raise ValueError(
            "The first loss is not finite: the range test has nothing to suggest from."
        )
    lrs, smoothed = lrs[:n], smoothed[:n]
    lowest = int(np.argmin(smoothed))
    out = {
        "min_loss_lr": float(lrs[lowest]),
        "min_smoothed_loss": float(smoothed[lowest]),
        "steepest_lr": None,
        "max_descent_slope": None,
    }
    skip = len(lrs) // 10 if skip is None else skip
    if lowest - skip >= 2:
        window = slice(skip, lowest + 1)
        slopes = np.gradient(smoothed[window], np.log10(lrs[window]))
        steep = int(np.argmin(slopes))
        out["steepest_lr"] = float(lrs[skip + steep])
        out["max_descent_slope"] = float(slopes[steep])
    used = rule if rule == "min_loss_over_10" or out["steepest_lr"] is not None else None
    out["rule"] = rule
    out["fallback"] = used is None  # steepest asked, but the minimum came too early
    out["suggested_lr"] = out["steepest_lr"] if used == "steepest" else out["min_loss_lr"] / 10
    return out


def resolve_learning_rate(spec: dict, suggestion_path: str | Path | None) -> tuple[dict, dict]:
    """Put a range test's suggestion in place of "lr_range:<baseline>@<id>"; say where it came from.

    Returns (spec with a numeric learning rate, {"value", "source", ...}) for metrics.json.
    """
    lr = spec["optimizer"].get("learning_rate")
    if lr is None:  # a model its own file compiled: its optimizer's rate
        return spec, {"value": None, "source": "model file"}
    if not isinstance(lr, str):
        return spec, {"value": float(lr), "source": "config"}
    test_id = lr.rsplit("@", 1)[-1]
    if suggestion_path is None:
        raise ValueError(
            f"optimizer.learning_rate is {lr!r}: expected the suggestion.json of range test "
            f"{test_id} as an input of the job. Received: none."
        )
    suggestion = json.loads(Path(suggestion_path).read_text(encoding="utf-8"))
    if suggestion.get("experiment") != test_id:
        raise ValueError(
            f"optimizer.learning_rate is {lr!r}: expected the suggestion of range test {test_id}. "
            f"Received: {suggestion_path}, of test {suggestion.get('experiment')!r}."
        )
    spec = copy.deepcopy(spec)
    spec["optimizer"]["learning_rate"] = float(suggestion["suggested_lr"])
    return spec, {
        "value": float(suggestion["suggested_lr"]),
        "source": lr,
        "rule": suggestion["rule"],
        "suggestion": str(suggestion_path),
    }


def write_curve(path: str | Path, lrs, losses, smoothed) -> None:
    """CSV `lr,loss,smoothed_loss`, one row per batch, with round-tripping floats."""
    lines = ["lr,loss,smoothed_loss"]
    lines += [f"{float(a)!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(lrs, losses, smoothed)]
    atomic_write_text(path, "\n".join(lines) + "\n")
