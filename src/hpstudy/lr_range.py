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

Everything here is plain NumPy except `run`, which imports Keras: call `devices.setup()` first.
"""

from __future__ import annotations

import copy
import json
import math
import time
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


def stop_index(losses, beta: float = 0.98, stop_factor: float = 4.0) -> int | None:
    """Index of the batch after which the test stops (it is still recorded), or None."""
    smoother, lowest = Smoother(beta), math.inf
    for i, loss in enumerate(losses):
        smoothed = smoother.update(float(loss))
        if should_stop(float(loss), smoothed, lowest, stop_factor):
            return i
        lowest = min(lowest, smoothed)
    return None


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
    lr = spec["optimizer"]["learning_rate"]
    if not isinstance(lr, str):
        return spec, {"value": float(lr), "source": "config"}
    test_id = lr.rsplit("@", 1)[-1]
    if suggestion_path is None:
        raise ValueError(
            f"optimizer.learning_rate is {lr!r}: expected the suggestion.json of range test "
            f"{test_id} as an input of the job. Received: none."
        )
    suggestion = json.loads(Path(suggestion_path).read_text())
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


def run(spec: dict, data_path: str | Path, out: dict, experiment: str, device: str = "CPU"):
    """Run the test of an lr_range spec; write out["csv"] and out["suggestion"]. Imports Keras."""
    import keras

    from . import models, prepare
    from .training import host_facts

    started = time.time()
    settings, training = spec["lr_range"], spec["training"]
    lrs = schedule(settings["min_lr"], settings["max_lr"], settings["iterations"])
    task = spec["data"]["task"]
    arrays, info = prepare.load(data_path)
    n_outputs = info["n_classes"] if task == "classification" else info["n_outputs"]
    keras.utils.set_random_seed(training["seed"])
    model = models.build_model(spec["model"], info["input_shape"], n_outputs, task)
    # One batch per step, so the callback sees (and can change the rate of) every batch.
    compiled = {
        "data": spec["data"],
        "optimizer": dict(spec["optimizer"], learning_rate=float(lrs[0])),
        "training": {"steps_per_execution": 1},
    }
    models.compile_model(model, compiled, n_outputs)

    class RangeCallback(keras.callbacks.Callback):
        """Sets the learning rate before each batch and records that batch's own loss."""

        def __init__(self):
            super().__init__()
            self.losses: list[float] = []
            self.smoothed: list[float] = []
            self.smoother = Smoother(settings["smoothing"])
            self.lowest = math.inf
            self.reason: str | None = None

        def on_train_batch_begin(self, batch, logs=None):
            if hasattr(self.model, "jax_state_sync"):  # JAX: let the trainer see our changes
                self.model.jax_state_sync()
            self.model.optimizer.learning_rate = float(lrs[len(self.losses)])
            # Keras logs the running mean over the epoch; reset it so the log is this batch's loss.
            self.model.reset_metrics()

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("loss", math.nan))
            smoothed = self.smoother.update(loss)
            self.losses.append(loss)
            self.smoothed.append(smoothed)
            lr = lrs[len(self.losses) - 1]
            if should_stop(loss, smoothed, self.lowest, settings["stop_factor"]):
                self.reason = (
                    f"loss not finite at lr {lr:.3g}"
                    if not math.isfinite(smoothed)
                    else f"smoothed loss {smoothed:.4g} > {settings['stop_factor']:g} x its "
                    f"minimum {self.lowest:.4g} at lr {lr:.3g}"
                )
            self.lowest = min(self.lowest, smoothed)
            if self.reason or len(self.losses) == len(lrs):
                self.model.stop_training = True

    callback = RangeCallback()
    steps = math.ceil(len(arrays["x_train"]) / training["batch_size"])
    model.fit(
        arrays["x_train"],
        arrays["y_train"],
        batch_size=training["batch_size"],
        epochs=math.ceil(len(lrs) / steps),
        shuffle=training["shuffle"],
        callbacks=[callback],
        verbose=0,
    )
    done = len(callback.losses)
    write_curve(out["csv"], lrs[:done], callback.losses, callback.smoothed)
    result = {
        "experiment": experiment,
        **suggest(lrs[:done], callback.smoothed, settings["suggestion"], len(lrs) // 10),
        "iterations_planned": len(lrs),
        "iterations_run": done,
        "stopped_early": callback.reason is not None,
        "stop_reason": callback.reason,
        **{k: settings[k] for k in ("min_lr", "max_lr", "smoothing", "stop_factor")},
        "batch_size": training["batch_size"],
        "seed": training["seed"],
        "timing": {"wall_seconds": round(time.time() - started, 3)},
        "host": host_facts(device),
    }
    atomic_write_text(out["suggestion"], json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def study_table(study: dict, suggestion_path: str | Path, out_dir: str | Path):
    """runs.csv of an lr_range study: one row, its test, with the suggestion."""
    import os

    import pandas as pd

    s = json.loads(Path(suggestion_path).read_text())
    test_dir = Path(suggestion_path).parent
    row = {
        "study": study["name"],
        "baseline": study["baseline"],
        "experiment": study["lr_range"],
        "run": "lr_range",
        "status": "ok",
        "suggestion_rule": s["rule"] + (" (fallback: min_loss_over_10)" if s["fallback"] else ""),
        "suggested_lr": s["suggested_lr"],
        "steepest_lr": s["steepest_lr"],
        "min_loss_lr": s["min_loss_lr"],
        "min_smoothed_loss": s["min_smoothed_loss"],
        "min_lr": s["min_lr"],
        "max_lr": s["max_lr"],
        "iterations_planned": s["iterations_planned"],
        "iterations_run": s["iterations_run"],
        "stopped_early": s["stopped_early"],
        "stop_reason": s["stop_reason"],
        "wall_seconds": s["timing"]["wall_seconds"],
        "curve": os.path.relpath(test_dir / "lr_range.csv", out_dir),
        "suggestion": os.path.relpath(suggestion_path, out_dir),
    }
    return pd.DataFrame([row])
