"""The registry (hpstudy.components) against the schema and against Keras' own signatures, and
the early-stopping and plateau rules (hpstudy.stopping) against Keras' callbacks."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from hpstudy import checks, components, datasets, stopping


def _schema():
    return checks.load_schema()["definitions"]


def test_the_schema_enums_are_the_registry():
    defs = _schema()
    assert defs["dataset"]["properties"]["source"]["enum"] == list(components.SOURCE_NAMES)
    assert components.SOURCE_NAMES == (*datasets.SOURCES, datasets.FILE_SOURCE)
    assert defs["optimizer"]["properties"]["name"]["enum"] == list(components.OPTIMIZERS)
    assert defs["schedule"]["properties"]["name"]["enum"] == list(components.SCHEDULES)
    assert defs["model"]["properties"]["kind"]["enum"] == list(components.MODEL_KINDS)
    for key, callback in components.CALLBACKS.items():
        props = defs[key]["properties"]
        assert {k: v.get("default") for k, v in props.items()} == callback.args, key
        assert defs["training"]["properties"][key] == {"$ref": f"#/definitions/{key}"}
    # Every optimizer key the schema types is an argument some Keras optimizer takes.
    known = {a for name in components.OPTIMIZERS for a in components.optimizer_args(name)}
    assert set(defs["optimizer"]["properties"]) - {"name", "learning_rate", "schedule"} <= known
    builtin = set(defs["builtin_model"]["properties"]) - {"kind"}
    assert builtin == set(components.MODEL_KINDS["mlp"].keys)
    assert set(defs["python_model"]["properties"]) - {"kind"} == set(
        components.MODEL_KINDS["python"].keys
    )


def _keras_args(cls, skip=("self", "name", "kwargs", "learning_rate", "initial_learning_rate")):
    return {
        k: (components.REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k not in skip
    }


def test_every_keras_optimizer_is_registered_with_its_signature():
    keras = pytest.importorskip("keras")
    shipped = {
        name
        for name, obj in vars(keras.optimizers).items()
        if inspect.isclass(obj)
        and issubclass(obj, keras.optimizers.Optimizer)
        and obj is not keras.optimizers.Optimizer
        and name not in ("LossScaleOptimizer", "MultiOptimizer")  # wrappers of an optimizer
    }
    registered = {entry.keras_class for entry in components.OPTIMIZERS.values()}
    assert registered == shipped
    for name, entry in components.OPTIMIZERS.items():
        keras_args = _keras_args(getattr(keras.optimizers, entry.keras_class))
        # Muon's exclude_layers names layers of a model, not a hyperparameter of a study.
        keras_args.pop("exclude_layers", None)
        assert components.optimizer_args(name) == keras_args, name
        for key, default in components.optimizer_args(name).items():
            kind = components.arg_type(key, default)
            assert kind in ("integer", "number", "boolean"), (name, key)


def test_every_keras_schedule_is_registered_with_its_signature():
    keras = pytest.importorskip("keras")
    schedules = keras.optimizers.schedules
    shipped = {
        n
        for n, obj in vars(schedules).items()
        if inspect.isclass(obj) and n != "LearningRateSchedule"
    }
    assert {s.keras_class for s in components.SCHEDULES.values()} == shipped
    for entry in components.SCHEDULES.values():
        assert entry.args == _keras_args(getattr(schedules, entry.keras_class)), entry.keras_class


def test_callback_defaults_are_keras_defaults():
    keras = pytest.importorskip("keras")
    for entry in components.CALLBACKS.values():
        keras_args = _keras_args(getattr(keras.callbacks, entry.keras_class))
        keras_args.pop("verbose")
        assert entry.args == keras_args, entry.keras_class


def test_fuse_answers():
    spec = {"model": {"kind": "mlp"}, "optimizer": {"name": "adam"}, "training": {}}
    assert components.fuse_answer(spec) is None
    assert "norm" in components.fuse_answer({**spec, "optimizer": {"name": "lamb"}})
    assert "clipnorm" in components.fuse_answer(
        {**spec, "optimizer": {"name": "sgd", "clipnorm": 1.0}}
    )
    plateau = {**spec, "training": {"reduce_lr_on_plateau": {"patience": 2}}}
    assert "own learning rate" in components.fuse_answer(plateau)
    assert components.fuse_answer({**spec, "training": {"early_stopping": {}}}) is None
    assert components.fuse_answer(spec, "it builds Conv2D layers") == "it builds Conv2D layers"


# The rules against Keras' callbacks, on the same sequences of monitored values ---------------


class _FakeModel:
    """What Keras' EarlyStopping touches: stop_training, get/set_weights, metrics."""

    def __init__(self):
        self.stop_training = False
        self.metrics = []
        self.epoch = 0

    def get_weights(self):
        return [np.array(self.epoch)]

    def set_weights(self, weights):
        self.epoch = int(weights[0])


SEQUENCES = [
    [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9],
    [0.5] * 8,
    list(np.linspace(1, 0.1, 10)),
    [0.3, 0.2, 0.25, 0.19, 0.22, 0.23, 0.18, 0.3, 0.3, 0.3, 0.3],
]
SETTINGS = [
    {"patience": 0},
    {"patience": 2, "min_delta": 0.01},
    {"patience": 1, "restore_best_weights": True},
    {"patience": 2, "baseline": 0.21, "restore_best_weights": True},
    {"patience": 1, "start_from_epoch": 3},
    {"patience": 2, "monitor": "val_accuracy"},
    {"patience": 2, "mode": "max"},
]


@pytest.mark.parametrize("values", SEQUENCES)
@pytest.mark.parametrize("settings", SETTINGS)
def test_early_stopping_rule_is_keras(values, settings):
    keras = pytest.importorskip("keras")
    full = {**components.CALLBACKS["early_stopping"].args, **settings}
    ours = stopping.EarlyStopping(full)
    # Keras reads accuracy's direction ("up") from a compiled model's metrics, which this fake
    # model has none of: say it, and check that ours found it alone.
    keras_args = dict(full)
    if full["monitor"] == "val_accuracy" and full["mode"] == "auto":
        keras_args["mode"] = "max"
        assert ours.op is stopping.monitor_op("accuracy", "max")
    theirs = keras.callbacks.EarlyStopping(**keras_args)
    model = _FakeModel()
    theirs.set_model(model)
    theirs.on_train_begin()
    best_snapshot, ours_stop, theirs_stop = None, None, None
    for epoch, value in enumerate(values):
        model.epoch = epoch
        actions = ours.step(epoch, value)
        if stopping.EarlyStopping.SNAPSHOT in actions:
            best_snapshot = epoch
        if stopping.EarlyStopping.STOP in actions and ours_stop is None:
            ours_stop = epoch
        theirs.on_epoch_end(epoch, {full["monitor"]: value})
        if model.stop_training and theirs_stop is None:
            theirs_stop = epoch
        if ours_stop is not None or theirs_stop is not None:
            break
    assert ours_stop == theirs_stop
    assert ours.stopped_epoch == theirs.stopped_epoch
    assert ours.best_epoch == theirs.best_epoch
    assert ours.best == theirs.best or (ours.best is None and theirs.best is None)
    theirs.on_train_end()
    if full["restore_best_weights"] and best_snapshot is not None:
        assert model.epoch == best_snapshot


@pytest.mark.parametrize("values", SEQUENCES)
@pytest.mark.parametrize(
    "settings",
    [
        {"patience": 1},
        {"patience": 2, "cooldown": 1, "factor": 0.5},
        {"patience": 1, "min_lr": 0.004},
    ],
)
def test_plateau_rule_is_keras(values, settings):
    keras = pytest.importorskip("keras")
    full = {**components.CALLBACKS["reduce_lr_on_plateau"].args, **settings}
    ours = stopping.Plateau(full)
    mine, keras_opt = (keras.optimizers.SGD(learning_rate=0.01) for _ in range(2))
    model = _FakeModel()
    model.optimizer = keras_opt
    theirs = keras.callbacks.ReduceLROnPlateau(**full)
    theirs.set_model(model)
    theirs.on_train_begin()
    for epoch, value in enumerate(values):
        lr = float(keras.ops.convert_to_numpy(mine.learning_rate))
        new = ours.step(epoch, value, lr)
        if new is not None:
            mine.learning_rate = new
        theirs.on_epoch_end(epoch, {full["monitor"]: value})
        assert float(keras.ops.convert_to_numpy(mine.learning_rate)) == float(
            keras.ops.convert_to_numpy(keras_opt.learning_rate)
        ), epoch
    assert ours.wait == theirs.wait and ours.cooldown_counter == theirs.cooldown_counter
