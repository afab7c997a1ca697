"""The model builder: layer sizes, activations, initializers, penalties, dropout placement, seed 002."""

import json
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

from hpstudy import models  # noqa: E402
from hpstudy.config import validate  # noqa: E402
from hpstudy.plan import make_plan  # noqa: E402

MAIN = [32, 16, 64, 32, 16, 64]
ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "history": "history.csv",
    "timing": "timing.csv",
    "metrics": "metrics.json",
    "model": "model.keras",
}


def model_spec(**overrides):
    """A resolved `model` section with the schema's defaults and `overrides`."""
    cfg = {
        "datasets": {"d": {"source": "digits"}},
        "baselines": {"b": {"dataset": "d", "model": overrides}},
        "studies": {"s": {"kind": "grid", "baseline": "b", "grid": {"training.epochs": [1]}}},
    }
    plan = make_plan(validate(cfg))
    return next(iter(plan.experiments.values())).spec["model"]


def dense_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def seed002_mlp_main(input_shape=(32, 32, 3), num_classes=10):
    """Seed 002's `MLP_main`, as the notebook writes it (the truncated `he_r...` is he_normal)."""
    from keras.layers import Dense, Flatten, Input

    inp = Input(shape=input_shape)
    x = Flatten()(inp)
    for units in MAIN:
        x = Dense(units, activation="relu", kernel_initializer="he_normal")(x)
    out = Dense(num_classes, activation="softmax")(x)
    return keras.Model(inp, out)


def describe(layer):
    cfg = layer.get_config()
    return (
        type(layer).__name__,
        cfg.get("units"),
        cfg.get("activation"),
        (cfg.get("kernel_initializer") or {}).get("class_name"),
        cfg.get("kernel_regularizer"),
        cfg.get("bias_regularizer"),
        cfg.get("rate"),
    )


def test_seed002_main_matches_the_notebook_builder_layer_by_layer():
    ours = models.build_model(model_spec(hidden=MAIN), (32, 32, 3), 10, "classification")
    theirs = seed002_mlp_main()
    assert [describe(layer) for layer in ours.layers] == [
        describe(layer) for layer in theirs.layers
    ]
    assert ours.count_params() == theirs.count_params()


def test_hidden_sizes_activation_and_initializer():
    model = models.build_model(
        model_spec(hidden=[7, 5], activation="tanh", initializer="glorot_uniform"),
        (4,),
        3,
        "classification",
    )
    dense = dense_layers(model)
    assert [d.units for d in dense] == [7, 5, 3]
    assert [d.get_config()["activation"] for d in dense] == ["tanh", "tanh", "softmax"]
    assert dense[0].get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"


def test_linear_activation_means_no_activation():
    dense = dense_layers(
        models.build_model(model_spec(activation="linear"), (4,), 3, "classification")
    )
    assert dense[0].get_config()["activation"] == "linear"


@pytest.mark.parametrize(
    "layers, hidden_penalised, output_penalised",
    [("hidden", True, False), ("output", False, True), ("all", True, True)],
)
def test_penalty_placement(layers, hidden_penalised, output_penalised):
    spec = model_spec(hidden=[8, 8], regularizer={"l2": 0.01, "layers": layers, "bias": True})
    dense = dense_layers(models.build_model(spec, (4,), 3, "classification"))
    assert all((d.kernel_regularizer is not None) == hidden_penalised for d in dense[:-1])
    assert (dense[-1].kernel_regularizer is not None) == output_penalised
    assert (dense[-1].bias_regularizer is not None) == output_penalised
    penalised = [d for d in dense if d.kernel_regularizer is not None]
    assert all(isinstance(d.kernel_regularizer, keras.regularizers.L2) for d in penalised)


def test_l1_l2_and_l1l2_classes():
    for reg, cls in [
        ({"l1": 0.001}, keras.regularizers.L1),
        ({"l2": 0.001}, keras.regularizers.L2),
        ({"l1": 0.001, "l2": 0.001}, keras.regularizers.L1L2),
    ]:
        dense = dense_layers(
            models.build_model(model_spec(regularizer=reg), (4,), 3, "classification")
        )
        assert isinstance(dense[0].kernel_regularizer, cls)
        assert dense[0].bias_regularizer is None


@pytest.mark.parametrize(
    "where, expected", [("all", [1, 2, 3, 4, 5, 6]), ("every_other", [1, 3, 5])]
)
def test_dropout_positions(where, expected):
    spec = model_spec(hidden=MAIN, dropout={"rate": 0.2, "layers": where})
    model = models.build_model(spec, (4,), 3, "classification")
    names = [layer.name for layer in model.layers]
    after = [
        int(names[i - 1].split("_")[1]) for i, n in enumerate(names) if n.startswith("dropout")
    ]
    assert after == expected  # each Dropout directly follows hidden layer n
    assert all(
        layer.rate == 0.2 for layer in model.layers if isinstance(layer, keras.layers.Dropout)
    )


def test_regression_head_and_wide_deep_concatenates_the_input():
    spec = model_spec(kind="wide_deep", hidden=[30, 30])
    model = models.build_model(spec, (8,), 1, "regression")
    concat = model.get_layer("wide_deep")
    assert concat.output.shape[-1] == 8 + 30
    assert dense_layers(model)[-1].get_config()["activation"] == "linear"
    head = models.task_head("regression", 1)
    assert head["loss"] == "mse"


def test_optimizers():
    sgd = models.build_optimizer(
        {"name": "sgd", "learning_rate": 0.01, "momentum": 0.45, "nesterov": True}
    )
    assert isinstance(sgd, keras.optimizers.SGD)
    assert float(sgd.learning_rate) == pytest.approx(0.01)
    assert sgd.momentum == 0.45 and sgd.nesterov
    rms = models.build_optimizer(
        {"name": "rmsprop", "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0}
    )
    assert isinstance(rms, keras.optimizers.RMSprop)
    adam = models.build_optimizer(
        {"name": "adam", "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999}
    )
    assert isinstance(adam, keras.optimizers.Adam)


def test_same_spec_and_seed_give_identical_weights():
    spec = model_spec(hidden=[8, 4])
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        weights.append(models.build_model(spec, (4,), 3, "classification").get_weights())
    assert all((a == b).all() for a, b in zip(*weights, strict=True))


@pytest.mark.e2e
def test_seed002_saved_model_keras_is_the_notebook_model(tmp_path):
    """The workflow's own path: seed 002's `main` spec, trained one epoch by train_run on
    CIFAR-shaped stand-in data, saved as model.keras, loaded back (safe mode), layer by layer."""
    import numpy as np

    from hpstudy import prepare, training
    from hpstudy.plan import load_plan

    plan = load_plan([ROOT / "config" / "seed_002.yaml"])
    main = next(v for v in plan.studies["layers"].variants if v.is_reference)
    spec = json.loads(plan.experiments[main.experiment].json)
    spec["training"]["epochs"] = 1
    rng = np.random.default_rng(0)
    canonical = {
        "x_train": rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(120, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(40, dtype=np.uint8) % 10,
    }
    arrays = prepare.prepare(canonical, spec["data"])
    prepare.save(arrays, tmp_path / "data.npz", prepare.describe(arrays, spec["data"]))
    out = {k: str(tmp_path / "r0" / f) for k, f in FILES.items()}
    training.train_run(
        spec, tmp_path / "data.npz", out, seed=42, run="r0", experiment=main.experiment
    )

    saved = training.load_model(out["model"])
    theirs = seed002_mlp_main()
    assert [describe(layer) for layer in saved.layers] == [
        describe(layer) for layer in theirs.layers
    ]
    assert saved.count_params() == theirs.count_params() == 104_298
