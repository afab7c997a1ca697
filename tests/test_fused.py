"""Fused repeats: R towers as one stacked Keras program give each repeat the numbers of its run
trained alone to within 1e-5 relative (TensorFlow, CPU; the bias gradients' batch sums are added
in another order, so the last bits differ), whatever R; two fused jobs give the same bytes; a
diverging tower does not touch the others; a job cut off mid-training resumes every tower to the
same bytes; each tower's model.keras is the single model."""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_CONFIG, plan_of, prepared_digits

from hpstudy import fused, stacked, training
from hpstudy.ids import derive_seed

OUTPUTS = {"history": "history.csv", "timing": "timing.csv", "metrics": "metrics.json",
           "model": "model.keras"}  # fmt: skip


def experiment(epochs=20, **model):
    cfg = copy.deepcopy(TINY_CONFIG)
    base = cfg["baselines"]["b"]
    base["training"]["epochs"] = epochs
    base["model"] = {"hidden": [24, 12], **model}
    base["optimizer"] = {"name": "adam", "learning_rate": 0.005}
    exp = next(iter(plan_of(cfg).experiments.values()))
    seeds = [derive_seed(exp.spec["training"]["seed"], "repeat", k) for k in range(5)]
    return exp, seeds


def outs(directory):
    return {name: str(directory / file) for name, file in OUTPUTS.items()}


def alone(exp, seed, data, directory, run="r0"):
    training.train_run(exp.spec, data, outs(directory), seed, run, exp.id)
    return directory


def together(exp, seeds, data, root, first=0):
    """Train `seeds` as runs r<first>, r<first + 1>, ... of one fused job."""
    runs = [f"r{k}" for k in range(first, first + len(seeds))]
    dirs = [root / run for run in runs]
    fused.train_repeats(exp.spec, [data] * len(seeds), [outs(d) for d in dirs], seeds, runs, exp.id)
    return dirs


def same_results(a, b) -> bool:
    """history.csv byte for byte, and metrics.json apart from timing and host."""
    if (a / "history.csv").read_bytes() != (b / "history.csv").read_bytes():
        return False
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    drop = ("timing", "host")
    return {k: v for k, v in ma.items() if k not in drop} == {
        k: v for k, v in mb.items() if k not in drop
    }


def close_results(a, b, rtol=1e-5, atol=1e-8) -> bool:
    """history.csv and metrics.json (apart from timing, host and how it was trained, `fused`)
    equal to within `rtol` (or `atol`, for values near 0)."""
    ha, hb = (pd.read_csv(d / "history.csv") for d in (a, b))
    if list(ha.columns) != list(hb.columns) or len(ha) != len(hb):
        return False
    if not np.allclose(ha.to_numpy(), hb.to_numpy(), rtol=rtol, atol=atol, equal_nan=True):
        return False
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    job = {"timing", "host", "fused"}
    keys = set(ma) - job
    if keys != set(mb) - job:
        return False
    for key in keys:
        x, y = ma[key], mb[key]
        numbers = isinstance(x, float) and isinstance(y, float)
        if not (math.isclose(x, y, rel_tol=rtol, abs_tol=atol) if numbers else x == y):
            return False
    return True


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    exp, _ = experiment()
    return prepared_digits(tmp_path_factory.mktemp("fused-data"), exp.spec["data"])


def test_each_tower_equals_its_run_trained_alone_and_does_not_depend_on_r(data, tmp_path):
    exp, seeds = experiment(epochs=20)
    three = together(exp, seeds[:3], data, tmp_path / "three")
    one = together(exp, seeds[1:2], data, tmp_path / "one", first=1)  # r1 in a job of one
    five = together(exp, seeds, data, tmp_path / "five")
    for k in range(3):
        ref = alone(exp, seeds[k], data, tmp_path / f"alone{k}", f"r{k}")
        assert close_results(ref, three[k]), k
        assert close_results(three[k], five[k]), k
    assert close_results(one[0], three[1])
    metrics = json.loads((three[0] / "metrics.json").read_text())
    assert metrics["timing"]["fused_repeats"] == 3 and metrics["status"] == "ok"
    for run in three:  # every tower's timing.csv: one line per epoch, the fused job's epochs
        assert len((run / "timing.csv").read_text().splitlines()) == 1 + 20
    assert not (tmp_path / "three" / "backup-3-repeats").exists()  # removed once finished


def test_two_fused_jobs_of_one_experiment_give_the_same_bytes(data, tmp_path):
    exp, seeds = experiment(epochs=8, dropout={"rate": 0.3}, regularizer={"l2": 0.01})
    first = together(exp, seeds[:3], data, tmp_path / "first")
    second = together(exp, seeds[:3], data, tmp_path / "second")
    for a, b in zip(first, second):
        assert same_results(a, b)


def test_dropout_towers_equal_their_runs_alone_and_five_towers_give_the_same(data, tmp_path):
    exp, seeds = experiment(epochs=6, dropout={"rate": 0.3})
    five = together(exp, seeds, data, tmp_path / "five")
    three = together(exp, seeds[:3], data, tmp_path / "three")
    for k in (0, 2):
        assert close_results(alone(exp, seeds[k], data, tmp_path / f"alone{k}", f"r{k}"), five[k])
        assert close_results(three[k], five[k])


def test_regression_wide_and_deep_with_penalties_equals_its_runs_alone(tmp_path):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"] = {"d": {"source": "diabetes"}}
    base = cfg["baselines"]["b"]
    base["training"] = {"epochs": 12, "batch_size": 32}
    penalty = {"l1": 0.001, "l2": 0.01, "layers": "all", "bias": True}
    base["model"] = {"kind": "wide_deep", "hidden": [16, 8], "regularizer": penalty}
    base["optimizer"] = {"name": "rmsprop", "learning_rate": 0.003, "momentum": 0.5}
    exp = next(iter(plan_of(cfg).experiments.values()))
    assert exp.spec["data"]["task"] == "regression"
    seeds = [derive_seed(exp.spec["training"]["seed"], "repeat", k) for k in range(3)]
    data = prepared_digits(tmp_path / "data", exp.spec["data"], source="diabetes")
    dirs = together(exp, seeds, data, tmp_path / "fused")
    for k in range(3):
        ref = alone(exp, seeds[k], data, tmp_path / f"alone{k}", f"r{k}")
        assert close_results(ref, dirs[k]), k
    history = pd.read_csv(dirs[2] / "history.csv")
    assert {"loss", "mse", "mae", "rmse", "val_rmse"} <= set(history.columns)
    assert (history["loss"] > history["mse"]).all()  # the penalties are in the loss


def test_a_diverging_tower_is_recorded_and_the_others_train_unharmed(data, tmp_path, monkeypatch):
    exp, seeds = experiment(epochs=5)
    build = training.build_compiled

    def poisoned(spec, info, seed, sample=None):  # repeat 1 starts from NaN: diverges at epoch 1
        model = build(spec, info, seed, sample)
        if seed == seeds[1]:
            weights = model.get_weights()
            weights[-1][:] = math.nan  # the output bias: ReLU would squash a NaN before it
            model.set_weights(weights)
        return model

    monkeypatch.setattr(fused, "build_compiled", poisoned)
    dirs = together(exp, seeds[:3], data, tmp_path / "fused")
    bad = json.loads((dirs[1] / "metrics.json").read_text())
    assert bad["status"] == "diverged" and bad["diverged_epoch"] == 1
    assert bad["epochs_run"] == 1 and bad["test_accuracy"] is None
    for k in (0, 2):
        assert close_results(alone(exp, seeds[k], data, tmp_path / f"alone{k}", f"r{k}"), dirs[k])


def test_a_job_cut_off_mid_training_resumes_every_tower_to_the_same_bytes(
    data, tmp_path, monkeypatch
):
    exp, seeds = experiment(epochs=6, dropout={"rate": 0.2})
    whole = together(exp, seeds[:2], data, tmp_path / "whole")
    epoch_end = fused.FusedRecorder.on_epoch_end

    def killed_after_epoch_3(self, epoch, logs=None):
        epoch_end(self, epoch, logs)
        if epoch == 3:  # before this epoch's backup: the job resumes from epoch 3's end
            raise KeyboardInterrupt("killed")

    cut = tmp_path / "cut"
    monkeypatch.setattr(fused.FusedRecorder, "on_epoch_end", killed_after_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        together(exp, seeds[:2], data, cut)
    assert (cut / "backup-2-repeats" / "state.npz").exists()
    assert not (cut / "r0" / "metrics.json").exists()
    monkeypatch.setattr(fused.FusedRecorder, "on_epoch_end", epoch_end)
    resumed = together(exp, seeds[:2], data, cut)
    for a, b in zip(whole, resumed):
        assert same_results(a, b)


def test_the_towers_are_one_set_of_weights_with_a_repeat_axis(data):
    exp, seeds = experiment(dropout={"rate": 0.3})
    arrays, info = training.load_inputs(exp.spec["data"], data, None)
    towers = [training.build_compiled(exp.spec, info, seed) for seed in seeds]
    model = stacked.StackedModel(towers, "classification")
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    sizes = [info["input_shape"][0], 24, 12, info["n_classes"]]
    kernels = [(5, a, b) for a, b in zip(sizes, sizes[1:])]
    assert shapes == [s for k in kernels for s in (k, (5, k[2]))]  # one kernel, one bias a layer
    first = towers[3].layers[2].kernel  # tower 3's first Dense layer, as its seed built it
    assert np.array_equal(np.asarray(model.trainable_variables[0])[3], np.asarray(first))


def test_a_model_with_a_layer_it_cannot_stack_is_refused_naming_the_layer():
    import keras

    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    tower = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(conv)))
    with pytest.raises(stacked.Unstackable, match=r"Conv2D layer \('conv'"):
        stacked.StackedModel([tower, tower], "classification")


def test_a_towers_model_keras_is_the_single_model(data, tmp_path):
    exp, seeds = experiment(epochs=2)
    dirs = together(exp, seeds[:2], data, tmp_path)
    model = training.load_model(dirs[1] / "model.keras")
    assert model.name == "mlp" and len(model.inputs) == 1 and len(model.outputs) == 1
    metrics = json.loads((dirs[1] / "metrics.json").read_text())
    assert model.count_params() == metrics["params"]
    # The towers' test metrics come from one evaluation of the stacked model: the saved single
    # model gives the same numbers (to the last bits of the batch sums).
    arrays, _ = training.load_inputs(exp.spec["data"], data, None)
    test = training.evaluate_test(model, arrays, exp.spec["training"])
    assert math.isclose(test["loss"], metrics["test_loss"], rel_tol=1e-5)
    assert math.isclose(test["accuracy"], metrics["test_accuracy"], rel_tol=1e-5)


JAX_TOWERS = r"""
import sys, tempfile
from pathlib import Path
import numpy as np
from hpstudy import devices
devices.setup(threads=1, backend="jax", gpus=0)
import keras
from hpstudy import fused, prepare
rng = np.random.default_rng(0)
x = rng.normal(size=(700, 16)).astype("float32")
y = rng.integers(0, 4, size=700).astype("int64")
arrays = {"x_train": x[:500], "y_train": y[:500], "x_val": x[500:600], "y_val": y[500:600],
          "x_test": x[600:], "y_test": y[600:]}
root = Path(tempfile.mkdtemp())
prepare.save(arrays, root / "data.npz", {"input_shape": [16], "n_classes": 4})
spec = {"data": {"task": "classification"},
        "model": {"kind": "mlp", "hidden": [12], "activation": "relu", "initializer": "he_normal",
                  "output_initializer": "glorot_uniform",
                  "regularizer": {"l1": 0.0, "l2": 0.001, "layers": "hidden", "bias": False},
                  "dropout": {"rate": 0.2, "layers": "all"}},
        "optimizer": {"name": "adam", "learning_rate": 0.003, "beta_1": 0.9, "beta_2": 0.999},
        "training": {"epochs": 3, "batch_size": 64, "shuffle": True, "seed": 42,
                     "steps_per_execution": 1}}
names = (("history", "csv"), ("timing", "csv"), ("metrics", "json"), ("model", "keras"))
def outs(d):
    return {k: str(d / f"{k}.{e}") for k, e in names}
fused.train_repeats(spec, [root / "data.npz"] * 3, [outs(root / "a" / f"r{i}") for i in range(3)],
                    [1, 2, 3], ["r0", "r1", "r2"], "e")
fused.train_repeats(spec, [root / "data.npz"], [outs(root / "b" / "r0")], [2], ["r0"], "e")
a, b = (np.loadtxt(root / d / "history.csv", delimiter=",", skiprows=1) for d in ("a/r1", "b/r0"))
assert keras.backend.backend() == "jax"
assert a.shape == (3, 6) and np.allclose(a, b, rtol=1e-5, atol=1e-8), (a, b)
print("ok", len(a))
"""


@pytest.mark.e2e
def test_on_jax_a_tower_does_not_depend_on_how_many_it_is_fused_with():
    pytest.importorskip("jax")
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", JAX_TOWERS], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok 3")  # three epochs


FUSED_DRIVER = """
import json, sys
from hpstudy import devices
devices.setup(threads=1)
from hpstudy import fused
fused.train_repeats(**json.loads(sys.argv[1]))
"""


@pytest.mark.e2e
def test_a_fused_job_killed_with_sigkill_resumes_every_tower_to_the_same_bytes(data, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    exp, seeds = experiment(epochs=30, dropout={"rate": 0.3})

    def job(root):
        return {"spec": exp.spec, "data_paths": [str(data)] * 2, "seeds": seeds[:2],
                "outs": [outs(root / f"r{k}") for k in range(2)], "runs": ["r0", "r1"],
                "experiment": exp.id}  # fmt: skip

    def start(root):
        return subprocess.Popen([sys.executable, "-c", FUSED_DRIVER, json.dumps(job(root))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def backup_epoch(root):
        try:
            with np.load(root / "backup-2-repeats" / "state.npz", allow_pickle=False) as npz:
                return json.loads(npz["meta"].tobytes().decode())["epoch"]
        except Exception:  # not written yet, or being replaced
            return 0

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert start(whole).wait(timeout=600) == 0
    proc, deadline = start(cut), time.monotonic() + 300
    while backup_epoch(cut) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = backup_epoch(cut)
    assert 3 <= killed_at < 30 and not (cut / "r0" / "metrics.json").exists()
    assert start(cut).wait(timeout=600) == 0
    for k in range(2):
        assert same_results(whole / f"r{k}", cut / f"r{k}"), k
