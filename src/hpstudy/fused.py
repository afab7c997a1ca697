"""Train an experiment's repeats together: R copies of the model as one stacked Keras program.

Small models are bound by per-operation framework overhead, not arithmetic, and every training
job pays the interpreter, import and first-compile start-up. So the R repeats of an experiment
are trained in one job, as one `stacked.StackedModel` whose weights carry a leading repeat axis
(one batched matmul per layer for all R towers), tower k being the model of repeat k:

- **its own seed**: tower k's weights are those of the single model built right after
  `keras.utils.set_random_seed(seed_k)`, exactly as the run trained alone builds it, and its
  Dropout masks are drawn by that model's own Dropout layers; it reads its own shuffled stream
  (the order of each epoch depends only on (seed_k, epoch), as in `training.fit_data`);
- **its own loss and metrics**: the stacked model's loss is the sum of the towers' losses (each
  with its own L1/L2 penalties), so the gradient of tower k's weights is that of its own loss,
  and the optimizer's state is per weight: SGD, momentum, RMSprop and Adam stay independent;
- **its own life cycle**: a tower whose loss is not finite is recorded as diverged at that
  epoch (its history stops there, its test metrics are null), and the others train on: no
  operation mixes towers, so its NaNs never reach them. One backup holds every tower; a killed
  job resumes all of them from the last epoch, to the same bytes.

Each tower writes the outputs of its own run (`results/runs/<exp>/r<k>/`), and its
`model.keras` is the single model, not the stacked one. On TensorFlow (CPU) a tower's history
equals the run trained alone with the same seed to within 1e-5 relative (tests/test_fused.py;
measured: about 3e-7 after 20 epochs): the batched ops add the bias gradients' batch sums in
another order than a single Dense layer does, so the last bits differ. On JAX each tower reads
its own (seed_k, epoch) order through NumPy, not the order of Keras' own shuffling that an
unfused JAX run uses, so fused and unfused JAX runs agree in distribution, not number for number.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from . import lr_range, models
from .devices import host_facts
from .io import finish_first
from .stacked import StackedModel
from .training import (
    Checkpoint,
    EpochClock,
    Recorder,
    build_compiled,
    history_row,
    learning_rate,
    load_inputs,
    run_results,
    timing_facts,
    write_run_outputs,
)


class FusedRecorder(EpochClock):
    """One `training.Recorder` per tower, fed from the fused logs; a diverged tower stops alone.

    `rows` and `seconds` are what `training.Checkpoint` backs up and restores (per tower).
    """

    def __init__(self, task: str, runs: list[str]):
        self.towers = [Recorder(task) for _ in runs]
        super().__init__()  # its `seconds`: one list, shared by the towers (one step for all)
        self.task = task
        self.runs = runs

    @property
    def rows(self) -> list[list[dict]]:
        return [tower.rows for tower in self.towers]

    @rows.setter
    def rows(self, rows: list[list[dict]]) -> None:
        for tower, tower_rows in zip(self.towers, rows):
            tower.rows = tower_rows
            tower.diverged_epoch = first_non_finite(tower_rows)

    @property
    def seconds(self) -> list[float]:
        return self._seconds

    @seconds.setter
    def seconds(self, seconds: list[float]) -> None:
        self._seconds = seconds
        for tower in self.towers:  # the epochs are the towers' own: they train in one step
            tower.seconds = seconds

    def alive(self) -> list[int]:
        """The towers still training (not diverged)."""
        return [k for k, tower in enumerate(self.towers) if tower.diverged_epoch is None]

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.lap()
        lr = learning_rate(self.model)
        shown = []
        for k in self.alive():
            tower = self.towers[k]
            row = history_row(logs, self.task, epoch, lr, prefix=f"t{k}_")
            tower.rows.append(row)
            shown.append(f"{self.runs[k]}: {row['loss']:.4g}/{row['val_loss']:.4g}")
            if not (math.isfinite(row["loss"]) and math.isfinite(row["val_loss"])):
                tower.diverged_epoch = epoch + 1
                print(f"{self.runs[k]}: loss is not finite at epoch {epoch + 1}: recorded as "
                      "diverged; the other repeats train on", flush=True)  # fmt: skip
        total = (self.params or {}).get("epochs", "?")
        print(f"Epoch {epoch + 1}/{total} - {self.seconds[-1]:.3f} s - loss/val_loss "
              + " - ".join(shown), flush=True)  # fmt: skip
        if not self.alive():
            self.model.stop_training = True


def first_non_finite(rows: list[dict]) -> int | None:
    """The first epoch whose training or validation loss is not finite, if any."""
    return next((r["epoch"] for r in rows if not math.isfinite(r["val_loss"] + r["loss"])), None)


def fused_fit_data(model, tower_arrays: list[dict], training: dict, seeds: list, initial_epoch):
    """The data arguments of the fused `model.fit`: batches of `(batch, R, ...)`.

    Column k of a training batch is tower k's batch, in its own (seed_k, epoch) order. Towers of
    one prepared file share one copy of it: their rows are gathered from it, and their
    validation batches are `(batch, 1, ...)`, which the model broadcasts to the R towers. On
    TensorFlow one tf.data pipeline feeds the whole fit, as `training.fit_data` does for a single
    run, with the same order per tower; on other backends a NumPy generator.
    """
    batch = training["batch_size"]
    n = len(tower_arrays[0]["x_train"])
    steps = math.ceil(n / batch)
    # A whole epoch per call into the compiled loop, whatever training.steps_per_execution says:
    # the same arithmetic, batch by batch, without a Python round trip per batch (5 towers of
    # the digits `main` model: 0.017 against 0.022 s an epoch, measured side by side).
    model.steps_per_execution = steps
    sources = distinct_sources(tower_arrays)
    val = stacked_split(sources, "val")
    if keras.backend.backend() != "tensorflow":
        return {
            "x": _numpy_batches(sources, training, seeds, initial_epoch),
            "steps_per_epoch": steps,
            "shuffle": False,  # the generator shuffles
            "validation_data": val,
            "validation_batch_size": batch,
        }
    import tensorflow as tf

    xs = [tf.constant(a["x_train"]) for a in sources]
    ys = [tf.constant(a["y_train"]) for a in sources]

    def gather(idx):  # idx: (batch, R), column k tower k's rows
        if len(xs) == 1:
            return tf.gather(xs[0], idx), tf.gather(ys[0], idx)
        columns = tf.unstack(idx, num=len(xs), axis=1)
        return (
            tf.stack([tf.gather(x, i) for x, i in zip(xs, columns)], axis=1),
            tf.stack([tf.gather(y, i) for y, i in zip(ys, columns)], axis=1),
        )

    def epoch_batches(epoch):
        orders = []
        for seed in seeds:
            order = tf.range(n, dtype=tf.int64)
            if training["shuffle"]:
                order = tf.random.experimental.stateless_shuffle(
                    order, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
                )
            orders.append(order)
        return tf.data.Dataset.from_tensor_slices(tf.stack(orders, axis=1)).batch(batch)

    batches = tf.data.Dataset.range(initial_epoch, training["epochs"]).flat_map(epoch_batches)
    return {
        "x": batches.map(gather),
        "steps_per_epoch": steps,
        "shuffle": False,
        "validation_data": tf.data.Dataset.from_tensor_slices(val).batch(batch),
    }


def distinct_sources(tower_arrays: list[dict]) -> list[dict]:
    """The towers' arrays, or just the first when all towers share them (one prepared file)."""
    return tower_arrays[:1] if all(a is tower_arrays[0] for a in tower_arrays) else tower_arrays


def stacked_split(sources: list[dict], split: str) -> tuple:
    """(x, y) of a split as `(rows, towers, ...)`: one column per source (one if they share)."""
    return tuple(np.stack([a[f"{xy}_{split}"] for a in sources], axis=1) for xy in "xy")


def evaluate_towers(model: StackedModel, tower_arrays: list[dict], training: dict) -> list[dict]:
    """Each tower's loss and metrics on its test split, all towers in one evaluation."""
    x, y = stacked_split(distinct_sources(tower_arrays), "test")
    logs = model.evaluate(
        x, y, batch_size=max(256, training["batch_size"]), verbose=0, return_dict=True
    )
    return [
        {name[len(f"t{k}_") :]: value for name, value in logs.items() if name.startswith(f"t{k}_")}
        for k in range(model.repeats)
    ]


def _numpy_batches(sources, training, seeds, initial_epoch):
    """Every epoch's batches from `initial_epoch` on, tower k in the order of (seed_k, epoch)."""
    batch, n = training["batch_size"], len(sources[0]["x_train"])
    for epoch in range(initial_epoch, training["epochs"]):
        orders = np.stack([
            np.random.default_rng([seed, epoch]).permutation(n)
            if training["shuffle"]
            else np.arange(n)
            for seed in seeds
        ], axis=1)  # fmt: skip
        for start in range(0, n, batch):
            idx = orders[start : start + batch]  # (batch, R)
            if len(sources) == 1:
                yield sources[0]["x_train"][idx], sources[0]["y_train"][idx]
                continue
            columns = list(zip(sources, idx.T))
            x = np.stack([a["x_train"][i] for a, i in columns], axis=1)
            yield x, np.stack([a["y_train"][i] for a, i in columns], axis=1)


def train_repeats(
    spec: dict,
    data_paths: list,
    outs: list[dict],
    seeds: list[int],
    runs: list[str],
    experiment: str,
    device: str = "CPU",
    lr_suggestion: str | Path | None = None,
) -> list[dict]:
    """Train the repeats `runs` (r0, r1, ...) of one experiment together; write each run's outputs.

    `data_paths[k]`, `outs[k]` and `seeds[k]` are those of run `runs[k]`, as `training.train_run`
    takes them for a single run. The backup of all towers sits in `<exp>/backup-<R>-repeats/`
    and is removed once every run's outputs are written. Returns each run's metrics dict.
    """
    started = time.time()
    spec, lr_source = lr_range.resolve_learning_rate(spec, lr_suggestion)
    # Towers of one prepared file share one copy of it (and one gather per batch).
    loaded = {
        str(p): load_inputs(spec["data"], p, None) for p in dict.fromkeys(map(str, data_paths))
    }
    inputs = [loaded[str(path)] for path in data_paths]
    towers = [build_compiled(spec, info, seed) for (_, info), seed in zip(inputs, seeds)]
    model = StackedModel(towers, spec["data"]["task"])
    model.compile(optimizer=models.build_optimizer(spec["optimizer"]))
    recorder = FusedRecorder(spec["data"]["task"], runs)
    backup = Path(outs[0]["history"]).parents[1] / f"backup-{len(runs)}-repeats"
    checkpoint = Checkpoint(backup, recorder)
    checkpoint.set_model(model)
    initial_epoch = checkpoint.restore()
    training = spec["training"]
    if initial_epoch < training["epochs"] and recorder.alive():
        arrays = [a for a, _ in inputs]
        with checkpoint.on_termination(training["epochs"]):
            model.fit(
                **fused_fit_data(model, arrays, training, seeds, initial_epoch),
                epochs=training["epochs"],
                initial_epoch=initial_epoch,
                callbacks=[recorder, checkpoint],
                verbose=0,
            )
    # A SIGTERM from here on waits for the outputs: the training is done.
    with finish_first():
        timing = fused_timing(recorder, started, initial_epoch, len(runs))
        tests = evaluate_towers(model, [a for a, _ in inputs], training)
        model.unstack(towers)
        context = {"experiment": experiment, "fold": None, "learning_rate": lr_source}
        context["host"] = host_facts(device)
        results = [
            write_tower(spec, towers[k], recorder.towers[k], tests[k], outs[k],
                        {**context, "run": run, "seed": seeds[k], "timing": timing})
            for k, run in enumerate(runs)
        ]  # fmt: skip
        checkpoint.remove()
    return results


def write_tower(spec: dict, tower, rows: Recorder, test: dict, out: dict, facts: dict) -> dict:
    """Write one tower's run outputs (`test`: its test loss and metrics); its metrics.json dict."""
    tower.optimizer.build(tower.trainable_variables)  # so its model.keras loads without warning
    metrics = {**facts, **run_results(spec, tower, rows, rows.diverged_epoch, test)}
    write_run_outputs(out, tower, rows, metrics)
    return metrics


def fused_timing(recorder: FusedRecorder, started: float, initial_epoch: int, towers: int) -> dict:
    """The job's timing, which every tower shares (`fused_repeats`: how many trained together)."""
    return {**timing_facts(recorder, started, initial_epoch), "fused_repeats": towers}
