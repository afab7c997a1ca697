"""`repeats_vary`: repeats that also draw their own train/validation split, the test rows fixed.

Planning (ids, prepared splits, rejected configs), preparation (which rows move) and one small
run of the real `snakemake` command.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, plan_of, run_snakemake
from sklearn.model_selection import train_test_split

from hpstudy import prepare
from hpstudy.config import ConfigError
from hpstudy.ids import derive_seed
from hpstudy.plan import load_plan, prep_id

VARY = ["init_and_order", "split"]


@pytest.fixture
def config(tiny_config) -> dict:
    """The tiny config (baseline + one learning rate) with 3 repeats."""
    tiny_config["repeats"] = 3
    return tiny_config


def specs(plan) -> dict:
    return {exp_id: exp.spec for exp_id, exp in plan.experiments.items()}


# Planning -----------------------------------------------------------------------------------


def test_default_keeps_ids_preps_and_specs(config):
    absent = plan_of(config)
    explicit = plan_of(dict(config, repeats_vary=["init_and_order"]))
    assert specs(absent) == specs(explicit)
    assert set(absent.preps) == set(explicit.preps)
    assert not any("repeats_vary" in spec for spec in specs(absent).values())
    assert all("validation_seed" not in d["split"] for _, d in absent.preps.values())
    assert all(run.prep is None and run.split_seed == 42 for run in absent.runs.values())


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_plan_as_before(path):
    """None sets repeats_vary: their specs, prepared splits and runs are those of before."""
    plan = load_plan([str(path)])
    assert not any("repeats_vary" in spec for spec in specs(plan).values())
    assert all("validation_seed" not in data["split"] for _, data in plan.preps.values())
    assert all(run.prep is None for run in plan.runs.values())


def test_split_changes_every_id_it_applies_to_and_only_those(config):
    fixed = plan_of(config)
    varied = plan_of(dict(config, repeats_vary=["split", "init_and_order"]))  # order is free
    assert not set(fixed.experiments) & set(varied.experiments)
    assert all(spec["repeats_vary"] == VARY for spec in specs(varied).values())
    for spec in specs(varied).values():  # the spec is the fixed one plus the key
        rest = {k: v for k, v in spec.items() if k != "repeats_vary"}
        assert rest in specs(fixed).values()
    # A study's own key overrides the top level, in both directions.
    config["studies"]["other"] = {
        "kind": "ofat",
        "baseline": "b",
        "repeats_vary": VARY,
        "factors": {"training.batch_size": [16]},
    }
    mixed = plan_of(config)
    lr = {v.experiment for v in mixed.studies["lr"].variants}
    assert lr == {v.experiment for v in fixed.studies["lr"].variants}
    other = mixed.studies["other"].variants
    assert all(mixed.experiments[v.experiment].spec["repeats_vary"] == VARY for v in other)
    config["repeats_vary"] = VARY
    config["studies"]["lr"]["repeats_vary"] = ["init_and_order"]
    assert {v.experiment for v in plan_of(config).studies["lr"].variants} == lr


def test_repeat_zero_shares_the_dataset_split_and_later_repeats_have_their_own(config):
    fixed = plan_of(config)
    plan = plan_of(dict(config, repeats_vary=VARY))
    dataset_prep = next(iter(fixed.preps))
    assert len(fixed.preps) == 1
    for study in plan.studies.values():
        for variant in study.variants:
            exp = plan.experiments[variant.experiment]
            runs = study.runs[variant.label]
            assert exp.prep_id == dataset_prep
            assert runs[0].prep is None and runs[0].split_seed == 42  # the dataset's split
            for k, run in enumerate(runs[1:], start=1):
                assert run.split_seed == derive_seed(42, "split", k) != 42
                name, data = plan.preps[run.prep]
                assert name == "d"
                assert data["split"]["validation_seed"] == run.split_seed
                split = {key: v for key, v in data["split"].items() if key != "validation_seed"}
                without = dict(data, split=split)
                assert without == exp.spec["data"] and prep_id(data) == run.prep
    # Both experiments read the same prepared split per repeat: 1 + 2 preps, not 1 + 4.
    assert len(plan.preps) == 3 and dataset_prep in plan.preps
    described = plan.studies["lr"].describe()["variants"][0]["runs"]
    assert [r["split_seed"] for r in described] == [
        42,
        *(derive_seed(42, "split", k) for k in (1, 2)),
    ]


def rejected(cfg, *patterns):
    with pytest.raises(ConfigError) as err:
        plan_of(cfg)
    for pattern in patterns:
        assert pattern in str(err.value), str(err.value)
    assert "test.yaml" in str(err.value)


def test_cv_and_lr_range_studies_reject_their_own_and_ignore_the_top_level(config):
    cv = {
        "kind": "cv",
        "baseline": "b",
        "cv": 2,
        "factors": {"optimizer.learning_rate": [0.1]},
        "reference": True,
    }
    config["studies"] = {"cv": dict(cv, repeats_vary=VARY)}
    rejected(config, "studies.cv.repeats_vary", "no repeats_vary in a cv study", "folds")
    config["studies"] = {"range": {"kind": "lr_range", "baseline": "b", "repeats_vary": VARY}}
    rejected(config, "studies.range.repeats_vary", "lr_range")
    config["studies"] = {"cv": cv}
    config["repeats_vary"] = VARY
    plan = plan_of(config)
    assert not any("repeats_vary" in spec for spec in specs(plan).values())
    assert all(run.prep is None for run in plan.runs.values())


@pytest.mark.parametrize(
    "split, fixed",
    [
        ({"validation": "test"}, "data.split.validation: test"),
        ({"validation": 30, "validation_rows": "head"}, "data.split.validation_rows: head"),
    ],
)
def test_a_split_with_nothing_to_draw_again_is_rejected(config, split, fixed):
    config["datasets"]["d"]["split"] = split
    config["repeats_vary"] = VARY
    rejected(config, "`repeats_vary`", "study lr", "variant 'baseline'", fixed)
    del config["repeats_vary"]
    config["studies"]["lr"]["repeats_vary"] = VARY
    rejected(config, "`studies.lr.repeats_vary`", fixed)
    config["repeats_vary"] = VARY  # a study may opt out of the top level's split
    config["studies"]["lr"]["repeats_vary"] = ["init_and_order"]
    plan_of(config)
    del config["studies"]["lr"]["repeats_vary"]  # or draw its validation rows at random
    config["studies"]["lr"]["set"] = {
        "data.split.validation": 0.2,
        "data.split.validation_rows": "random",
    }
    assert all("repeats_vary" in spec for spec in specs(plan_of(config)).values())


def test_an_override_that_fixes_the_validation_rows_is_rejected(config):
    config["repeats_vary"] = VARY
    config["studies"]["lr"]["factors"] = {"data.split.validation": ["test"]}
    rejected(config, "variant 'validation=test'", "data.split.validation: test")


@pytest.mark.parametrize(
    "value, expected",
    [
        (["split"], "[init_and_order] or [init_and_order, split]"),
        (["order"], "one of"),
        ([], "at least 1"),
        ("split", "array"),
    ],
)
def test_bad_values_are_rejected(config, value, expected):
    config["repeats_vary"] = value
    rejected(config, "repeats_vary", expected)


# Preparation --------------------------------------------------------------------------------


def data_spec(**split):
    return {
        "source": "digits",
        "task": "classification",
        "split": {
            "test": 0.2,
            "validation": 0.2,
            "validation_rows": "random",
            "stratify": True,
            "seed": 42,
            **split,
        },
        "scaler": {"kind": "standard", "by": 255.0},
        "subsample": 0,
    }


def canonical(n=1000, with_test=False):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 4))
    x[:, 0] = np.arange(n)  # a row id, to trace rows across splits
    out = {"x_train": x, "y_train": rng.integers(0, 4, size=n)}
    if with_test:
        out["x_test"], out["y_test"] = x[:150] + 10_000, out["y_train"][:150]
    return out


def rows(arrays, part) -> set:
    return set(arrays[f"x_{part}"][:, 0].tolist())


@pytest.mark.parametrize("test", [0.2, "canonical"])
def test_a_repeat_split_moves_validation_rows_only(test):
    can = canonical(with_test=test == "canonical")
    base = prepare.split(can, data_spec(test=test))
    seeds = [derive_seed(42, "split", k) for k in (1, 2)]
    repeats = [prepare.split(can, data_spec(test=test, validation_seed=s)) for s in seeds]
    for arrays in repeats:
        assert np.array_equal(arrays["x_test"], base["x_test"])  # the same rows, same order
        assert np.array_equal(arrays["y_test"], base["y_test"])
        assert rows(arrays, "val") != rows(base, "val")
        assert len(arrays["x_val"]) == len(base["x_val"])
        assert rows(arrays, "train") | rows(arrays, "val") == rows(base, "train") | rows(
            base, "val"
        )
        assert not rows(arrays, "train") & rows(arrays, "val")
    assert rows(repeats[0], "val") != rows(repeats[1], "val")


def test_default_split_is_the_draw_it_always_was():
    """No validation_seed (every spec but a varied repeat's): test rows with seed, then
    validation rows with seed + 1, so prepared files and ids stay what they were."""
    can = canonical()
    arrays = prepare.split(can, data_spec())
    x_rest, x_test, y_rest, _ = train_test_split(
        can["x_train"], can["y_train"], test_size=200, random_state=42, stratify=can["y_train"]
    )
    x_train, x_val, _, _ = train_test_split(
        x_rest, y_rest, test_size=200, random_state=43, stratify=y_rest
    )
    for part, expected in (("test", x_test), ("val", x_val), ("train", x_train)):
        assert np.array_equal(arrays[f"x_{part}"], expected)
    same = prepare.prepare(can, data_spec(validation_seed=42))
    assert all(np.array_equal(v, same[k]) for k, v in prepare.prepare(can, data_spec()).items())


# One real run ------------------------------------------------------------------------------


def unscaled(arrays: dict, part: str) -> np.ndarray:
    """A prepared split's features before scaling (each prepared file has its own scaler)."""
    x = arrays[f"x_{part}"].reshape(len(arrays[f"x_{part}"]), -1).astype(np.float64)
    return x * arrays["scaler_scale"] + arrays["scaler_shift"]


@pytest.mark.e2e
def test_e2e_each_repeat_trains_on_its_own_split(tmp_path, tiny_config):
    cfg = dict(tiny_config, repeats=2, repeats_vary=VARY)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "--cores", "2")
    table = pd.read_csv(tmp_path / "results/studies/lr/runs.csv")
    assert len(table) == 4 and sorted(table["run"]) == ["r0", "r0", "r1", "r1"]
    for rel in [*table["history"], *table["metrics"]]:
        assert (tmp_path / "results/studies/lr" / rel).exists(), rel
    assert set(table["status"]) == {"ok"}
    seeds = table.groupby("run")["split_seed"].unique()
    assert list(seeds["r0"]) == [42] and list(seeds["r1"]) == [derive_seed(42, "split", 1)]
    # Two prepared splits; repeat 0's is the dataset's, as without the key. The same test rows
    # (each file scales them with its own training rows' statistics), other validation rows.
    (dataset_prep,) = plan_of(tiny_config).preps
    (r1_prep,) = {run.prep for run in plan_of(cfg).runs.values()} - {None}
    data = tmp_path / "results/data"
    assert sorted(p.name for p in data.glob("*.npz")) == sorted(
        [f"d-{dataset_prep}.npz", f"d-{r1_prep}.npz"]
    )
    r0, _ = prepare.load(data / f"d-{dataset_prep}.npz")
    r1, _ = prepare.load(data / f"d-{r1_prep}.npz")
    assert np.array_equal(r0["y_test"], r1["y_test"])
    assert np.allclose(unscaled(r0, "test"), unscaled(r1, "test"), atol=1e-3)
    assert not np.allclose(unscaled(r0, "val"), unscaled(r1, "val"), atol=1e-3)
