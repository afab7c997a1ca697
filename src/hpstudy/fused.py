"""Train an experiment's repeats together: R copies of the model as R towers of one Keras program.

Small models are bound by per-step framework overhead, not arithmetic, and every training job
pays the interpreter, import and first-compile start-up. So the R repeats of an experiment are
trained in one job, as one `keras.Model` whose tower k is the model of repeat k:

- **its own seed**: tower k is built right after `keras.utils.set_random_seed(seed_k)`, exactly
  as the run trained alone would be, so it starts from the same weights and its Dropout layers
  from the same random-generator state; it reads its own shuffled stream (the order of each
  epoch depends only on (seed_k, epoch), as in `training.fit_data`);
- **its own loss and metrics**: the fused model's loss is the sum of the towers' losses (each
  with its own L1/L2 penalties), so the gradient of tower k's weights is that of its own loss,
  and the optimizer's state is per weight: SGD, momentum, RMSprop and Adam stay independent;
- **its own life cycle**: a tower whose loss is not finite is recorded as diverged at that
  epoch (its history stops there, its test metrics are null), and the others train on: the
  gradient of a sum passes nothing from one term to another's weights, so its NaNs never reach
  them. One backup holds every tower; a killed job resumes all of them from the last epoch.

Each tower writes the outputs of its own run (`results/runs/<exp>/r<k>/`), and its
`model.keras` is the single model, not the fused one. On TensorFlow (CPU) a tower's history
equals the run trained alone with the same seed (tests/test_fused.py). On JAX each tower reads
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
from .training import (
    Checkpoint,
    EpochClock,
    Recorder,
    build_compiled,
    evaluate_test,
    execution_steps,
    history_row,
    learning_rate,
    load_inputs,
    run_results,
    timing_facts,
    write_run_outputs,
)


class FusedModel(keras.Model):
    """R towers (compiled single models) side by side: R inputs, R outputs, one optimizer.

    Call it as `FusedModel(towers, task)`; compile it with an optimizer only (no loss): each
    tower's loss and metrics are computed here and logged as `t<k>_<name>`.
    """

    def __init__(self, towers: list, task: str, **kwargs):
        inputs = [
            keras.Input(shape=tower.input_shape[1:], name=f"x{k}") for k, tower in enumerate(towers)
        ]
        # Operation names must be unique in a model: tower k is named after its run while fused,
        # and takes its own name back (`unfuse`) before it is saved as the single model.
        self.names = [tower.name for tower in towers]
        for k, tower in enumerate(towers):
            tower.name = f"{tower.name}_r{k}"
        outputs = [tower(x) for tower, x in zip(towers, inputs)]
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.towers = towers
        self.task = task
        objects = [models.task_objects(task) for _ in towers]
        self.tower_losses = [loss for loss, _ in objects]
        self.tower_metrics = [metrics for _, metrics in objects]
        self.loss_trackers = [keras.metrics.Mean(name=f"t{k}_loss") for k in range(len(towers))]

    def unfuse(self) -> list:
        """The towers, each with its own name again (the single models)."""
        for tower, name in zip(self.towers, self.names):
            tower.name = name
        return self.towers

    @property
    def metrics(self):
        towers = [m for metrics in self.tower_metrics for m in metrics]
        return [*super().metrics, *self.loss_trackers, *towers]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The sum of the towers' losses, each its data loss plus its own penalties."""
        y, y_pred = _listed(y), _listed(y_pred)
        batch = keras.ops.shape(y[0])[0]
        total = []
        for k, tower in enumerate(self.towers):
            # In the order Keras' Trainer.compute_loss sums a single model's loss terms.
            parts = [self.tower_losses[k](y[k], y_pred[k])]
            parts += [keras.ops.sum(keras.ops.cast(p, "float32")) for p in tower.losses]
            loss = parts[0] if len(parts) == 1 else keras.ops.sum(parts)
            self.loss_trackers[k].update_state(loss, sample_weight=batch)
            total.append(loss)
        return keras.ops.sum(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """`t<k>_loss` and `t<k>_<metric>` of every tower."""
        y, y_pred = _listed(y), _listed(y_pred)
        logs = {}
        for k in range(len(self.towers)):
            logs[f"t{k}_loss"] = self.loss_trackers[k].result()
            for metric in self.tower_metrics[k]:
                metric.update_state(y[k], y_pred[k])
                logs[f"t{k}_{metric.name}"] = metric.result()
        return logs


def _listed(value) -> list:
    """Keras hands a model of one output its target and prediction unwrapped."""
    return list(value) if isinstance(value, list | tuple) else [value]


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
    """The data arguments of the fused `model.fit`: tower k's batches in its own (seed, epoch) order.

    On TensorFlow one tf.data pipeline feeds the whole fit, as `training.fit_data` does for a
    single run, with the same order per tower; on other backends a NumPy generator.
    """
    batch = training["batch_size"]
    n = len(tower_arrays[0]["x_train"])
    steps = math.ceil(n / batch)
    model.steps_per_execution = execution_steps(model.steps_per_execution, steps)
    x_val = tuple(a["x_val"] for a in tower_arrays)
    y_val = tuple(a["y_val"] for a in tower_arrays)
    if keras.backend.backend() != "tensorflow":
        return {
            "x": _numpy_batches(tower_arrays, training, seeds, initial_epoch),
            "steps_per_epoch": steps,
            "shuffle": False,  # the generator shuffles
            "validation_data": (x_val, y_val),
            "validation_batch_size": batch,
        }
    import tensorflow as tf

    xs = [tf.constant(a["x_train"]) for a in tower_arrays]
    ys = [tf.constant(a["y_train"]) for a in tower_arrays]

    def epoch_batches(epoch):
        orders = []
        for seed in seeds:
            order = tf.range(n, dtype=tf.int64)
            if training["shuffle"]:
                order = tf.random.experimental.stateless_shuffle(
                    order, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
                )
            orders.append(order)
        return tf.data.Dataset.from_tensor_slices(tuple(orders)).batch(batch)

    def gather(*idx):
        x = tuple(tf.gather(x_k, i) for x_k, i in zip(xs, idx))
        return x, tuple(tf.gather(y_k, i) for y_k, i in zip(ys, idx))

    batches = tf.data.Dataset.range(initial_epoch, training["epochs"]).flat_map(epoch_batches)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch)
    return {
        "x": batches.map(gather),
        "steps_per_epoch": steps,
        "shuffle": False,
        "validation_data": val,
    }


def _numpy_batches(tower_arrays, training, seeds, initial_epoch):
    """Every epoch's batches from `initial_epoch` on, tower k in the order of (seed_k, epoch)."""
    batch, n = training["batch_size"], len(tower_arrays[0]["x_train"])
    for epoch in range(initial_epoch, training["epochs"]):
        orders = [
            np.random.default_rng([seed, epoch]).permutation(n)
            if training["shuffle"]
            else np.arange(n)
            for seed in seeds
        ]
        for start in range(0, n, batch):
            idx = [order[start : start + batch] for order in orders]
            x = tuple(a["x_train"][i] for a, i in zip(tower_arrays, idx))
            yield x, tuple(a["y_train"][i] for a, i in zip(tower_arrays, idx))


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
    inputs = [load_inputs(spec["data"], path, None) for path in data_paths]
    towers = [build_compiled(spec, info, seed) for (_, info), seed in zip(inputs, seeds)]
    model = FusedModel(towers, spec["data"]["task"])
    model.compile(
        optimizer=models.build_optimizer(spec["optimizer"]),
        steps_per_execution=spec["training"]["steps_per_execution"],
    )
    recorder = FusedRecorder(spec["data"]["task"], runs)
    backup = Path(outs[0]["history"]).parents[1] / f"backup-{len(runs)}-repeats"
    checkpoint = Checkpoint(backup, recorder)
    checkpoint.set_model(model)
    initial_epoch = checkpoint.restore()
    training = spec["training"]
    if initial_epoch < training["epochs"] and recorder.alive():
        arrays = [a for a, _ in inputs]
        model.fit(
            **fused_fit_data(model, arrays, training, seeds, initial_epoch),
            epochs=training["epochs"],
            initial_epoch=initial_epoch,
            callbacks=[recorder, checkpoint],
            verbose=0,
        )
    model.unfuse()
    timing = fused_timing(recorder, started, initial_epoch, len(runs))
    context = {"experiment": experiment, "fold": None, "learning_rate": lr_source}
    context["host"] = host_facts(device)
    results = [
        write_tower(spec, towers[k], recorder.towers[k], inputs[k][0], outs[k],
                    {**context, "run": run, "seed": seeds[k], "timing": timing})
        for k, run in enumerate(runs)
    ]  # fmt: skip
    checkpoint.remove()
    return results


def write_tower(spec: dict, tower, rows: Recorder, arrays: dict, out: dict, facts: dict) -> dict:
    """Evaluate one tower on its test split and write its run's outputs; its metrics.json dict."""
    test = evaluate_test(tower, arrays, spec["training"])
    tower.optimizer.build(tower.trainable_variables)  # so its model.keras loads without warning
    metrics = {**facts, **run_results(spec, tower, rows, rows.diverged_epoch, test)}
    write_run_outputs(out, tower, rows, metrics)
    return metrics


def fused_timing(recorder: FusedRecorder, started: float, initial_epoch: int, towers: int) -> dict:
    """The job's timing, which every tower shares (`fused_repeats`: how many trained together)."""
    return {**timing_facts(recorder, started, initial_epoch), "fused_repeats": towers}
