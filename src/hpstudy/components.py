"""The registry of pluggable components: model kinds, optimizers, schedules, callbacks, sources.

Each component is declared once, here, in plain Python (no Keras: planning imports none): its
config keys and their Keras defaults, what it needs from the data, how much memory it keeps
(optimizer slots), and whether the fused engine (`stacked`, `fused`) can stack an experiment's
repeats when the component is in it. Everything else reads this module: the planner's checks
and id normalisation (`config`, `plan`), the memory estimate, the builders (`models`) and the
plan-time choice between fused and separate repeats (`fuse_answer`). The schema's enums are
tested against these tables, and the Keras-facing tables (arguments and defaults) are tested
against Keras' own signatures (tests/test_components.py), so neither can drift.

Adding an optimizer, a schedule or a callback is one entry here (plus its docs and a test);
a model kind is one entry here and its builder in `models`; a dataset source is one `Source` in
`datasets.SOURCES` (its files, pins, sizes, task and reader together), which :data:`SOURCE_NAMES`
lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .datasets import FILE_SOURCE, SOURCES

#: The optimizer name in the spec of a user model that its own file compiles.
COMPILED = "compiled_by_model"
#: A required argument (no default): it must be given in the config.
REQUIRED = "<required>"


@dataclass(frozen=True)
class Optimizer:
    """One Keras optimizer, by its config name (`optimizer.name`)."""

    keras_class: str
    args: dict  # its own arguments (besides learning_rate) -> Keras' default
    slots: Callable[[dict], int]  # tensors the size of the weights that it keeps
    # Keys always written into the spec with their defaults (the ids of the first three
    # optimizers were made so); any other key enters the spec only when it differs from its
    # default, so a new key never changes an existing experiment's id.
    filled: tuple = ()
    # Why the fused engine cannot stack it (it does not update each weight on its own), or None.
    unstackable: str | None = None
    # The values each tower of a fused job may hold on its own (`stacked.TowerScalars`): the
    # learning rate for an optimizer whose update uses it element by element, SGD's momentum.
    tower_args: tuple = ()


#: Arguments every Keras optimizer takes (keras.optimizers.Optimizer), with their defaults.
COMMON_ARGS = {
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}
#: Common arguments whose value is an integer (None is their default).
INTEGER_ARGS = {"ema_overwrite_frequency", "gradient_accumulation_steps", "ns_steps"}
#: Common arguments that couple the towers of a fused job: a norm over a whole variable (all
#: towers' slices) or over all of them.
COUPLING_ARGS = {
    "clipnorm": "clipnorm clips each variable by its norm, which in a fused job spans every "
    "repeat's weights",
    "global_clipnorm": "global_clipnorm clips by the norm of all weights, which in a fused job "
    "are every repeat's",
}

_ELEMENTWISE = None  # each weight updated on its own: towers stay independent
_ADAM_ARGS = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07}
_OWN_RATE = ("learning_rate",)  # tests/test_groups.py trains each such optimizer's towers


def _extra(opt: dict) -> int:
    """Slots that the common arguments add: an EMA copy, a gradient accumulator."""
    return int(bool(opt.get("use_ema"))) + int(bool(opt.get("gradient_accumulation_steps")))


OPTIMIZERS = {
    "sgd": Optimizer(
        "SGD",
        {"momentum": 0.0, "nesterov": False},
        lambda o: int(bool(o.get("momentum"))) + _extra(o),
        filled=("momentum", "nesterov"),
        tower_args=("learning_rate", "momentum"),
    ),
    "rmsprop": Optimizer(
        "RMSprop",
        {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-07, "centered": False},
        lambda o: 1 + int(bool(o.get("momentum"))) + int(bool(o.get("centered"))) + _extra(o),
        filled=("rho", "momentum"),
        tower_args=_OWN_RATE,
    ),
    "adam": Optimizer(
        "Adam",
        {**_ADAM_ARGS, "amsgrad": False},
        lambda o: 2 + int(bool(o.get("amsgrad"))) + _extra(o),
        filled=("beta_1", "beta_2"),
        tower_args=_OWN_RATE,
    ),
    "adamw": Optimizer(
        "AdamW",
        {"weight_decay": 0.004, **_ADAM_ARGS, "amsgrad": False},
        lambda o: 2 + int(bool(o.get("amsgrad"))) + _extra(o),
    ),
    "nadam": Optimizer("Nadam", dict(_ADAM_ARGS), lambda o: 2 + _extra(o), tower_args=_OWN_RATE),
    "adamax": Optimizer("Adamax", dict(_ADAM_ARGS), lambda o: 2 + _extra(o), tower_args=_OWN_RATE),
    "adagrad": Optimizer(
        "Adagrad",
        {"initial_accumulator_value": 0.1, "epsilon": 1e-07},
        lambda o: 1 + _extra(o),
        tower_args=_OWN_RATE,
    ),
    "adadelta": Optimizer("Adadelta", {"rho": 0.95, "epsilon": 1e-07}, lambda o: 2 + _extra(o)),
    "ftrl": Optimizer(
        "Ftrl",
        {
            "learning_rate_power": -0.5,
            "initial_accumulator_value": 0.1,
            "l1_regularization_strength": 0.0,
            "l2_regularization_strength": 0.0,
            "l2_shrinkage_regularization_strength": 0.0,
            "beta": 0.0,
        },
        lambda o: 2 + _extra(o),
    ),
    "lion": Optimizer("Lion", {"beta_1": 0.9, "beta_2": 0.99}, lambda o: 1 + _extra(o)),
    "lamb": Optimizer(
        "Lamb",
        dict(_ADAM_ARGS),
        lambda o: 2 + _extra(o),
        unstackable="Lamb scales each variable's step by its norm, which in a fused job spans "
        "every repeat's weights",
    ),
    "adafactor": Optimizer(
        "Adafactor",
        {
            "beta_2_decay": -0.8,
            "epsilon_1": 1e-30,
            "epsilon_2": 0.001,
            "clip_threshold": 1.0,
            "relative_step": True,
        },
        lambda o: 2 + _extra(o),
        unstackable="Adafactor factors each variable's second moments over its last two axes, "
        "which in a fused job mix the repeats of a bias",
    ),
    "muon": Optimizer(
        "Muon",
        {
            "adam_beta_1": 0.9,
            "adam_beta_2": 0.999,
            "adam_weight_decay": 0.004,
            "epsilon": 1e-07,
            "weight_decay": 0.004,
            "exclude_embeddings": True,
            "muon_a": 3.4445,
            "muon_b": -4.775,
            "muon_c": 2.0315,
            "adam_lr_ratio": 1,
            "momentum": 0.95,
            "ns_steps": 5,
            "nesterov": True,
            "rms_rate": 0.2,
        },
        lambda o: 2 + _extra(o),
        unstackable="Muon orthogonalises each weight matrix, which in a fused job stacks every "
        "repeat's",
    ),
    "schedule_free_adamw": Optimizer(
        "ScheduleFreeAdamW",
        {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-08, "warmup_steps": 0},
        lambda o: 3 + _extra(o),
        unstackable="ScheduleFreeAdamW swaps its training and evaluation weights around each "
        "evaluation, which the fused engine's per-repeat test split does not do",
    ),
}


def optimizer_args(name: str) -> dict:
    """Every argument of optimizer `name` besides learning_rate, with its Keras default."""
    return {**COMMON_ARGS, **OPTIMIZERS[name].args}


def arg_type(name: str, default) -> str:
    """The JSON type an argument takes: that of its default (a number where it is None)."""
    if name in INTEGER_ARGS:
        return "integer"
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, int) and name != "adam_lr_ratio":
        return "integer"
    return "number"


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule of keras.optimizers.schedules (`optimizer.schedule.name`).

    The optimizer's `learning_rate` is its initial_learning_rate (PiecewiseConstantDecay has
    none: its `values` are the rates, and the spec's learning_rate is their first).
    """

    keras_class: str
    args: dict  # arguments besides initial_learning_rate and name -> default (REQUIRED: none)
    types: dict = field(default_factory=dict)  # argument -> JSON type, where not the default's


SCHEDULES = {
    "cosine_decay": Schedule(
        "CosineDecay",
        {"decay_steps": REQUIRED, "alpha": 0.0, "warmup_target": None, "warmup_steps": 0},
        {"decay_steps": "integer"},
    ),
    "cosine_decay_restarts": Schedule(
        "CosineDecayRestarts",
        {"first_decay_steps": REQUIRED, "t_mul": 2.0, "m_mul": 1.0, "alpha": 0.0},
        {"first_decay_steps": "integer"},
    ),
    "exponential_decay": Schedule(
        "ExponentialDecay",
        {"decay_steps": REQUIRED, "decay_rate": REQUIRED, "staircase": False},
        {"decay_steps": "integer", "decay_rate": "number"},
    ),
    "inverse_time_decay": Schedule(
        "InverseTimeDecay",
        {"decay_steps": REQUIRED, "decay_rate": REQUIRED, "staircase": False},
        {"decay_steps": "integer", "decay_rate": "number"},
    ),
    "piecewise_constant_decay": Schedule(
        "PiecewiseConstantDecay",
        {"boundaries": REQUIRED, "values": REQUIRED},
        {"boundaries": "integers", "values": "numbers"},
    ),
    "polynomial_decay": Schedule(
        "PolynomialDecay",
        {"decay_steps": REQUIRED, "end_learning_rate": 0.0001, "power": 1.0, "cycle": False},
        {"decay_steps": "integer"},
    ),
}


def schedule_type(schedule: Schedule, arg: str) -> str:
    default = schedule.args[arg]
    return schedule.types.get(arg) or arg_type(arg, default)


@dataclass(frozen=True)
class Callback:
    """A training callback, by its key in `training` (present: on, with these defaults)."""

    keras_class: str
    args: dict  # its config keys -> Keras' default
    unstackable: str | None = None


CALLBACKS = {
    "early_stopping": Callback(
        "EarlyStopping",
        {
            "monitor": "val_loss",
            "min_delta": 0.0,
            "patience": 0,
            "mode": "auto",
            "baseline": None,
            "restore_best_weights": False,
            "start_from_epoch": 0,
        },
    ),
    "reduce_lr_on_plateau": Callback(
        "ReduceLROnPlateau",
        {
            "monitor": "val_loss",
            "factor": 0.1,
            "patience": 10,
            "mode": "auto",
            "min_delta": 0.0001,
            "cooldown": 0,
            "min_lr": 0.0,
        },
        unstackable="reduce_lr_on_plateau gives each repeat its own learning rate, and the "
        "repeats of a fused job share one optimizer",
    ),
}


@dataclass(frozen=True)
class ModelKind:
    """A model kind (`model.kind`): its keys, whether its memory can be estimated from its
    keys, and whether the fused engine can stack it (None: yes; else why not)."""

    keys: tuple
    dense_memory: bool
    unstackable: str | None = None


_BUILTIN_KEYS = ("hidden", "activation", "initializer", "output_initializer", "regularizer",
                 "dropout")  # fmt: skip
MODEL_KINDS = {
    "mlp": ModelKind(_BUILTIN_KEYS, dense_memory=True),
    "wide_deep": ModelKind(_BUILTIN_KEYS, dense_memory=True),
    # Stacked when its file builds only what the fused engine stacks (usermodel.inspect_file).
    "python": ModelKind(("file", "function", "hyperparameters", "files"), dense_memory=False),
}

#: The dataset sources (`source`): the registered ones and a user's file (`userdata`).
SOURCE_NAMES = (*SOURCES, FILE_SOURCE)


def optimizer_slots(opt: dict) -> int:
    """Tensors the size of the weights that the spec's optimizer keeps."""
    if opt["name"] not in OPTIMIZERS:  # a model compiled by the user's own function
        return 2
    return OPTIMIZERS[opt["name"]].slots(opt)


def fuse_answer(spec: dict, model_unstackable: str | None = None) -> str | None:
    """Why an experiment's repeats cannot be stacked in one fused job, or None if they can.

    `model_unstackable` is a user model's answer (`usermodel.inspect_file`), read from its file
    at plan time without running it.
    """
    model = spec["model"]
    reason = MODEL_KINDS[model["kind"]].unstackable or model_unstackable
    if reason:
        return reason
    opt = spec["optimizer"]
    if opt["name"] in OPTIMIZERS and OPTIMIZERS[opt["name"]].unstackable:
        return OPTIMIZERS[opt["name"]].unstackable
    for key, why in COUPLING_ARGS.items():
        if opt.get(key) is not None:
            return why
    for key, callback in CALLBACKS.items():
        if spec["training"].get(key) is not None and callback.unstackable:
            return callback.unstackable
    return None
