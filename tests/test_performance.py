"""The speed levers keep results right: the input pipeline, the backend option, the planner cache."""

import copy

import numpy as np
import pytest
from helpers import plan_of

from hpstudy import devices
from hpstudy.config import ConfigError

BASE = {
    "datasets": {"digits": {"source": "digits"}},
    "baselines": {
        "main": {
            "dataset": "digits",
            "model": {"hidden": [8]},
            "optimizer": {"name": "sgd", "learning_rate": 0.01},
            "training": {"epochs": 3, "batch_size": 4},
        }
    },
    "studies": {
        "lr": {"kind": "ofat", "baseline": "main", "factors": {"optimizer.learning_rate": [0.1]}}
    },
}


def test_keras_backend_is_part_of_every_spec_and_id():
    tf_plan = plan_of(BASE)
    cfg = copy.deepcopy(BASE)
    cfg["keras_backend"] = "jax"
    jax_plan = plan_of(cfg)
    assert {e.spec["keras_backend"] for e in tf_plan.experiments.values()} == {"tensorflow"}
    assert {e.spec["keras_backend"] for e in jax_plan.experiments.values()} == {"jax"}
    assert not set(tf_plan.experiments) & set(jax_plan.experiments)


def test_keras_backend_can_be_a_study_factor_and_is_checked():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["backend"] = {
        "kind": "ofat",
        "baseline": "main",
        "factors": {"keras_backend": ["jax"]},
    }
    study = plan_of(cfg).studies["backend"]
    assert [v.values["keras_backend"] for v in study.variants] == ["tensorflow", "jax"]
    cfg["studies"]["backend"]["factors"]["keras_backend"] = ["jaxx"]
    with pytest.raises(ConfigError, match="keras_backend.*jaxx"):
        plan_of(cfg)
    bad = copy.deepcopy(BASE)
    bad["keras_backend"] = "torch"
    with pytest.raises(ConfigError, match="keras_backend"):
        plan_of(bad)


def test_cached_section_check_reports_every_bad_variant():
    """The validation cache must not hide an error the second time the same value appears."""
    for study in ("a", "b"):  # the same bad section, planned twice, named where it is written
        cfg = copy.deepcopy(BASE)
        cfg["studies"] = {study: {"kind": "ofat", "baseline": "main",
                                  "factors": {"training.batch_size": [0]}}}  # fmt: skip
        with pytest.raises(ConfigError, match=rf"studies\.{study}\b.*training\.batch_size"):
            plan_of(cfg)


def test_jax_gets_one_thread_and_a_node_local_compile_cache(tmp_path):
    env = {"TMPDIR": str(tmp_path)}  # the node-local scratch directory
    devices.setup(threads=1, backend="jax", env=env)
    assert env["KERAS_BACKEND"] == "jax"
    assert "intra_op_parallelism_threads=1" in env["XLA_FLAGS"]
    assert env["JAX_COMPILATION_CACHE_DIR"].startswith(f"{tmp_path}/hpstudy-jax-cache-")
    env = {}
    devices.setup(threads=2, backend="tensorflow", env=env)
    assert "XLA_FLAGS" not in env and "JAX_COMPILATION_CACHE_DIR" not in env
    assert env["TF_NUM_INTRAOP_THREADS"] == "2"


def test_execution_steps_never_cross_an_epoch():
    from hpstudy.training import execution_steps

    assert execution_steps(1, 34) == 1
    assert execution_steps(8, 34) == 2  # 34 = 2 x 17
    assert execution_steps(32, 5) == 5
    assert execution_steps(4, 9) == 3


def test_tensorflow_pipeline_order_depends_only_on_seed_and_epoch():
    """A run resumed at epoch 2 sees the batches an uninterrupted run sees at epoch 2."""
    import keras

    from hpstudy.training import fit_data

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the tf.data pipeline is the TensorFlow backend's")
    rows = 10
    arrays = {
        "x_train": np.arange(rows * 2, dtype=np.float32).reshape(rows, 2),
        "y_train": np.arange(rows, dtype=np.int64),
        "x_val": np.zeros((3, 2), np.float32),
        "y_val": np.zeros(3, np.int64),
    }
    training = {"batch_size": 4, "epochs": 4, "shuffle": True, "steps_per_execution": 1}
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(loss="sparse_categorical_crossentropy")

    def epochs(seed, initial_epoch):
        data = fit_data(model, arrays, training, seed, initial_epoch)
        assert data["steps_per_epoch"] == 3
        labels = [int(v) for _, y in data["x"] for v in y.numpy()]
        return [labels[i : i + rows] for i in range(0, len(labels), rows)]

    full = epochs(seed=7, initial_epoch=0)
    assert len(full) == 4
    assert all(sorted(e) == list(range(rows)) for e in full)  # each epoch: every row once
    assert len({tuple(e) for e in full}) == 4  # reshuffled every epoch
    assert epochs(seed=7, initial_epoch=2) == full[2:]
    assert epochs(seed=8, initial_epoch=0) != full
