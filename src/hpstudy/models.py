"""Keras model and optimizer builders: the same spec gives the same model every time."""

from __future__ import annotations

import keras


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


def build_optimizer(opt: dict) -> keras.optimizers.Optimizer:
    name, lr = opt["name"], opt["learning_rate"]
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=opt["momentum"], nesterov=opt["nesterov"]
        )
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, rho=opt["rho"], momentum=opt["momentum"])
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, beta_1=opt["beta_1"], beta_2=opt["beta_2"])
    raise ValueError(f"Expected optimizer sgd, rmsprop or adam. Received: {name!r}")


def compile_model(model: keras.Model, spec: dict, n_outputs: int) -> keras.Model:
    head = task_head(spec["data"]["task"], n_outputs)
    model.compile(
        optimizer=build_optimizer(spec["optimizer"]),
        loss=head["loss"],
        metrics=head["metrics"],
        steps_per_execution=spec["training"]["steps_per_execution"],
    )
    return model
