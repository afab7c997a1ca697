"""Your own model (`model: {kind: python, file, function, hyperparameters}`), every Keras
optimizer and schedule, early stopping and ReduceLROnPlateau: planned without running the file,
checked before epoch 1, resumable to the same bytes, fused per tower."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT, TINY_CONFIG, plan_of, prepared_digits

from hpstudy import fused, models, training, usermodel
from hpstudy.config import ConfigError
from hpstudy.ids import derive_seed

MODELS = ROOT / "examples" / "models"
OUTPUTS = {"history": "history.csv", "timing": "timing.csv", "metrics": "metrics.json",
           "model": "model.keras"}  # fmt: skip
SEED_002_MAIN = {"hidden": [24, 12], "activation": "relu", "initializer": "he_normal",
                 "output_initializer": "glorot_uniform"}  # fmt: skip


def config(model: dict | None = None, optimizer=None, training_extra=None, epochs=6) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    base = cfg["baselines"]["b"]
    base["model"] = model or {"hidden": [24, 12]}
    base["optimizer"] = optimizer or {"name": "sgd", "learning_rate": 0.05, "momentum": 0.45}
    base["training"] = {"epochs": epochs, "batch_size": 32, **(training_extra or {})}
    cfg["studies"] = {"s": {"kind": "ofat", "baseline": "b", "factors": {"training.seed": [7]}}}
    return cfg


def user(file="seed_002_main.py", **hyperparameters) -> dict:
    return {"kind": "python", "file": str(MODELS / file), "hyperparameters": hyperparameters}


def reference(cfg: dict):
    plan = plan_of(cfg)
    exp = next(e for e in plan.experiments.values() if e.spec["training"]["seed"] == 42)
    seeds = [derive_seed(42, "repeat", k) for k in range(3)]
    return exp, seeds


def outs(directory: Path) -> dict:
    return {name: str(directory / file) for name, file in OUTPUTS.items()}


def alone(exp, seed, data, directory, run="r0") -> Path:
    training.train_run(exp.spec, data, outs(directory), seed, run, exp.id)
    return directory


def together(exp, seeds, data, root) -> list:
    dirs = [root / f"r{k}" for k in range(len(seeds))]
    runs = [d.name for d in dirs]
    fused.train_repeats(exp.spec, [data] * len(seeds), [outs(d) for d in dirs], seeds, runs, exp.id)
    return dirs


def history(directory: Path) -> bytes:
    return (directory / "history.csv").read_bytes()


def metrics(directory: Path) -> dict:
    return json.loads((directory / "metrics.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    exp, _ = reference(config())
    return prepared_digits(tmp_path_factory.mktemp("user-data"), exp.spec["data"])


# Planning: ids, checks, no execution ---------------------------------------------------------


def test_a_user_model_is_planned_from_its_bytes_without_running_it(tmp_path):
    model_file = tmp_path / "m.py"
    model_file.write_text(
        "raise SystemExit('planning ran the model file')\n"
        "def build_model(n_hidden=1, n_neurons=30, *, input_shape, n_outputs):\n"
        "    import keras\n    return keras.Sequential([keras.layers.Dense(n_outputs)])\n"
    )
    cfg = config(model={"kind": "python", "file": str(model_file),
                        "hyperparameters": {"n_hidden": 1, "n_neurons": 30}})  # fmt: skip
    cfg["studies"] = {
        "g": {
            "kind": "grid",
            "baseline": "b",
            "grid": {
                "model.hyperparameters.n_hidden": [1, 2],
                "model.hyperparameters.n_neurons": [10, 30],
            },
        }
    }
    plan = plan_of(cfg)
    assert len(plan.experiments) == 4
    specs = [e.spec for e in plan.experiments.values()]
    assert {(s["model"]["hyperparameters"]["n_hidden"], s["model"]["hyperparameters"]["n_neurons"])
            for s in specs} == {(1, 10), (1, 30), (2, 10), (2, 30)}  # fmt: skip
    assert all(str(model_file) not in json.dumps(s) for s in specs)  # bytes, not the path
    ids = set(plan.experiments)
    os.utime(model_file, (1, 1))  # touched: the same bytes, the same experiments
    assert set(plan_of(cfg).experiments) == ids
    model_file.write_text(model_file.read_text() + "# edited\n")
    assert not set(plan_of(cfg).experiments) & ids  # edited: every experiment is new
    assert "sys" not in json.dumps(specs)


@pytest.mark.parametrize(
    "edit, where, expected",
    [
        (lambda m: m["hyperparameters"].update(n_layers=2), "model.hyperparameters.n_layers",
         "a parameter of build_model()"),
        (lambda m: m.update(file="nowhere.py"), "baselines.b.model.file", "a Python file"),
        (lambda m: m.update(function="get_model"), "baselines.b.model.function",
         "defines no top-level function 'get_model'"),
        (lambda m: m["hyperparameters"].update(input_shape=[8]),
         "model.hyperparameters.input_shape", "the job passes those itself"),
    ],
)  # fmt: skip
def test_a_bad_user_model_is_refused_before_any_job(edit, where, expected):
    model = user("two_factor_mlp.py", n_hidden=1)
    edit(model)
    with pytest.raises(ConfigError) as err:
        plan_of(config(model=model))
    assert where in str(err.value) and expected in str(err.value), str(err.value)


def test_a_study_key_the_baseline_does_not_declare_is_refused():
    cfg = config(model=user("two_factor_mlp.py", n_hidden=1))
    cfg["studies"]["s"]["factors"] = {"model.hyperparameters.n_neurons": [10]}
    with pytest.raises(ConfigError, match="a hyperparameter the baseline declares"):
        plan_of(cfg)


def test_a_compiled_model_keeps_its_optimizer_and_refuses_the_configs():
    model = user("seed_000_get_model.py", lambda_l2=0.0)
    model["function"] = "get_model"
    cfg = config(model=model)
    with pytest.raises(ConfigError, match="compiles its own model"):
        plan_of(cfg)  # the config sets an optimizer
    del cfg["baselines"]["b"]["optimizer"]
    plan = plan_of(cfg)
    assert {e.spec["optimizer"]["name"] for e in plan.experiments.values()} == {"compiled_by_model"}
    assert "compiles its own model" in next(
        iter(plan.not_fused().values()), "compiles its own model"
    )
    cfg["studies"]["s"]["factors"] = {"optimizer.learning_rate": [0.1]}
    with pytest.raises(ConfigError, match="no optimizer key"):
        plan_of(cfg)


@pytest.mark.parametrize(
    "optimizer, message",
    [
        ({"name": "adam", "momentum": 0.9}, "optimizer 'adam' takes"),
        ({"name": "adamw", "weight_decays": 0.1}, "it has no 'weight_decays'"),
        ({"name": "sgd", "nesterov": "yes"}, "nesterov"),
        ({"name": "adam", "schedule": {"name": "cosine_decay"}}, "requires: decay_steps"),
        ({"name": "adam", "schedule": {"name": "cosine_decay", "decay_steps": 10, "alphas": 1}},
         "it has no 'alphas'"),
    ],
)  # fmt: skip
def test_bad_optimizer_keys_name_the_key_and_the_optimizer(optimizer, message):
    with pytest.raises(ConfigError) as err:
        plan_of(config(optimizer={"learning_rate": 0.01, **optimizer}))
    assert "baselines.b.optimizer" in str(err.value) and message in str(err.value), str(err.value)


def test_new_optimizer_keys_enter_the_id_only_when_set():
    plain = plan_of(config(optimizer={"name": "adam", "learning_rate": 0.01}))
    default = plan_of(config(optimizer={"name": "adam", "learning_rate": 0.01, "epsilon": 1e-7}))
    other = plan_of(config(optimizer={"name": "adam", "learning_rate": 0.01, "epsilon": 1e-6}))
    assert set(plain.experiments) == set(default.experiments)
    assert not set(plain.experiments) & set(other.experiments)


def test_the_plan_says_which_experiments_are_not_fused_and_why():
    cfg = config(model=user("small_cnn.py"), optimizer={"name": "adam", "learning_rate": 0.01})
    cfg["repeats"] = 3
    plan = plan_of(cfg)
    assert plan.fused_repeats() == {}
    assert all("Conv2D" in why for why in plan.not_fused().values())
    cfg = config(training_extra={"reduce_lr_on_plateau": {"patience": 2}})
    cfg["repeats"] = 3
    plan = plan_of(cfg)
    assert plan.fused_repeats() == {} and len(plan.not_fused()) == 2
    cfg = config(model=user(), training_extra={"early_stopping": {"patience": 2}})
    cfg["repeats"] = 3
    assert len(plan_of(cfg).fused_repeats()) == 2  # Dense layers and early stopping: stacked


# Training: the plug-in path is exact ----------------------------------------------------------


def test_seed_002_main_as_a_user_function_gives_the_built_in_bytes(data, tmp_path):
    built_in, seeds = reference(config(model=SEED_002_MAIN))
    mine, _ = reference(config(model=user(hidden=[24, 12], activation="relu")))
    assert built_in.id != mine.id
    a = alone(built_in, seeds[0], data, tmp_path / "built_in")
    b = alone(mine, seeds[0], data, tmp_path / "user")
    assert history(a) == history(b)
    fused_built_in = together(built_in, seeds, data, tmp_path / "fused_built_in")
    fused_user = together(mine, seeds, data, tmp_path / "fused_user")
    for x, y in zip(fused_built_in, fused_user):
        assert history(x) == history(y)
        assert metrics(y)["timing"]["fused_repeats"] == 3


def test_a_logits_cnn_trains_and_its_model_file_is_an_input(data, tmp_path):
    exp, seeds = reference(config(model=user("small_cnn.py", filters=4, dense=8),
                                  optimizer={"name": "adam", "learning_rate": 0.01}, epochs=2))  # fmt: skip
    run = alone(exp, seeds[0], data, tmp_path / "cnn")
    m = metrics(run)
    assert m["status"] == "ok" and m["test_accuracy"] is not None
    model = training.load_model(run / "model.keras")
    assert isinstance(model.loss, type(models.keras.losses.SparseCategoricalCrossentropy()))
    # The fused job of an unstackable model trains its repeats one after another.
    dirs = together(exp, seeds[:2], data, tmp_path / "fused")
    assert metrics(dirs[0])["fused"]["stacked"] is False
    assert history(dirs[0]) == history(run)


def test_a_compiled_user_model_trains_with_its_own_optimizer(data, tmp_path):
    model = user("seed_000_get_model.py", lambda_l2=0.001, learning_rate=0.002)
    model["function"] = "get_model"
    cfg = config(model=model, epochs=2)
    del cfg["baselines"]["b"]["optimizer"]
    exp, seeds = reference(cfg)
    run = alone(exp, seeds[0], data, tmp_path / "compiled")
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[1].split(",")[-1] == "0.0020000000949949026"  # Adam(0.002), as float32
    assert metrics(run)["learning_rate"]["source"] == "model file"


def test_a_wrong_output_shape_is_refused_before_epoch_1(data, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import keras\n"
        "def build_model(*, input_shape):\n"
        "    i = keras.Input(input_shape)\n"
        "    return keras.Model(i, keras.layers.Dense(3, activation='softmax')(i))\n"
    )
    exp, seeds = reference(config(model={"kind": "python", "file": str(bad)}))
    with pytest.raises(models.UserModelError, match=r"shape \(batch, 10\)"):
        alone(exp, seeds[0], data, tmp_path / "bad")
    assert not (tmp_path / "bad" / "history.csv").exists()


def test_a_model_file_edited_after_planning_is_refused(data, tmp_path):
    file = tmp_path / "m.py"
    shutil.copy(MODELS / "seed_002_main.py", file)
    exp, seeds = reference(config(model={"kind": "python", "file": str(file)}))
    file.write_text(file.read_text() + "\n# changed\n")
    usermodel.PATHS.clear()
    usermodel.register([file])
    with pytest.raises(usermodel.ModelFileError, match="changed after planning"):
        alone(exp, seeds[0], data, tmp_path / "run")


# Optimizers, schedules, callbacks ---------------------------------------------------------------


def test_adamw_with_a_warm_up_schedule_records_its_rates(data, tmp_path):
    schedule = {"name": "cosine_decay", "decay_steps": 100, "warmup_target": 0.02,
                "warmup_steps": 5}  # fmt: skip
    exp, seeds = reference(config(optimizer={"name": "adamw", "learning_rate": 0.001,
                                             "weight_decay": 0.01, "schedule": schedule}))  # fmt: skip
    run = alone(exp, seeds[0], data, tmp_path / "adamw")
    rates = [float(r.split(",")[-1]) for r in (run / "history.csv").read_text().splitlines()[1:]]
    # Each epoch's rate is the schedule's at its end: warmed up to 0.02, then decaying.
    assert len(set(rates)) == len(rates) and max(rates) <= 0.02 and rates == sorted(rates)[::-1]


def cut_after(monkeypatch, cls, epoch_to_kill):
    original = cls.on_epoch_end

    def killed(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == epoch_to_kill:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(cls, "on_epoch_end", killed)
    return original


@pytest.mark.parametrize(
    "extra",
    [
        {"early_stopping": {"patience": 1, "restore_best_weights": True, "min_delta": 0.01}},
        {"reduce_lr_on_plateau": {"patience": 1, "factor": 0.5, "min_delta": 0.01}},
    ],
)
def test_a_run_with_a_stateful_callback_resumes_to_the_same_bytes(
    data, tmp_path, monkeypatch, extra
):
    exp, seeds = reference(config(training_extra=extra, epochs=12,
                                  optimizer={"name": "sgd", "learning_rate": 0.3}))  # fmt: skip
    whole = alone(exp, seeds[0], data, tmp_path / "whole")
    key = next(iter(extra))
    summary = metrics(whole)[key]
    if key == "early_stopping":
        assert metrics(whole)["stopped_epoch"] is not None
        kill_at = metrics(whole)["stopped_epoch"] - 2
    else:
        assert summary["reductions"], summary
        kill_at = summary["reductions"][0][0]  # just after the first reduction
    original = cut_after(monkeypatch, training.Recorder, kill_at)
    with pytest.raises(KeyboardInterrupt):
        alone(exp, seeds[0], data, tmp_path / "cut")
    monkeypatch.setattr(training.Recorder, "on_epoch_end", original)
    resumed = alone(exp, seeds[0], data, tmp_path / "cut")
    assert history(whole) == history(resumed)
    drop = ("timing", "host")
    assert {k: v for k, v in metrics(whole).items() if k not in drop} == {
        k: v for k, v in metrics(resumed).items() if k not in drop
    }
    assert (whole / "model.keras").exists()


def test_early_stopping_in_a_fused_job_stops_one_tower_while_the_others_go_on(
    data, tmp_path, monkeypatch
):
    extra = {"early_stopping": {"patience": 1, "min_delta": 0.02, "restore_best_weights": True}}
    exp, seeds = reference(config(training_extra=extra, epochs=14,
                                  optimizer={"name": "sgd", "learning_rate": 0.3}))  # fmt: skip
    dirs = together(exp, seeds, data, tmp_path / "fused")
    stopped = [metrics(d)["stopped_epoch"] for d in dirs]
    rows = [len((d / "history.csv").read_text().splitlines()) - 1 for d in dirs]
    assert rows == [s or 14 for s in stopped]  # each history ends where its tower stopped
    assert len(set(rows)) > 1, rows  # the towers stopped at different epochs
    for k, d in enumerate(dirs):  # each tower is its run trained alone, stopped alone
        single = alone(exp, seeds[k], data, tmp_path / f"alone{k}", f"r{k}")
        assert metrics(single)["stopped_epoch"] == stopped[k]
        assert metrics(single)["early_stopping"] == metrics(d)["early_stopping"] or (
            abs(metrics(single)["test_loss"] - metrics(d)["test_loss"]) < 1e-4
        )
    # Killed once a tower has stopped (its frozen and best weights are in the backup), the
    # fused job resumes every tower to the same bytes.
    original = cut_after(monkeypatch, fused.FusedRecorder, sorted(rows)[1] - 1)
    with pytest.raises(KeyboardInterrupt):
        together(exp, seeds, data, tmp_path / "cut")
    monkeypatch.setattr(fused.FusedRecorder, "on_epoch_end", original)
    for a, b in zip(dirs, together(exp, seeds, data, tmp_path / "cut")):
        assert history(a) == history(b)
        assert metrics(a)["early_stopping"] == metrics(b)["early_stopping"]


# End to end: a CSV of one's own and a model file of one's own, through Snakemake ------------


@pytest.mark.e2e
def test_a_grid_over_a_model_files_hyperparameters_on_a_csv_runs_end_to_end(
    tmp_path, run_snakemake
):
    import pandas as pd
    import yaml
    from helpers import planned_jobs
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    (tmp_path / "models").mkdir()
    shutil.copy(MODELS / "two_factor_mlp.py", tmp_path / "models" / "mine.py")
    cfg = {
        "datasets": {"d": {"source": "file", "path": "cancer.csv", "target": "diagnosis",
                           "task": "classification"}},
        "baselines": {"b": {
            "dataset": "d",
            "model": {"kind": "python", "file": "models/mine.py",
                      "hyperparameters": {"n_hidden": 1, "n_neurons": 8}},
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "training": {"epochs": 4, "batch_size": 64,
                         "early_stopping": {"patience": 2, "restore_best_weights": True}},
        }},
        "repeats": 2,
        "studies": {"g": {"kind": "grid", "baseline": "b", "grid": {
            "model.hyperparameters.n_hidden": [1, 2],
            "model.hyperparameters.n_neurons": [4, 8]}}},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "--cores", "2")
    html = (tmp_path / "results" / "report.html").read_text()
    assert "ANOVA" in html and "n_hidden × " in html, "no interaction row in the report"
    assert "Classes (2, as the data file names them" in html and "benign, malignant" in html
    anova = pd.read_csv(next((tmp_path / "results" / "studies").glob("*/anova.csv")))
    terms = set(anova["term"].dropna())
    assert {"n_hidden", "n_neurons"} <= {t.rsplit(".", 1)[-1] for t in terms}, terms
    assert any(":" in t or "×" in t for t in terms), terms
    runs = list((tmp_path / "results" / "runs").glob("*/r*/metrics.json"))
    assert len(runs) == 8 and all(json.loads(p.read_text())["timing"].get("fused_repeats") == 2
                                  for p in runs)  # fmt: skip
    os.utime(tmp_path / "models" / "mine.py")  # touched: nothing to do
    assert planned_jobs(run_snakemake(tmp_path, "-n")) == {}
    with open(tmp_path / "models" / "mine.py", "a") as f:
        f.write("\n# a comment is an edit: its bytes changed\n")
    jobs = planned_jobs(run_snakemake(tmp_path, "-n"))
    assert jobs.get("train_2_repeats") == 4 and "prepare" not in jobs and "train" not in jobs
