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
equals the run trained alone with the same seed to about 1e-7 relative over the first epochs:
the batched ops add the bias gradients' batch sums in another order than a single Dense layer
does, so the last bits differ, and the difference grows with training as any reordering does
(benchmarks/fused_drift.py: at most 3e-3 at epoch 60 for the default `main` model, the fused
and unfused runs alike in distribution; tests/test_fused.py checks 1e-5 over 8-20 epochs). On JAX each tower reads
its own (seed_k, epoch) order through NumPy, not the order of Keras' own shuffling that an
unfused JAX run uses, so fused and unfused JAX runs agree in distribution, not number for number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from . import components, lr_range, models, stopping
from .devices import host_facts
from .history import first_non_finite
from .ids import fused_label
from .io import finish_first
from .stacked import StackedModel, TowerScalars, Unstackable, with_tower_scalars
from .training import (
    Checkpoint,
    EpochClock,
    Recorder,
    build_compiled,
    epoch_order,
    history_row,
    learning_rate,
    load_inputs,
    run_results,
    timing_facts,
    train_run,
    write_run_outputs,
)


class FusedRecorder(EpochClock):
    """One `training.Recorder` per tower, fed from the fused logs; a diverged tower stops alone.

    `rows` and `seconds` are what `training.Checkpoint` backs up and restores (per tower).
    """

    role = "early_stopping"  # its per-tower early stopping state is in the backup

    def __init__(self, task: str, runs: list[str], early_stopping: dict | None = None):
        self.towers = [Recorder(task) for _ in runs]
        super().__init__()  # its `seconds`: one list, shared by the towers (one step for all)
        self.task = task
        self.runs = runs
        # training.early_stopping, one rule per tower: a stopped tower's history ends there,
        # and its weights are those of that epoch (or of its best, restore_best_weights).
        self.rules = (
            [stopping.EarlyStopping(early_stopping) for _ in runs] if early_stopping else []
        )
        self.best: list = [None] * len(runs)  # each tower's weights at its best epoch
        self.frozen: list = [None] * len(runs)  # each stopped tower's weights when it stopped

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
        """The towers still training (not diverged, not stopped early)."""
        return [
            k
            for k, tower in enumerate(self.towers)
            if tower.diverged_epoch is None and not (self.rules and self.rules[k].stopped)
        ]

    def early_stop(self, k: int, epoch: int, row: dict) -> None:
        """Tower k's early-stopping step on its epoch's row (finite losses only)."""
        rule = self.rules[k]
        actions = rule.step(epoch, row[rule.monitor])
        if rule.SNAPSHOT in actions:
            self.best[k] = self.model.tower_weights(k)
        if rule.STOP in actions:
            self.frozen[k] = self.model.tower_weights(k)
            print(f"{self.runs[k]}: early stopping at epoch {epoch + 1} ({rule.monitor} best "
                  f"{rule.best:.6g}); the other repeats train on", flush=True)  # fmt: skip

    def final_weights(self, k: int) -> list | None:
        """The snapshot tower k ends with (Keras' on_train_end), or None: its last weights."""
        if not self.rules:
            return None
        if self.rules[k].restore_best_weights and self.best[k] is not None:
            return self.best[k]
        return self.frozen[k]

    def summaries(self, k: int) -> list:
        """Tower k's early stopping, as training.run_results takes the callbacks."""
        if not self.rules:
            return []
        return [SimpleNamespace(role=self.role, summary=self.rules[k].summary)]

    def state(self) -> tuple[dict, list]:
        best = [k for k, w in enumerate(self.best) if w is not None]
        frozen = [k for k, w in enumerate(self.frozen) if w is not None]
        arrays = [a for k in best for a in self.best[k]] + [
            a for k in frozen for a in self.frozen[k]
        ]
        rules = [rule.state() for rule in self.rules]
        return {"rules": rules, "best": best, "frozen": frozen}, arrays

    def load(self, state: dict, arrays: list) -> None:
        snapshots = len(state["best"]) + len(state["frozen"])
        n = len(arrays) // snapshots if snapshots else 0
        chunks = iter([arrays[i * n : (i + 1) * n] for i in range(snapshots)])
        for rule, rule_state in zip(self.rules, state["rules"]):
            rule.load(rule_state)
        for k in state["best"]:
            self.best[k] = next(chunks)
        for k in state["frozen"]:
            self.frozen[k] = next(chunks)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.lap()
        optimizer = self.model.optimizer
        per_tower = isinstance(optimizer, TowerScalars) and optimizer.tower_learning_rates
        lr = None if per_tower else learning_rate(self.model)
        shown = []
        for k in self.alive():
            tower = self.towers[k]
            tower_lr = optimizer.tower_learning_rate(k) if per_tower else lr
            row = history_row(logs, self.task, epoch, tower_lr, prefix=f"t{k}_")
            tower.rows.append(row)
            shown.append(f"{self.runs[k]}: {row['loss']:.4g}/{row['val_loss']:.4g}")
            if not (math.isfinite(row["loss"]) and math.isfinite(row["val_loss"])):
                tower.diverged_epoch = epoch + 1
                print(f"{self.runs[k]}: loss is not finite at epoch {epoch + 1}: recorded as "
                      "diverged; the other repeats train on", flush=True)  # fmt: skip
            elif self.rules and math.isfinite(row[self.rules[k].monitor]):
                self.early_stop(k, epoch, row)
        total = (self.params or {}).get("epochs", "?")
        print(f"Epoch {epoch + 1}/{total} - {self.seconds[-1]:.3f} s - loss/val_loss "
              + " - ".join(shown), flush=True)  # fmt: skip
        if not self.alive():
            self.model.stop_training = True


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
        orders = [epoch_order(n, seed, epoch, training["shuffle"]) for seed in seeds]
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


@dataclass
class Towers:
    """What a fused job trains: tower k is run `runs[k]` of experiment `experiments[k]`, with
    its resolved spec `specs[k]` (one spec for an experiment's repeats; a group's differ in
    the values a tower holds on its own, `components.fuse_key`). `fused(k)` is tower k's
    `fused` entry in its metrics.json; `learning_rates[k]` where its rate came from."""

    specs: list
    experiments: list
    runs: list
    labels: list  # how the log names each tower: r0, or <experiment>/r0 in a group
    backup: Path
    fused: Callable[[int], dict]
    learning_rates: list


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
    (`backup-r3-r4/` for repeats added later, `ids.fused_label`)
    and is removed once every run's outputs are written. Returns each run's metrics dict.
    """
    started = time.time()
    resolved, lr_source = lr_range.resolve_learning_rate(spec, lr_suggestion)
    towers = Towers(
        specs=[resolved] * len(runs),
        experiments=[experiment] * len(runs),
        runs=list(runs),
        labels=list(runs),
        backup=Path(outs[0]["history"]).parents[1] / f"backup-{fused_label(runs)}",
        fused=lambda k: {"stacked": True, "runs": list(runs)},
        learning_rates=[lr_source] * len(runs),
    )
    try:
        return train_towers(towers, data_paths, outs, seeds, device, started)
    except Unstackable as exc:
        # The plan stacks what it can tell from the config and the model file's source; a
        # model that turns out otherwise trains its repeats one after another, as R jobs would.
        return train_one_by_one(spec, data_paths, outs, seeds, runs, experiment, device,
                                lr_suggestion, f"it has {exc}")  # fmt: skip


def train_group(
    specs: list[dict],
    data_paths: list,
    outs: list[dict],
    seeds: list[int],
    members: list[str],
    group: str,
    backup: str | Path,
    device: str = "CPU",
) -> list[dict]:
    """Train the runs of several experiments together (`members[k]` = "<experiment>/<run>",
    with spec `specs[k]`): experiments that differ only in values each tower holds on its own
    (`components.fuse_key`: learning rate, momentum, penalties, Dropout rates, seeds).

    Tower k equals its run trained alone, as a fused experiment's repeats do: its own spec
    builds its single model (weights from its own seed, its own penalties and Dropout
    layers), and the optimizer updates its slice with its own learning rate and momentum
    (`stacked.TowerScalars`). Each run's metrics.json records the group (`fused.group`,
    `fused.members`). Returns each run's metrics dict.
    """
    started = time.time()
    experiments = [m.split("/")[0] for m in members]
    runs = [m.split("/")[1] for m in members]
    own = {exp: [r for e, r in zip(experiments, runs) if e == exp] for exp in experiments}
    towers = Towers(
        specs=list(specs),
        experiments=experiments,
        runs=runs,
        labels=list(members),
        backup=Path(backup),
        fused=lambda k: {
            "stacked": True,
            "runs": own[experiments[k]],
            "group": group,
            "members": list(members),
        },  # fmt: skip
        learning_rates=[lr_range.resolve_learning_rate(s, None)[1] for s in specs],
    )
    try:
        return train_towers(towers, data_paths, outs, seeds, device, started)
    except Unstackable as exc:
        print(f"Cannot stack the runs of group {group}: it has {exc}. Training them one after "
              "another.", flush=True)  # fmt: skip
        why = f"it has {exc}"
        return [
            train_run(specs[k], data_paths[k], outs[k], seeds[k], runs[k], experiments[k],
                      device, extra={"fused": {**towers.fused(k), "stacked": False, "why": why}})
            for k in range(len(members))
        ]  # fmt: skip


def train_towers(towers: Towers, data_paths, outs, seeds, device, started) -> list[dict]:
    """Train `towers` as one stacked model and write each tower's run outputs; their metrics.

    Unstackable (before any training) if the fused engine cannot stack them."""
    # Towers of one prepared file share one copy of it (and one gather per batch).
    loaded: dict = {}
    for spec, path in zip(towers.specs, data_paths):
        if str(path) not in loaded:
            loaded[str(path)] = load_inputs(spec["data"], path, None)
    inputs = [loaded[str(path)] for path in data_paths]
    singles, model = build_stacked(towers.specs, inputs, seeds)
    first = towers.specs[0]
    model.compile(optimizer=build_tower_optimizer([s["optimizer"] for s in towers.specs]))
    recorder = FusedRecorder(first["data"]["task"], towers.labels,
                             first["training"].get("early_stopping"))  # fmt: skip
    checkpoint = Checkpoint(towers.backup, recorder, [recorder] if recorder.rules else [])
    checkpoint.set_model(model)
    initial_epoch = checkpoint.restore()
    training = first["training"]
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
        timing = fused_timing(recorder, started, initial_epoch, len(singles))
        context = {"fold": None, "class_names": inputs[0][1].get("class_names"),
                   "host": host_facts(device), "timing": timing}  # fmt: skip
        results = write_towers(towers, model, singles, recorder, inputs, outs, seeds, context)
        checkpoint.remove()
    return results


def build_tower_optimizer(optimizers: list[dict]):
    """The optimizer of a fused job from its towers' `optimizer` sections: Keras' own when
    they are one, else one whose towers each keep their learning rate and momentum (the only
    values `components.fuse_key` lets them differ in)."""
    first = optimizers[0]
    if all(o == first for o in optimizers):
        return models.build_optimizer(first)
    rates = [o["learning_rate"] for o in optimizers]
    momenta = [o.get("momentum", 0.0) for o in optimizers]
    shared = dict(first)
    if len(set(momenta)) > 1:
        shared["momentum"] = max(momenta, key=abs)  # nonzero: SGD keeps its momentum slots
    left = [{k: v for k, v in o.items() if k not in ("learning_rate", "momentum")}
            for o in optimizers]  # fmt: skip
    if any(o != left[0] for o in left) or (len(set(rates)) > 1 and first.get("schedule")):
        raise Unstackable("towers whose optimizers differ in more than their learning rate and "
                          "momentum")  # fmt: skip
    return with_tower_scalars(
        models.build_optimizer(shared),
        rates if len(set(rates)) > 1 else None,
        momenta if len(set(momenta)) > 1 else None,
    )


def write_towers(towers: Towers, model, singles, recorder, inputs, outs, seeds, context):
    """Evaluate every tower on its test split and write each run's outputs; their metrics."""
    for k in range(len(singles)):  # a stopped tower ends as it stopped, or at its best
        if recorder.final_weights(k) is not None:
            model.set_tower(k, recorder.final_weights(k))
    tests = evaluate_towers(model, [a for a, _ in inputs], towers.specs[0]["training"])
    model.unstack(singles)
    return [
        write_tower(towers.specs[k], singles[k], recorder.towers[k], tests[k], outs[k],
                    {**context, "experiment": towers.experiments[k], "run": towers.runs[k],
                     "seed": seeds[k], "learning_rate": towers.learning_rates[k],
                     "fused": towers.fused(k)},
                    recorder.summaries(k))
        for k in range(len(singles))
    ]  # fmt: skip


def build_stacked(specs: list[dict], inputs: list, seeds: list) -> tuple[list, StackedModel]:
    """The R single models (tower k built from its spec and seed) and their stacked model,
    uncompiled; Unstackable if the fused engine cannot stack them."""
    towers = [
        build_compiled(spec, info, seed, sample=arrays["x_train"][:8] if k == 0 else None)
        for k, (spec, (arrays, info), seed) in enumerate(zip(specs, inputs, seeds))
    ]
    if specs[0]["optimizer"]["name"] == components.COMPILED:
        raise Unstackable("a model compiled by its own file")
    from_logits = bool(getattr(towers[0].loss, "from_logits", False))
    return towers, StackedModel(towers, specs[0]["data"]["task"], from_logits)


def train_one_by_one(spec, data_paths, outs, seeds, runs, experiment, device, lr, why) -> list:
    """The repeats of a fused job that cannot be stacked, trained one after another."""
    print(f"Cannot stack the repeats of {experiment}: {why}. Training them one after another.",
          flush=True)  # fmt: skip
    return [
        train_run(spec, data_paths[k], outs[k], seeds[k], run, experiment, device,
                  lr_suggestion=lr, extra={"fused": {"stacked": False, "why": why, "runs": list(runs)}})
        for k, run in enumerate(runs)
    ]  # fmt: skip


def write_tower(spec: dict, tower, rows: Recorder, test: dict, out: dict, facts: dict,
                stateful=()) -> dict:  # fmt: skip
    """Write one tower's run outputs (`test`: its test loss and metrics); its metrics.json dict."""
    tower.optimizer.build(tower.trainable_variables)  # so its model.keras loads without warning
    metrics = {**facts, **run_results(spec, tower, rows, rows.diverged_epoch, test, stateful)}
    write_run_outputs(out, tower, rows, metrics)
    return metrics


def fused_timing(recorder: FusedRecorder, started: float, initial_epoch: int, towers: int) -> dict:
    """The job's timing, which every tower shares (`fused_repeats`: how many trained together)."""
    return {**timing_facts(recorder, started, initial_epoch), "fused_repeats": towers}
