"""Keras model and optimizer builders: the same spec gives the same model every time."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras
import numpy as np

from . import components, usermodel


def task_head(task: str, n_outputs: int) -> dict:
    """Output activation, loss and metrics chosen from the task."""
    if task == "classification":
        return {
            "activation": "softmax",
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
        }
    return {
        "activation": None,
        "loss": "mse",
        # MSE apart from the loss: with a penalty (L1/L2) the loss is MSE + penalty.
        "metrics": ["mse", "mae", keras.metrics.RootMeanSquaredError(name="rmse")],
    }


def _penalty(reg: dict):
    """L1, L2 or L1L2 as the seeds write them (`l2(0.001)` is an L2, not an L1L2)."""
    l1, l2 = reg["l1"], reg["l2"]
    if l1 and l2:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l2:
        return keras.regularizers.L2(l2)
    if l1:
        return keras.regularizers.L1(l1)
    return None


def _dense(units, activation, initializer, reg: dict, penalised: bool, name: str):
    penalty = _penalty(reg) if penalised else None
    return keras.layers.Dense(
        units,
        activation=None if activation == "linear" else activation,
        kernel_initializer=initializer,
        kernel_regularizer=penalty,
        bias_regularizer=penalty if reg["bias"] else None,
        name=name,
    )


def build_model(model: dict, input_shape, n_outputs: int, task: str) -> keras.Model:
    """Build (not compile) the model described by the `model` section of a spec.

    mlp: Input -> Flatten -> Dense(h) for h in hidden (optionally Dropout) -> Dense(n_outputs).
    wide_deep: the same deep path, with the flattened input concatenated to its last hidden
    layer before the output (seed 003's functional-API model).
    """
    reg, drop = model["regularizer"], model["dropout"]
    hidden_pen = reg["layers"] in ("hidden", "all")
    output_pen = reg["layers"] in ("output", "all")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    flat = keras.layers.Flatten(name="flatten")(inputs)
    x = flat
    for i, units in enumerate(model["hidden"]):
        x = _dense(
            units, model["activation"], model["initializer"], reg, hidden_pen, f"hidden_{i + 1}"
        )(x)
        # seed 002 puts Dropout after hidden layer n when n % 2 == 0 (0-based): 1st, 3rd, ...
        if drop["rate"] > 0 and (drop["layers"] == "all" or i % 2 == 0):
            x = keras.layers.Dropout(drop["rate"], name=f"dropout_{i + 1}")(x)
    if model["kind"] == "wide_deep":
        x = keras.layers.Concatenate(name="wide_deep")([flat, x])
    head = task_head(task, n_outputs)
    outputs = _dense(
        n_outputs, head["activation"], model["output_initializer"], reg, output_pen, "output"
    )(x)
    return keras.Model(inputs, outputs, name=model["kind"])


def build_schedule(schedule: dict, learning_rate: float):
    """The keras.optimizers.schedules object of a spec's `optimizer.schedule`."""
    entry = components.SCHEDULES[schedule["name"]]
    args = {k: v for k, v in schedule.items() if k != "name"}
    if (
        "initial_learning_rate"
        in inspect.signature(getattr(keras.optimizers.schedules, entry.keras_class)).parameters
    ):
        args["initial_learning_rate"] = learning_rate
    return getattr(keras.optimizers.schedules, entry.keras_class)(**args)


def build_optimizer(opt: dict) -> keras.optimizers.Optimizer:
    """The Keras optimizer of a spec's `optimizer` section (any of components.OPTIMIZERS)."""
    entry = components.OPTIMIZERS[opt["name"]]
    args = {k: v for k, v in opt.items() if k not in ("name", "learning_rate", "schedule")}
    lr = opt["learning_rate"]
    if opt.get("schedule"):
        lr = build_schedule(opt["schedule"], lr)
    return getattr(keras.optimizers, entry.keras_class)(learning_rate=lr, **args)


def compile_model(model: keras.Model, spec: dict, n_outputs: int, from_logits: bool = False):
    """Compile with the spec's optimizer and the task's loss and metrics (`from_logits`: a
    user model whose classifier outputs logits)."""
    head = task_head(spec["data"]["task"], n_outputs)
    loss = head["loss"]
    if from_logits:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=build_optimizer(spec["optimizer"]),
        loss=loss,
        metrics=head["metrics"],
        steps_per_execution=spec["training"]["steps_per_execution"],
    )
    return model


# A user's own model (usermodel: kind python) --------------------------------------------------


class UserModelError(ValueError):
    """A user model that would fail late or train wrongly, found before epoch 1."""


def build_user_model(model: dict, input_shape, n_outputs: int, task: str):
    """Call the user's function with its hyperparameters (and input_shape, n_outputs, task if
    its signature names them); the Keras model it returns."""
    function = usermodel.load_function(model, list(usermodel.PATHS.values()))
    kwargs = dict(model["hyperparameters"])
    named = inspect.signature(function).parameters
    injected = {"input_shape": tuple(input_shape), "n_outputs": n_outputs, "task": task}
    kwargs.update({k: v for k, v in injected.items() if k in named})
    where = f"{model['function']}() of {usermodel.file_paths(model)[0]}"
    built = function(**kwargs)
    if not isinstance(built, keras.Model):
        raise UserModelError(f"{where} returned {type(built).__name__}: expected a keras.Model")
    return built


def _loss_from_logits(loss) -> bool | None:
    """Whether a compiled loss takes logits (None: a loss that is not a cross-entropy)."""
    name = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)
    if "crossentropy" not in str(name).replace("_", ""):
        return None
    return bool(getattr(loss, "from_logits", False)) if not isinstance(loss, str) else False


def check_user_model(model, where: str, x_sample, task: str, n_outputs: int, tmp_file) -> bool:
    """Check a user model before epoch 1; return whether a classifier outputs logits.

    The output must have the task's shape (a classifier: one unit per class, n_outputs; a
    regression: one per target); a classifier's outputs must be probabilities (softmax) or
    logits, matching a compiled loss's `from_logits`; the model must save and load back as
    `model.keras` does at the end of the run (a custom layer must be registered).
    """
    out = keras.ops.convert_to_numpy(model(x_sample, training=False))
    rows = len(x_sample)
    want = (rows, n_outputs)
    if tuple(out.shape) != want and not (task == "regression" and n_outputs == 1
                                         and tuple(out.shape) == (rows,)):  # fmt: skip
        unit = "class" if task == "classification" else "target"
        raise UserModelError(
            f"{where}: expected an output of shape (batch, {n_outputs}), one unit per {unit} "
            f"of this {task}. Received: {tuple(out.shape)} for a batch of {rows}. Give the last "
            "layer n_outputs units (name `n_outputs` in the function's parameters to receive it)."
        )
    logits = False
    if task == "classification":
        probabilities = bool(
            np.all(out >= 0) and np.all(out <= 1) and np.allclose(out.sum(axis=1), 1, atol=1e-3)
        )
        logits = not probabilities
        compiled = getattr(model, "compiled", False) and model.loss is not None
        if compiled:
            from_logits = _loss_from_logits(model.loss)
            if from_logits is not None and from_logits != logits:
                said = "logits (from_logits=True)" if from_logits else "probabilities"
                got = "logits" if logits else "probabilities (rows in [0, 1] summing to 1)"
                raise UserModelError(
                    f"{where}: its compiled loss takes {said}, but the model outputs {got}. "
                    "Match the loss's from_logits to the last layer's activation."
                )
        elif logits and np.all(out >= 0) and np.all(out <= 1):
            raise UserModelError(
                f"{where}: expected class probabilities (softmax: rows summing to 1) or logits "
                "(no activation). Received outputs in [0, 1] that do not sum to 1 (a sigmoid?): "
                "use softmax over n_outputs units, or no activation."
            )
    try:
        model.save(tmp_file)  # a scratch file in a temporary directory
        keras.saving.load_model(tmp_file, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure to save is the user's to fix
        raise UserModelError(
            f"{where}: the model cannot be saved and loaded back as model.keras, which every "
            f"run writes ({type(exc).__name__}: {exc}). Register custom layers with "
            "@keras.saving.register_keras_serializable() and give them get_config()."
        ) from None
    finally:
        Path(tmp_file).unlink(missing_ok=True)
    return logits
