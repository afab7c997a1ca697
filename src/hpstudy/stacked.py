"""R copies of a model as one set of operations: weights with a leading repeat axis (HFTA-style).

A fused job (`fused.py`) trains an experiment's R repeats together. Tiny MLPs are bound by the
framework's per-operation overhead, not arithmetic, so R towers of separate layers cost almost R
times one: every op runs R times. Here each Dense layer of the R towers becomes one layer whose
kernel is `(R, in, out)` and whose bias is `(R, out)`, applied to `(R, batch, in)` as one batched
matmul; the loss, the penalties and the metrics are computed for all towers at once, one value
per tower. The op count no longer grows with R (but for Dropout, whose masks are drawn per tower).

Each tower stays the model of its own repeat:

- its weights start as those of its own model, built after `keras.utils.set_random_seed(seed_k)`
  (`fused.train_repeats` builds the R single models and `StackedModel` copies them in);
- its Dropout masks are drawn by its own model's Dropout layers, on its own slice, with their
  own random-generator states: the masks of the run trained alone;
- nothing mixes towers: every operation acts on each tower's slice (matmul, bias, activation,
  the loss and metric means over the batch, the penalties), the total loss is the sum of the
  towers' losses, so the gradient of tower k's weights is that of its own loss, and the
  optimizers (SGD, momentum, RMSprop, Adam) update each element on its own. A tower whose loss
  is NaN passes nothing to the others.

`StackedModel.unstack()` writes each tower's trained weights back into its single model.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


class StackedDense(keras.layers.Layer):
    """The R towers' Dense layer of one name: kernel `(R, in, out)`, bias `(R, out)`."""

    def __init__(self, denses: list, **kwargs):
        super().__init__(name=f"stacked_{denses[0].name}", **kwargs)
        first = denses[0]
        # One activation for all towers, or each tower's own (an activation study's towers).
        self.activations = [d.activation for d in denses]
        alike = all(a is first.activation for a in self.activations)
        self.activation = first.activation if alike else None
        self.activation_masks = [
            (act, np.array([a is act for a in self.activations]).reshape(-1, 1, 1))
            for act in dict.fromkeys(self.activations)
        ]
        kernel = np.stack([ops.convert_to_numpy(d.kernel) for d in denses])
        self.kernel = self.add_weight(
            shape=tuple(kernel.shape), initializer=_constant(kernel), name="kernel"
        )
        self.bias = None
        if first.use_bias:
            bias = np.stack([ops.convert_to_numpy(d.bias) for d in denses])
            self.bias = self.add_weight(
                shape=tuple(bias.shape), initializer=_constant(bias), name="bias"
            )
        # Penalties as Keras sums them for a single layer: the kernel's, then the bias's; each
        # tower with its own strengths (0 for a tower whose layer has none: it adds exactly 0).
        self.penalised = []
        for weight, attr in ((self.kernel, "kernel_regularizer"), (self.bias, "bias_regularizer")):
            factors = [_factors(getattr(d, attr)) for d in denses]
            if weight is not None and any(l1 or l2 for l1, l2 in factors):
                self.penalised.append((weight, [f[0] for f in factors], [f[1] for f in factors]))

    def call(self, x):
        """`x` is `(R, batch, in)`; returns `(R, batch, out)`, as each tower's Dense would."""
        y = ops.matmul(x, self.kernel)
        if self.bias is not None:
            y = ops.add(y, ops.expand_dims(self.bias, 1))
        if self.activation is not None:
            return self.activation(y)
        # Each distinct activation once over all towers, each tower's own values selected: as
        # many ops as distinct activations, not as towers; elementwise, so towers stay apart.
        out = None
        for act, mask in self.activation_masks:
            value = act(y) if act is not None else y
            out = value if out is None else ops.where(mask, value, out)
        return out

    def penalties(self) -> list:
        """Each penalty of this layer, one value per tower: `(R,)`."""
        return [_penalty(weight, l1, l2) for weight, l1, l2 in self.penalised]

    def unstack_into(self, denses: list) -> None:
        """Write tower k's slice of the weights into `denses[k]` (the single model's layer)."""
        kernel = ops.convert_to_numpy(self.kernel)
        bias = None if self.bias is None else ops.convert_to_numpy(self.bias)
        for k, dense in enumerate(denses):
            dense.kernel.assign(kernel[k])
            if bias is not None:
                dense.bias.assign(bias[k])


def _constant(value):
    """An initializer that returns `value` (the towers' own initial weights, stacked)."""

    def initializer(shape, dtype=None):
        return ops.convert_to_tensor(value.astype(dtype or value.dtype))

    return initializer


def _factors(penalty) -> tuple[float, float]:
    """(l1, l2) of one tower's Keras L1, L2 or L1L2 penalty; (0, 0) for none."""
    if penalty is None:
        return 0.0, 0.0
    if not isinstance(penalty, _PENALTIES):
        raise Unstackable(f"the penalty {penalty!r}")
    config = penalty.get_config()
    return float(config.get("l1", 0.0)), float(config.get("l2", 0.0))


def _dtype(weight) -> str:
    return keras.backend.standardize_dtype(weight.dtype)


def _penalty(weight, l1: list, l2: list):
    """Each tower's L1/L2 penalty of its own slice of `weight`, with its own strengths: `(R,)`,
    as Keras' L1, L2 and L1L2 compute it for the tower's single layer."""
    axes = tuple(range(1, len(weight.shape)))
    total = None
    if any(l1):
        total = ops.multiply(
            np.asarray(l1, _dtype(weight)), ops.sum(ops.absolute(weight), axis=axes)
        )
    if any(l2):
        term = ops.multiply(np.asarray(l2, _dtype(weight)), ops.sum(ops.square(weight), axis=axes))
        total = term if total is None else ops.add(total, term)
    return total


class StackedDropout(keras.layers.Layer):
    """The towers' own Dropout layers, each applied to its tower's slice: the masks of its run."""

    def __init__(self, dropouts: list, **kwargs):
        super().__init__(name=f"stacked_{dropouts[0].name}", **kwargs)
        self.dropouts = dropouts  # tracked: their random-generator states are backed up

    def call(self, x, training=False):
        return ops.stack([drop(x[k], training=training) for k, drop in enumerate(self.dropouts)])


class StackedMean(keras.metrics.Metric):
    """A mean per tower (`t<k>_<name>` in the logs), summed over batches as Keras' Mean does."""

    def __init__(self, name: str, repeats: int, root: bool = False):
        super().__init__(name=name)
        self.repeats, self.root = repeats, root
        self.total = self.add_variable(shape=(repeats,), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, sums, count):
        """Add each tower's sum over a batch (`(R,)`) and the batch's count."""
        self.total.assign_add(ops.cast(sums, self.dtype))
        self.count.assign_add(ops.cast(count, self.dtype))

    def result(self):
        mean = ops.divide_no_nan(self.total, self.count)
        if self.root:
            mean = ops.sqrt(mean)
        # One unstack, not R slices: Keras calls this eagerly at every epoch end.
        return {f"t{k}_{self.name}": v for k, v in enumerate(ops.unstack(mean, self.repeats))}


def _per_sample_metrics(task: str) -> list:
    """(name, per-sample function, root) of the task's metrics, named as `models.task_head`'s."""
    if task == "classification":
        return [("accuracy", keras.metrics.sparse_categorical_accuracy, False)]
    squared = lambda y, p: ops.mean(ops.square(ops.subtract(p, y)), axis=-1)  # noqa: E731
    return [
        ("mse", squared, False),
        ("mae", lambda y, p: ops.mean(ops.absolute(ops.subtract(p, y)), axis=-1), False),
        ("rmse", squared, True),
    ]


def _per_sample_loss(task: str, from_logits: bool = False):
    if task == "classification":
        if from_logits:
            return lambda y, p: keras.losses.sparse_categorical_crossentropy(y, p, from_logits=True)
        return keras.losses.sparse_categorical_crossentropy
    return keras.losses.mean_squared_error


class Unstackable(ValueError):
    """A model the fused engine cannot stack: its repeats train one after another instead."""


_PENALTIES = (keras.regularizers.L1, keras.regularizers.L2, keras.regularizers.L1L2)


def check_stackable(model: keras.Model) -> None:
    """Refuse (Unstackable) a model whose layers or settings `StackedModel` would not copy:
    it stacks a chain of Flatten, Dense (L1/L2 penalties, no constraints or activity penalty)
    and Dropout layers, with Concatenate only as the built-in wide & deep joins its input."""
    for i, layer in enumerate(model.layers):
        kind = type(layer)
        if kind not in (keras.layers.InputLayer, keras.layers.Flatten, keras.layers.Dense,
                        keras.layers.Dropout, keras.layers.Concatenate):  # fmt: skip
            raise Unstackable(f"a {kind.__name__} layer ({layer.name!r}, layer {i})")
        if kind is keras.layers.Concatenate and model.name != "wide_deep":
            raise Unstackable(
                f"a Concatenate layer ({layer.name!r}) outside the built-in wide_deep"
            )
        if kind is keras.layers.Dense:
            for attr in ("kernel_regularizer", "bias_regularizer"):
                penalty = getattr(layer, attr)
                if penalty is not None and type(penalty) not in _PENALTIES:
                    raise Unstackable(f"the {attr} {penalty!r} of layer {layer.name!r}")
            if (
                layer.activity_regularizer is not None
                or layer.kernel_constraint is not None
                or layer.bias_constraint is not None
                or getattr(layer, "lora_enabled", False)
            ):
                raise Unstackable(f"an activity penalty, constraint or LoRA on {layer.name!r}")
        if kind is keras.layers.Dropout and (layer.noise_shape is not None):
            raise Unstackable(f"a Dropout with a noise_shape ({layer.name!r})")


def check_alike(towers: list) -> None:
    """Refuse (Unstackable) towers that are not one architecture: the same layers and weight
    shapes. Their values may differ: weights, activations, penalties, Dropout rates."""
    first = towers[0]
    for k, tower in enumerate(towers[1:], start=1):
        if len(tower.layers) != len(first.layers):
            raise Unstackable(f"towers of different depths ({len(first.layers)} and "
                              f"{len(tower.layers)} layers, towers 0 and {k})")  # fmt: skip
        for a, b in zip(first.layers, tower.layers):
            if type(a) is not type(b) or [tuple(w.shape) for w in a.weights] != [
                tuple(w.shape) for w in b.weights
            ]:
                raise Unstackable(f"towers of different architectures ({a.name!r} of tower 0 "
                                  f"and {b.name!r} of tower {k})")  # fmt: skip


class TowerScalars:
    """Mixed into a Keras optimizer: tower k's slice of every stacked weight is updated with
    tower k's learning rate (and, for SGD, its momentum), as its run alone would be.

    Keras passes one learning rate to `update_step`; this passes instead the towers' rates as
    a `(R, 1, ...)` tensor, which broadcasts over each weight's tower axis, so every element
    sees its own tower's scalar in the optimizer's own arithmetic (SGD, RMSprop, Adam, ...).
    SGD's momentum is applied by SGD's own formula with the towers' momenta; a tower with
    momentum 0 then gets `w + (0 * m - lr * g)`, which is exactly its plain `w - lr * g`.
    """

    tower_learning_rates: list | None = None
    tower_momentums: list | None = None

    def tower_scalar(self, values: list, variable):
        """`values` (one per tower) as a tensor that broadcasts over `variable`'s tower axis."""
        shape = (len(values),) + (1,) * (len(variable.shape) - 1)
        return ops.reshape(ops.convert_to_tensor(np.asarray(values, _dtype(variable))), shape)

    def update_step(self, gradient, variable, learning_rate):
        if self.tower_learning_rates is not None:
            learning_rate = self.tower_scalar(self.tower_learning_rates, variable)
        if self.tower_momentums is None:
            return super().update_step(gradient, variable, learning_rate)
        # keras.optimizers.SGD.update_step, with each tower's momentum
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        momentum = self.tower_scalar(self.tower_momentums, variable)
        step = ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate))
        self.assign(m, step)
        if self.nesterov:
            step = ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate))
            self.assign_add(variable, step)
        else:
            self.assign_add(variable, m)

    def tower_learning_rate(self, k: int) -> float:
        """Tower k's learning rate, as its run alone logs it (the float32 the optimizer holds)."""
        return float(np.float32(self.tower_learning_rates[k]))


def with_tower_scalars(optimizer, learning_rates: list | None, momentums: list | None):
    """A copy of the Keras `optimizer` whose towers each have their own learning rate
    (`learning_rates`, one per tower) and SGD momentum (`momentums`); either may be None
    (all towers share the optimizer's own). With momenta, `optimizer` must have a nonzero
    momentum, so that SGD keeps its momentum slots."""
    cls = type(f"Towers{type(optimizer).__name__}", (TowerScalars, type(optimizer)), {})
    fused = cls.from_config(optimizer.get_config())
    fused.tower_learning_rates = learning_rates
    fused.tower_momentums = momentums
    return fused


class StackedModel(keras.Model):
    """R towers as one model: input `(batch, R, ...)`, output `(R, batch, outputs)`.

    An input of `(batch, 1, ...)` is the same data for every tower (the validation split of
    towers that share one prepared file).

    `StackedModel(towers, task)` takes the R single models (built, same architecture) and copies
    their weights; compile it with an optimizer only. Its logs are `t<k>_loss` and
    `t<k>_<metric>` for every tower k (and `val_` of each).
    """

    def __init__(self, towers: list, task: str, from_logits: bool = False, **kwargs):
        super().__init__(name="stacked", **kwargs)
        self.repeats, self.task = len(towers), task
        for tower in towers:
            check_stackable(tower)
        check_alike(towers)
        self.input_size = math.prod(towers[0].input_shape[1:])
        self.steps = [self._stack(i, [t.layers[i] for t in towers])
                      for i in range(len(towers[0].layers))]  # fmt: skip
        self.loss_tracker = StackedMean("loss", self.repeats)
        metrics = _per_sample_metrics(task)
        self.tower_metrics = [StackedMean(name, self.repeats, root) for name, _, root in metrics]
        self.metric_functions = [fn for _, fn, _ in metrics]
        self.loss_function = _per_sample_loss(task, from_logits)

    @staticmethod
    def _stack(index: int, layers: list):
        """The stacked form of the towers' `index`-th layer, or a marker for the wiring."""
        first = layers[0]
        if isinstance(first, keras.layers.InputLayer | keras.layers.Flatten):
            return None  # the input is flattened once, in `call`
        if isinstance(first, keras.layers.Dense):
            return StackedDense(layers)
        if isinstance(first, keras.layers.Dropout):
            return StackedDropout(layers)
        if isinstance(first, keras.layers.Concatenate):
            return "concatenate_input"  # wide & deep: [flattened input, deep path]
        raise Unstackable(f"a {type(first).__name__} layer ({first.name!r}, layer {index})")

    def call(self, x, training=False):
        x = self._towers_axis(x)
        x = ops.reshape(x, (-1, self.repeats, self.input_size))
        flat = x = ops.transpose(x, (1, 0, 2))  # (R, batch, features)
        for step in self.steps:
            if step is None:
                continue
            if step == "concatenate_input":
                x = ops.concatenate([flat, x], axis=-1)
            elif isinstance(step, StackedDropout):
                x = step(x, training=training)
            else:
                x = step(x)
        return x

    def unstack(self, towers: list) -> list:
        """Write each tower's trained weights into its single model; return the models."""
        for i, step in enumerate(self.steps):
            if isinstance(step, StackedDense):
                step.unstack_into([t.layers[i] for t in towers])
        return towers

    def tower_weights(self, k: int) -> list:
        """Tower k's slice of every stacked weight, as arrays (a stopped tower's snapshot)."""
        return [ops.convert_to_numpy(w)[k] for step in self.steps
                if isinstance(step, StackedDense) for w in (step.kernel, step.bias)
                if w is not None]  # fmt: skip

    def set_tower(self, k: int, weights: list) -> None:
        """Put a snapshot of tower k (`tower_weights`) back into its slice of the weights."""
        values = iter(weights)
        for step in self.steps:
            if isinstance(step, StackedDense):
                for w in (step.kernel, step.bias):
                    if w is not None:
                        stacked = ops.convert_to_numpy(w).copy()
                        stacked[k] = next(values)
                        w.assign(stacked)

    def _towers_axis(self, x):
        """`x` of `(batch, R, ...)`, or of `(batch, 1, ...)`: data all towers share."""
        if self.repeats > 1 and x.shape[1] == 1:
            x = ops.broadcast_to(x, (ops.shape(x)[0], self.repeats, *x.shape[2:]))
        return x

    def _targets(self, y, y_pred):
        """`y` of `(batch, R, ...)` (or `(batch, 1, ...)`) as `(R, batch, ...)`, of the
        prediction's rank."""
        y = ops.moveaxis(self._towers_axis(y), 1, 0)
        if len(y.shape) == len(y_pred.shape) - 1 and self.task != "classification":
            y = ops.expand_dims(y, -1)
        return y

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The sum of the towers' losses, each its data loss plus its own penalties."""
        y = self._targets(y, y_pred)
        batch = ops.cast(ops.shape(y_pred)[1], "float32")
        per_sample = self.loss_function(y, y_pred)  # (R, batch)
        # Keras' sum_over_batch_size, per tower; then the penalties, in Keras' order.
        parts = [ops.divide_no_nan(ops.sum(per_sample, axis=1), batch)]
        for step in self.steps:
            if isinstance(step, StackedDense):
                parts += step.penalties()
        loss = parts[0] if len(parts) == 1 else ops.sum(ops.stack(parts), axis=0)
        self.loss_tracker.update_state(ops.multiply(loss, batch), batch)
        return ops.sum(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """`t<k>_loss` and `t<k>_<metric>` of every tower."""
        y = self._targets(y, y_pred)
        batch = ops.shape(y_pred)[1]
        for metric, function in zip(self.tower_metrics, self.metric_functions):
            metric.update_state(ops.sum(ops.cast(function(y, y_pred), "float32"), axis=1), batch)
        logs = {}
        for metric in (self.loss_tracker, *self.tower_metrics):
            logs.update(metric.result())
        return logs
