"""Train one run, or run one learning-rate range test: the only stage that runs Keras' fit.

A run is seeded, resumable and divergence-aware, and writes every output atomically. Call
`devices.setup()` before importing this module: it sets the thread pools, the Keras backend and
the visible GPU, all of which must be fixed before TensorFlow starts. The import closure is
Keras, numpy and the modules that read a run's inputs: no pandas, jsonschema or yaml of ours.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from . import TRAINING_VERSION, components, lr_range, models, prepare, stopping, usermodel
from .devices import host_facts
from .history import first_non_finite
from .io import (
    NOTHING_KEPT,
    Terminated,
    atomic_path,
    atomic_write_text,
    finish_first,
    sigterm_after,
)
from .tasks import HISTORY_METRICS, PRIMARY_METRIC, history_columns


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


class Checkpoint(keras.callbacks.Callback):
    """Epoch-end backup of everything a resumed run needs to continue exactly where it stopped.

    Unlike Keras' BackupAndRestore it also keeps the recorded history and the layers'
    random-generator states (Dropout), which `model.variables` holds but `save_weights` skips.
    One `.npz` (no pickle), replaced atomically: a kill at any point leaves the previous epoch's
    complete backup or the new one. Plain numpy is 7-10x cheaper than an h5 weights file.
    """

    def __init__(self, backup_dir: Path, recorder: Recorder, stateful: list = ()):
        super().__init__()
        self.dir = Path(backup_dir)
        self.recorder = recorder
        # Callbacks whose state a resumed run needs (early stopping, plateau): each has a
        # `role`, `state()` -> (JSON-able dict, [arrays]) and `load(dict, [arrays])`.
        self.stateful = list(stateful)
        self.state_path = self.dir / "state.npz"
        self.epoch = 0  # epochs the backup on disk holds

    def _variables(self) -> list:
        """Weights, Dropout seed states, optimizer slots and step count, in a stable order."""
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        return [*self.model.variables, *self.model.optimizer.variables]

    def restore(self) -> int:
        """Load a previous backup into the (built, compiled) model; return the epoch to resume at."""
        if not self.state_path.exists():
            return 0
        variables = self._variables()
        try:
            with np.load(self.state_path, allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes().decode())
                values = [npz[f"v{i}"] for i in range(len(variables))]
                extra = {
                    c.role: [npz[f"{c.role}_{i}"] for i in range(meta["arrays"][c.role])]
                    for c in self.stateful
                }
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            print(f"Ignoring unreadable backup {self.state_path} ({exc}): starting over")
            return 0
        # Shapes, not names: Keras numbers the names of a second model built in one process.
        if meta["variables"] != len(variables) or any(
            tuple(value.shape) != tuple(var.shape) for var, value in zip(variables, values)
        ):
            print(f"Ignoring backup {self.state_path} of another model: starting over", flush=True)
            return 0
        for var, value in zip(variables, values):
            var.assign(value)
        for callback in self.stateful:
            callback.load(meta["callbacks"][callback.role], extra[callback.role])
        self.recorder.rows = meta["rows"]
        self.recorder.seconds = meta["seconds"]
        print(f"Resuming from the backup at epoch {meta['epoch']} ({self.dir})", flush=True)
        self.epoch = int(meta["epoch"])
        return self.epoch

    def on_epoch_end(self, epoch, logs=None):
        variables = self._variables()
        meta = {
            "epoch": epoch + 1,
            "rows": self.recorder.rows,
            "seconds": self.recorder.seconds,
            "variables": len(variables),
            "callbacks": {},
            "arrays": {},
        }
        arrays = {f"v{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)}
        for callback in self.stateful:
            state, kept = callback.state()
            meta["callbacks"][callback.role], meta["arrays"][callback.role] = state, len(kept)
            arrays.update({f"{callback.role}_{i}": a for i, a in enumerate(kept)})
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        # A SIGTERM waits for the backup to be written and counted (tens of ms): otherwise it
        # could land between the rename and the count, and the job would name the epoch before.
        with sigterm_after():
            with atomic_path(self.state_path, suffix=".npz") as tmp:
                np.savez(tmp, **arrays)
            self.epoch = epoch + 1

    @contextlib.contextmanager
    def on_termination(self, epochs: int):
        """Say, when SIGTERM stops the block (io.stop_on_sigterm), what the backup kept.

        The epoch in progress is not saved: resuming inside an epoch would need the position in
        its shuffled batches and the random state at that batch, and the rerun repeats the epoch
        from its start instead, which keeps the history byte-equal to an uninterrupted run.
        """
        try:
            yield
        except Terminated as exc:
            signal_name = str(exc).split(":")[0].removeprefix("Terminated by ")
            where = f"during epoch {self.epoch + 1} of {epochs}"
            if self.epoch:
                kept = (
                    f"the backup of epoch {self.epoch} is kept in {self.dir}, and the retry or a "
                    f"rerun resumes from it"
                )
            else:
                kept = f"no epoch had finished: {NOTHING_KEPT}"
            raise Terminated(f"Terminated by {signal_name} {where}: {kept}.") from None

    def remove(self) -> None:
        """Drop the backup once the run's outputs are complete (the state file goes first)."""
        self.state_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class EpochClock(keras.callbacks.Callback):
    """Seconds of each epoch, from epoch end to epoch end, and when training began.

    An epoch's time includes the previous epoch's backup. `lap()` at each epoch end records one.
    """

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.train_began: float | None = None  # time.time() when fit() starts its first epoch
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        if self.train_began is None:
            self.train_began = time.time()
            self._start = time.perf_counter()

    def lap(self) -> float:
        """Record the epoch that just ended; return its seconds."""
        now = time.perf_counter()
        self.seconds.append(now - self._start)
        self._start = now
        return self.seconds[-1]


class Recorder(EpochClock):
    """Per-epoch history (with the learning rate), epoch timing and divergence detection.

    Checks happen at epoch end, not per batch, so the compiled training loop never waits on
    Python: a NaN inside an epoch makes that epoch's mean loss NaN and stops the run there.
    """

    def __init__(self, task: str):
        super().__init__()
        self.task = task
        self.rows: list[dict] = []
        self.diverged_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.lap()
        row = history_row(logs, self.task, epoch, learning_rate(self.model))
        self.rows.append(row)
        # The progress line (tail -f train.log), in place of Keras' logger and its per-batch hooks.
        values = " - ".join(f"{k}: {v:.4g}" for k, v in row.items() if k != "epoch")
        total = (self.params or {}).get("epochs", "?")
        print(f"Epoch {epoch + 1}/{total} - {self.seconds[-1]:.3f} s - {values}", flush=True)
        if not (math.isfinite(row["loss"]) and math.isfinite(row["val_loss"])):
            self.diverged_epoch = epoch + 1
            self.model.stop_training = True
            print(f"Loss is not finite at epoch {epoch + 1}: run recorded as diverged", flush=True)


def history_row(logs: dict, task: str, epoch: int, lr: float, prefix: str = "") -> dict:
    """One line of history.csv from Keras' epoch-end logs (`prefix`: a fused tower's, `t<k>_`)."""
    row = {"epoch": epoch + 1}
    for name in HISTORY_METRICS[task]:
        row[name] = float(logs.get(f"{prefix}{name}", math.nan))
        row[f"val_{name}"] = float(logs.get(f"val_{prefix}{name}", math.nan))
    row["learning_rate"] = lr
    return row


class EarlyStop(keras.callbacks.Callback):
    """`training.early_stopping` (stopping.EarlyStopping), its state in the epoch backup."""

    role = "early_stopping"

    def __init__(self, settings: dict):
        super().__init__()
        self.rule = stopping.EarlyStopping(settings)
        self.best_weights: list | None = None

    @property
    def stopped(self) -> bool:
        return self.rule.stopped

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.rule.monitor)
        if current is None or not math.isfinite(current):  # a diverged run is recorded so
            return
        actions = self.rule.step(epoch, float(current))
        if self.rule.SNAPSHOT in actions:
            self.best_weights = self.model.get_weights()
        if self.rule.STOP in actions:
            self.model.stop_training = True
            print(f"Early stopping at epoch {epoch + 1}: {self.rule.monitor} has not improved "
                  f"for {self.rule.wait} epochs (best {self.rule.best:.6g})", flush=True)  # fmt: skip

    def finish(self, model: keras.Model) -> None:
        """Keras' on_train_end: the best epoch's weights, with restore_best_weights."""
        if self.rule.restore_best_weights and self.best_weights is not None:
            model.set_weights(self.best_weights)

    def summary(self) -> dict:
        return self.rule.summary()

    def state(self) -> tuple[dict, list]:
        return self.rule.state(), list(self.best_weights or [])

    def load(self, state: dict, arrays: list) -> None:
        self.rule.load(state)
        self.best_weights = arrays or None


class PlateauLR(keras.callbacks.Callback):
    """`training.reduce_lr_on_plateau` (stopping.Plateau), its state in the epoch backup."""

    role = "reduce_lr_on_plateau"
    stopped = False

    def __init__(self, settings: dict):
        super().__init__()
        self.rule = stopping.Plateau(settings)

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.rule.monitor)
        if current is None or not math.isfinite(current):
            return
        new_lr = self.rule.step(epoch, float(current), learning_rate(self.model))
        if new_lr is not None:
            self.model.optimizer.learning_rate = new_lr
            print(f"Epoch {epoch + 1}: {self.rule.monitor} on a plateau, learning rate "
                  f"lowered to {new_lr:.6g}", flush=True)  # fmt: skip

    def finish(self, model: keras.Model) -> None:
        pass

    def summary(self) -> dict:
        return self.rule.summary()

    def state(self) -> tuple[dict, list]:
        return self.rule.state(), []

    def load(self, state: dict, arrays: list) -> None:
        self.rule.load(state)


#: The stateful training callbacks, by their key in the spec's `training` section.
CALLBACK_CLASSES = {"early_stopping": EarlyStop, "reduce_lr_on_plateau": PlateauLR}
assert set(CALLBACK_CLASSES) == set(components.CALLBACKS)


def training_callbacks(training: dict) -> list:
    """The callbacks that the spec's `training` section turns on, in a fixed order."""
    return [cls(training[key]) for key, cls in CALLBACK_CLASSES.items() if training.get(key)]


def learning_rate(model: keras.Model) -> float:
    """The optimizer's current learning rate."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


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


def load_model(path: str | Path) -> keras.Model:
    """Load a run's `model.keras`. The one loader to use: safe_mode=True refuses a file that would
    run code while loading (a Lambda layer's serialised bytecode)."""
    return keras.saving.load_model(path, safe_mode=True)


def process_started() -> float:
    """When this process started (time.time() scale), as the operating system recorded it."""
    import psutil  # a dependency of Snakemake

    return psutil.Process().create_time()


def tensorboard_callbacks(run_dir: Path, enabled: bool) -> list:
    """Keras' TensorBoard callback writing to `run_dir`/tensorboard, when `enabled`."""
    if not enabled:
        return []
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise RuntimeError(
            "Expected the `tensorboard` package, since `logging.tensorboard` is true in the "
            "config. Received: it is not installed. Install it with `pip install tensorboard` "
            "(or `pip install -e '.[tensorboard]'`), or set `logging.tensorboard: false`."
        )
    # Epoch-level scalars and the graph; no profiling, which would slow every run down.
    return [keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), profile_batch=0)]


def execution_steps(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of `steps_per_epoch` not above `requested` (steps_per_execution).

    With one input pipeline for the whole fit, a call into the compiled loop that ran past the
    epoch's last batch would take the next epoch's batches.
    """
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def epoch_order(n: int, seed: int, epoch, shuffle: bool):
    """The row order of one epoch on TensorFlow: a function of (seed, epoch) only, so a resumed
    run, and a fused tower with the same seed, read the rows in the order the run alone reads."""
    import tensorflow as tf

    order = tf.range(n, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(
            order, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
    return order


def fit_data(model: keras.Model, arrays: dict, training: dict, seed: int, initial_epoch: int):
    """The data arguments of `model.fit` for this backend.

    On TensorFlow, Keras turns numpy arrays into a new parallel tf.data pipeline every epoch, and
    for small data sets that costs more than the epoch's arithmetic (benchmarks/RESULTS.md). So
    one pipeline feeds the whole fit instead, each epoch's order depends only on (seed, epoch):
    a resumed run sees the same batches as an uninterrupted one. Other backends get the arrays.
    Also rounds the model's steps_per_execution down to a divisor of the steps per epoch.
    """
    x, y = arrays["x_train"], arrays["y_train"]
    batch = training["batch_size"]
    n, steps = len(x), math.ceil(len(x) / batch)
    model.steps_per_execution = execution_steps(model.steps_per_execution, steps)
    if keras.backend.backend() != "tensorflow":
        return {
            "x": x,
            "y": y,
            "batch_size": batch,
            "shuffle": training["shuffle"],
            "validation_data": (arrays["x_val"], arrays["y_val"]),
        }
    import tensorflow as tf

    x_all, y_all = tf.constant(x), tf.constant(y)

    def epoch_batches(epoch):
        order = epoch_order(n, seed, epoch, training["shuffle"])
        return tf.data.Dataset.from_tensor_slices(order).batch(batch)

    batches = tf.data.Dataset.range(initial_epoch, training["epochs"]).flat_map(epoch_batches)
    val = tf.data.Dataset.from_tensor_slices((arrays["x_val"], arrays["y_val"])).batch(batch)
    return {
        "x": batches.map(lambda i: (tf.gather(x_all, i), tf.gather(y_all, i))),
        "steps_per_epoch": steps,
        "shuffle": False,  # the pipeline shuffles; Keras ignores (and warns about) True here
        "validation_data": val,
    }


def train_run(
    spec: dict,
    data_path: str | Path,
    out: dict,
    seed: int,
    run: str,
    experiment: str,
    device: str = "CPU",
    fold: tuple[int, int] | None = None,
    lr_suggestion: str | Path | None = None,
    tensorboard: bool = False,
    extra: dict | None = None,
) -> dict:
    """Train the run described by `spec` and write `out[history|timing|metrics|model]`.

    `out` maps output names to paths. The backup directory sits beside them and is removed once
    the run has finished; a killed run resumes from it. Returns the metrics dict.
    `fold` = (i, k) trains on the training split without fold i of k and validates on fold i
    (`prepare.fold_arrays`). `lr_suggestion` is the suggestion.json of the learning-rate range
    test that a learning rate "lr_range:<baseline>@<id>" refers to. `tensorboard` also writes
    TensorBoard logs to `<run dir>/tensorboard/` (results are the same either way).
    """
    started = time.time()
    spec, lr_source = lr_range.resolve_learning_rate(spec, lr_suggestion)
    arrays, info = load_inputs(spec["data"], data_path, fold)
    model = build_compiled(spec, info, seed, sample=arrays["x_train"][:8])
    run_dir = Path(out["history"]).parent
    recorder = Recorder(spec["data"]["task"])
    stateful = training_callbacks(spec["training"])
    checkpoint = Checkpoint(run_dir / "backup", recorder, stateful)
    checkpoint.set_model(model)
    initial_epoch = checkpoint.restore()
    callbacks = [recorder, *stateful, checkpoint, *tensorboard_callbacks(run_dir, tensorboard)]
    with checkpoint.on_termination(spec["training"]["epochs"]):
        fit(model, arrays, spec["training"], seed, initial_epoch, callbacks)
    for callback in stateful:
        callback.finish(model)
    # A SIGTERM from here on waits for the outputs: the training is done.
    with finish_first():
        diverged = diverged_epoch(recorder)
        # A fold run only serves the selection: the test split is the refit's (r0).
        test = evaluate_test(model, arrays, spec["training"]) if fold is None else {}
        metrics = {
            "experiment": experiment,
            "run": run,
            "seed": seed,
            "fold": None if fold is None else {"index": fold[0], "of": fold[1]},
            "learning_rate": lr_source,
            # A user file's class labels, in the order of the model's outputs (None: built-in).
            "class_names": info.get("class_names"),
            **(extra or {}),
            **run_results(spec, model, recorder, diverged, test, stateful),
            # Facts about timing and the host: excluded from byte-for-byte comparisons.
            "timing": timing_facts(recorder, started, initial_epoch),
            "host": host_facts(device),
        }
        write_run_outputs(out, model, recorder, metrics)
        checkpoint.remove()
    return metrics


def train_rung(
    spec: dict,
    data_path: str | Path,
    out: str | Path,
    seed: int,
    experiment: str,
    epochs: int,
    device: str = "CPU",
    lr_suggestion: str | Path | None = None,
) -> dict:
    """Train run r0 of a search trial up to `epochs` (a successive-halving rung) and write its
    rung record `out`: the history rows so far, their summary (the score) and the status.

    The run is the trial's own (`spec`, `seed`), trained exactly as `train_run` would: its epoch
    backup (beside `out`, `backup/`) is kept, so the next rung, or the full run if the trial is
    promoted to the end, continues from it instead of starting over, and its history has no
    restart. A backup already past `epochs` (a later rung) is read, not retrained, and so is
    the run's history.csv if the whole run has finished (training is deterministic: the same
    rows). A run that diverges or stops early before `epochs` is a result like any other.
    """
    started = time.time()
    task = spec["data"]["task"]
    run_dir = Path(out).parent
    finished = _finished_rows(run_dir)
    if finished is not None:
        rows, stopped, initial_epoch = finished[0][:epochs], finished[1], None
    else:
        spec, _ = lr_range.resolve_learning_rate(spec, lr_suggestion)
        arrays, info = load_inputs(spec["data"], data_path, None)
        model = build_compiled(spec, info, seed, sample=arrays["x_train"][:8])
        recorder = Recorder(task)
        stateful = training_callbacks(spec["training"])
        checkpoint = Checkpoint(run_dir / "backup", recorder, stateful)
        checkpoint.set_model(model)
        initial_epoch = checkpoint.restore()
        with checkpoint.on_termination(epochs):
            fit(model, arrays, {**spec["training"], "epochs": epochs}, seed, initial_epoch,
                [recorder, *stateful, checkpoint])  # fmt: skip
        rows = recorder.rows[:epochs]
        stopped = any(getattr(c, "stopped", False) for c in stateful)
    with finish_first():
        record = _rung_record(spec, experiment, seed, epochs, rows, stopped)
        # resumed_at: the backup's epoch; None when read from the finished run's history.csv
        record["timing"] = {
            "wall_seconds": round(time.time() - started, 3),
            "resumed_at": initial_epoch,
        }
        record["host"] = host_facts(device)
        atomic_write_text(out, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _rung_record(spec: dict, experiment: str, seed: int, epochs: int, rows: list,
                 stopped: bool) -> dict:  # fmt: skip
    """A rung record's results: the rows up to the rung, their summary and the status."""
    task = spec["data"]["task"]
    diverged = first_non_finite(rows)
    return {
        "experiment": experiment,
        "run": "r0",
        "seed": seed,
        "rung_epochs": epochs,
        "task": task,
        "primary_metric": PRIMARY_METRIC[task],
        "epochs_planned": spec["training"]["epochs"],
        "epochs_run": len(rows),
        "status": "diverged" if diverged else "ok",
        "diverged_epoch": diverged,
        # trained as far as it will go: diverged or stopped early before the rung
        "finished": bool(diverged) or (stopped and len(rows) < epochs),
        "training_version": TRAINING_VERSION,
        **summarise(rows, task),
        "rows": [{k: v if k == "epoch" else _number(v) for k, v in r.items()} for r in rows],
    }


def _finished_rows(run_dir: Path) -> tuple[list[dict], bool] | None:
    """A finished run's history rows (history.csv, as the Recorder held them) and whether early
    stopping ended it; None while the run has not finished."""
    metrics, history = run_dir / "metrics.json", run_dir / "history.csv"
    if not (metrics.exists() and history.exists()):
        return None
    lines = history.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    rows = [
        {k: int(v) if k == "epoch" else float(v) for k, v in zip(header, line.split(","))}
        for line in lines[1:]
    ]
    stopped = json.loads(metrics.read_text(encoding="utf-8")).get("stopped_epoch") is not None
    return rows, stopped


def load_inputs(data: dict, data_path: str | Path, fold: tuple[int, int] | None):
    """The prepared arrays and their description; fold (i, k) of the training split if given."""
    arrays, info = prepare.load(data_path)
    if fold is not None:
        arrays = prepare.fold_arrays(arrays, data, k=fold[1], fold=fold[0])
    return arrays, info


def build_compiled(spec: dict, info: dict, seed: int, sample=None) -> keras.Model:
    """The spec's model, its weights drawn from `seed`, compiled with its optimizer and loss.

    A user's model (kind python) is checked on `sample` (a few training rows) before it is
    compiled (`models.check_user_model`); if its own file compiles it, its optimizer and loss
    stand, with the task's metrics recorded beside them.
    """
    task = spec["data"]["task"]
    n_outputs = info["n_classes"] if task == "classification" else info["n_outputs"]
    keras.utils.set_random_seed(seed)
    if spec["model"]["kind"] != "python":
        model = models.build_model(spec["model"], info["input_shape"], n_outputs, task)
        return models.compile_model(model, spec, n_outputs)
    model = models.build_user_model(spec["model"], info["input_shape"], n_outputs, task)
    where = f"{spec['model']['function']}() of {usermodel.file_paths(spec['model'])[0]}"
    logits = False
    if sample is not None:
        with tempfile.TemporaryDirectory() as tmp:
            logits = models.check_user_model(
                model, where, sample, task, n_outputs, Path(tmp) / "check.keras"
            )
    compiled = getattr(model, "compiled", False) and model.optimizer is not None
    if spec["optimizer"]["name"] != components.COMPILED:
        if compiled:
            raise models.UserModelError(
                f"{where} returned a compiled model, but the plan read no .compile( in its "
                "file: list the file that compiles it in model.files"
            )
        return models.compile_model(model, spec, n_outputs, from_logits=logits)
    if not compiled:
        raise models.UserModelError(
            f"{where} returned an uncompiled model, but its file calls .compile(: compile the "
            "model it returns, or remove the call so that the config's optimizer compiles it"
        )
    model.compile(
        optimizer=model.optimizer,
        loss=model.loss,
        metrics=models.task_head(task, n_outputs)["metrics"],
        steps_per_execution=spec["training"]["steps_per_execution"],
    )
    return model


def fit(model, arrays: dict, training: dict, seed: int, initial_epoch: int, callbacks) -> None:
    """Train from `initial_epoch` to the planned epochs, unless a restored run had diverged or
    stopped early. Callbacks are found by role (their class), not by position."""
    recorder = next(c for c in callbacks if isinstance(c, Recorder))
    stopped = any(getattr(c, "stopped", False) for c in callbacks)
    # A run killed after it diverged has a backup ending in a non-finite epoch: it is finished.
    if initial_epoch >= training["epochs"] or diverged_epoch(recorder) is not None or stopped:
        return
    model.fit(
        **fit_data(model, arrays, training, seed, initial_epoch),
        epochs=training["epochs"],
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=0,  # the Recorder prints one line per epoch
    )


def diverged_epoch(recorder: Recorder) -> int | None:
    """The first epoch whose training or validation loss is not finite, if any."""
    if recorder.diverged_epoch is not None:
        return recorder.diverged_epoch
    return first_non_finite(recorder.rows)


def evaluate_test(model: keras.Model, arrays: dict, training: dict) -> dict:
    """The model's loss and metrics on the test split."""
    return model.evaluate(
        arrays["x_test"],
        arrays["y_test"],
        batch_size=max(256, training["batch_size"]),
        verbose=0,
        return_dict=True,
    )


def run_results(
    spec: dict, model, recorder: Recorder, diverged: int | None, test: dict, stateful=()
) -> dict:
    """The results part of metrics.json: status, epochs, best epoch and metrics, test metrics,
    and what early stopping and ReduceLROnPlateau did (`stateful`: their callbacks)."""
    task = spec["data"]["task"]
    done = {c.role: c.summary() for c in stateful}
    return {
        **done,
        "stopped_epoch": done.get("early_stopping", {}).get("stopped_epoch"),
        "task": task,
        "primary_metric": PRIMARY_METRIC[task],
        "status": "diverged" if diverged else "ok",
        "diverged_epoch": diverged,
        "epochs_run": len(recorder.rows),
        "epochs_planned": spec["training"]["epochs"],
        "params": int(model.count_params()),
        "training_version": TRAINING_VERSION,
        **summarise(recorder.rows, task),
        # A diverged model's test scores mean nothing (NaN weights still give an accuracy).
        **{f"test_{k}": None if diverged else _number(v) for k, v in sorted(test.items())},
    }


def timing_facts(recorder: EpochClock, started: float, initial_epoch: int) -> dict:
    """Wall, start-up, first-epoch and fit seconds of a run (start-up only for a fresh run)."""
    fresh = initial_epoch == 0
    seconds = recorder.seconds
    return {
        "wall_seconds": round(time.time() - started, 3),
        # From the start of the process (interpreter, imports, data, model) to the first
        # epoch; None for a resumed run, whose start-up is not that of the whole run.
        "startup_seconds": (
            round(recorder.train_began - process_started(), 3)
            if recorder.train_began and fresh
            else None
        ),
        "first_epoch_seconds": round(seconds[0], 3) if seconds and fresh else None,
        "fit_seconds": round(sum(seconds), 3),
        "seconds_per_epoch": round(sum(seconds) / max(1, len(seconds)), 6),
    }


def write_run_outputs(out: dict, model: keras.Model, recorder: Recorder, metrics: dict) -> None:
    """history.csv, timing.csv, model.keras, then metrics.json (the rule's last output)."""
    write_history(out["history"], recorder.rows, metrics["task"])
    write_timing(out["timing"], recorder.seconds)
    with atomic_path(out["model"], suffix=".keras") as tmp:
        model.save(tmp)
    atomic_write_text(out["metrics"], json.dumps(metrics, indent=2, sort_keys=True) + "\n")


# Learning-rate range test ---------------------------------------------------------------------


class RangeCallback(keras.callbacks.Callback):
    """Sets the learning rate before each batch and records that batch's own loss.

    `lrs` is the schedule (`lr_range.schedule`); `settings` the spec's `lr_range` section.
    Stops training after the last scheduled batch or when `lr_range.should_stop` says so.
    """

    def __init__(self, lrs: np.ndarray, settings: dict):
        super().__init__()
        self.lrs = lrs
        self.stop_factor = settings["stop_factor"]
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.smoother = lr_range.Smoother(settings["smoothing"])
        self.lowest = math.inf
        self.reason: str | None = None

    def on_train_batch_begin(self, batch, logs=None):
        if hasattr(self.model, "jax_state_sync"):  # JAX: let the trainer see our changes
            self.model.jax_state_sync()
        self.model.optimizer.learning_rate = float(self.lrs[len(self.losses)])
        # Keras logs the running mean over the epoch; reset it so the log is this batch's loss.
        self.model.reset_metrics()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        smoothed = self.smoother.update(loss)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        lr = self.lrs[len(self.losses) - 1]
        if lr_range.should_stop(loss, smoothed, self.lowest, self.stop_factor):
            self.reason = (
                f"loss not finite at lr {lr:.3g}"
                if not math.isfinite(smoothed)
                else f"smoothed loss {smoothed:.4g} > {self.stop_factor:g} x its "
                f"minimum {self.lowest:.4g} at lr {lr:.3g}"
            )
        self.lowest = min(self.lowest, smoothed)
        if self.reason or len(self.losses) == len(self.lrs):
            self.model.stop_training = True


def train_range_test(
    spec: dict, data_path: str | Path, out: dict, experiment: str, device: str = "CPU"
) -> dict:
    """Run the range test of an lr_range spec; write out["csv"] and out["suggestion"].

    The method (schedule, smoothing, stop rule, suggestion) is described in `lr_range`.
    Returns the suggestion dict that suggestion.json holds.
    """
    started = time.time()
    settings, training = spec["lr_range"], spec["training"]
    lrs = lr_range.schedule(settings["min_lr"], settings["max_lr"], settings["iterations"])
    arrays, info = prepare.load(data_path)
    # One batch per step, so the callback sees (and can change the rate of) every batch.
    compiled = {
        "data": spec["data"],
        "model": spec["model"],
        "optimizer": dict(spec["optimizer"], learning_rate=float(lrs[0])),
        "training": {"steps_per_execution": 1},
    }
    model = build_compiled(compiled, info, training["seed"])
    callback = RangeCallback(lrs, settings)
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
    lr_range.write_curve(out["csv"], lrs[:done], callback.losses, callback.smoothed)
    result = {
        "experiment": experiment,
        **lr_range.suggest(lrs[:done], callback.smoothed, settings["suggestion"], len(lrs) // 10),
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
