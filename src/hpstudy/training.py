"""Train one run: seeded, resumable, divergence-aware, with every output written atomically.

Call `devices.setup()` before importing this module: it sets the thread pools, the Keras backend
and the visible GPU, all of which must be fixed before TensorFlow starts.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import keras
import numpy as np

from . import TRAINING_VERSION, models, prepare
from .io import atomic_path, atomic_write_text

HISTORY_METRICS = {
    "classification": ["loss", "accuracy"],
    "regression": ["loss", "mae", "rmse"],
}
PRIMARY_METRIC = {"classification": "accuracy", "regression": "mae"}


def history_columns(task: str) -> list[str]:
    names = HISTORY_METRICS[task]
    return ["epoch", *names, *(f"val_{n}" for n in names), "learning_rate"]


def _number(value) -> float | None:
    """A JSON-safe float: NaN and inf become None (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    """Shortest repr that round-trips: history files compare byte for byte across runs."""
    return repr(float(value))


def write_history(path, rows: list[dict], task: str) -> None:
    cols = history_columns(task)
    lines = [",".join(cols)]
    for row in rows:
        lines.append(",".join(str(row["epoch"]) if c == "epoch" else _fmt(row[c]) for c in cols))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_timing(path, seconds: list[float]) -> None:
    lines = ["epoch,seconds"] + [f"{i + 1},{s:.6f}" for i, s in enumerate(seconds)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _seed_generators(model: keras.Model) -> list:
    """The random-generator states of the model's layers (Dropout), in a stable order."""
    states = []
    for layer in model._flatten_layers(include_self=False):
        gen = getattr(layer, "seed_generator", None)
        if gen is not None:
            states.append(gen.state)
    return states


class Checkpoint(keras.callbacks.Callback):
    """Epoch-end backup of everything a resumed run needs to continue exactly where it stopped.

    Unlike Keras' BackupAndRestore it also keeps the recorded history and the layers'
    random-generator state (Dropout), and every file is replaced atomically: weights are written
    under a new name first, then the small state file that points to them.
    """

    def __init__(self, backup_dir: Path, recorder: Recorder):
        super().__init__()
        self.dir = Path(backup_dir)
        self.recorder = recorder
        self.state_path = self.dir / "state.json"

    def restore(self) -> int:
        """Load a previous backup into the (built, compiled) model; return the epoch to resume at."""
        if not self.state_path.exists():
            return 0
        state = json.loads(self.state_path.read_text())
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.dir / state["weights"])
        for var, value in zip(_seed_generators(self.model), state["seed_states"]):
            var.assign(np.asarray(value, dtype=var.dtype))
        self.recorder.rows = state["rows"]
        self.recorder.seconds = state["seconds"]
        print(f"Resuming from the backup at epoch {state['epoch']} ({self.dir})", flush=True)
        return int(state["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(self.dir / weights, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        state = {
            "epoch": epoch + 1,
            "weights": weights,
            "rows": self.recorder.rows,
            "seconds": self.recorder.seconds,
            "seed_states": [np.asarray(v.numpy()).tolist() for v in _seed_generators(self.model)],
        }
        atomic_write_text(self.state_path, json.dumps(state))
        for old in self.dir.glob("epoch-*.weights.h5"):
            if old.name != weights:
                old.unlink(missing_ok=True)


class Recorder(keras.callbacks.Callback):
    """Per-epoch history (with the learning rate), epoch timing and divergence detection.

    Checks happen at epoch end, not per batch, so the compiled training loop never waits on
    Python: a NaN inside an epoch makes that epoch's mean loss NaN and stops the run there.
    """

    def __init__(self, task: str):
        super().__init__()
        self.task = task
        self.rows: list[dict] = []
        self.seconds: list[float] = []
        self.diverged_epoch: int | None = None
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.seconds.append(time.perf_counter() - self._start)
        row = {"epoch": epoch + 1}
        for name in HISTORY_METRICS[self.task]:
            row[name] = float(logs.get(name, float("nan")))
            row[f"val_{name}"] = float(logs.get(f"val_{name}", float("nan")))
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows.append(row)
        if not (math.isfinite(row["loss"]) and math.isfinite(row["val_loss"])):
            self.diverged_epoch = epoch + 1
            self.model.stop_training = True
            print(f"Loss is not finite at epoch {epoch + 1}: run recorded as diverged", flush=True)


def summarise(rows: list[dict], task: str) -> dict:
    """Best epoch by val_loss, best and final validation metric, from finite epochs only."""
    metric = PRIMARY_METRIC[task]
    finite = [r for r in rows if math.isfinite(r["val_loss"])]
    if not finite:
        return {"best_epoch": None, "best_val_loss": None, f"best_val_{metric}": None}
    best = min(finite, key=lambda r: r["val_loss"])
    pick = max if task == "classification" else min
    return {
        "best_epoch": best["epoch"],
        "best_val_loss": _number(best["val_loss"]),
        f"val_{metric}_at_best_epoch": _number(best[f"val_{metric}"]),
        f"best_val_{metric}": _number(pick(r[f"val_{metric}"] for r in finite)),
        f"final_val_{metric}": _number(finite[-1][f"val_{metric}"]),
        "final_train_val_gap": _number(finite[-1]["val_loss"] - finite[-1]["loss"]),
    }


def host_facts(device: str) -> dict:
    import tensorflow as tf

    return {
        "host": socket.gethostname(),
        "device": device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }


def train_run(
    spec: dict,
    data_path: str | Path,
    out: dict,
    seed: int,
    run: str,
    experiment: str,
    device: str = "CPU",
) -> dict:
    """Train the run described by `spec` and write `out[history|timing|metrics|model]`.

    `out` maps output names to paths. The backup directory sits beside them and is removed once
    the run has finished; a killed run resumes from it. Returns the metrics dict.
    """
    started = time.time()
    task = spec["data"]["task"]
    arrays, info = prepare.load(data_path)
    n_outputs = info["n_classes"] if task == "classification" else info["n_outputs"]
    keras.utils.set_random_seed(seed)
    model = models.build_model(spec["model"], info["input_shape"], n_outputs, task)
    models.compile_model(model, spec, n_outputs)

    run_dir = Path(out["history"]).parent
    recorder = Recorder(task)
    checkpoint = Checkpoint(run_dir / "backup", recorder)
    checkpoint.set_model(model)
    initial_epoch = checkpoint.restore()
    training = spec["training"]
    if initial_epoch < training["epochs"]:
        model.fit(
            arrays["x_train"],
            arrays["y_train"],
            batch_size=training["batch_size"],
            epochs=training["epochs"],
            initial_epoch=initial_epoch,
            validation_data=(arrays["x_val"], arrays["y_val"]),
            shuffle=training["shuffle"],
            callbacks=[recorder, checkpoint],
            verbose=2,
        )
    diverged = recorder.diverged_epoch
    if diverged is None:  # a resumed run that had diverged before being killed
        diverged = next(
            (r["epoch"] for r in recorder.rows if not math.isfinite(r["val_loss"] + r["loss"])),
            None,
        )
    test = model.evaluate(
        arrays["x_test"],
        arrays["y_test"],
        batch_size=max(256, training["batch_size"]),
        verbose=0,
        return_dict=True,
    )
    metrics = {
        "experiment": experiment,
        "run": run,
        "seed": seed,
        "task": task,
        "primary_metric": PRIMARY_METRIC[task],
        "status": "diverged" if diverged else "ok",
        "diverged_epoch": diverged,
        "epochs_run": len(recorder.rows),
        "epochs_planned": training["epochs"],
        "params": int(model.count_params()),
        "training_version": TRAINING_VERSION,
        **summarise(recorder.rows, task),
        **{f"test_{k}": _number(v) for k, v in sorted(test.items())},
        # Facts about timing and the host: excluded from byte-for-byte comparisons.
        "timing": {
            "wall_seconds": round(time.time() - started, 3),
            "fit_seconds": round(sum(recorder.seconds), 3),
            "seconds_per_epoch": round(sum(recorder.seconds) / max(1, len(recorder.seconds)), 6),
        },
        "host": host_facts(device),
    }
    write_history(out["history"], recorder.rows, task)
    write_timing(out["timing"], recorder.seconds)
    with atomic_path(out["model"], suffix=".keras") as tmp:
        model.save(tmp)
    atomic_write_text(out["metrics"], json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return metrics
