"""Config expansion: hashes, deduplication, override paths, grouped variants, repeats."""

import copy

import pytest
import yaml
from helpers import plan_of

from hpstudy import config as config_mod
from hpstudy.config import ConfigError
from hpstudy.ids import derive_seed, slugify
from hpstudy.plan import make_plan

BASE = {
    "datasets": {"digits": {"source": "digits"}},
    "baselines": {
        "main": {
            "dataset": "digits",
            "model": {"hidden": [32, 16], "activation": "relu"},
            "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.45},
            "training": {"epochs": 5, "batch_size": 256},
        }
    },
    "studies": {
        "lr": {
            "kind": "ofat",
            "baseline": "main",
            "factors": {"optimizer.learning_rate": [0.001, 0.05]},
        },
        "momentum": {
            "kind": "ofat",
            "baseline": "main",
            "factors": {"optimizer.momentum": [0.0, 0.9]},
        },
    },
}


def test_baseline_shared_across_studies_is_one_experiment():
    plan = plan_of(BASE)
    refs = {s.variants[0].experiment for s in plan.studies.values()}
    assert len(refs) == 1
    assert all(s.variants[0].is_reference for s in plan.studies.values())
    # baseline + 2 lr + 2 momentum
    assert len(plan.experiments) == 5
    assert len(plan.runs) == 5


def test_hash_ignores_key_order_and_int_float_spelling():
    a = plan_of(BASE)
    cfg = copy.deepcopy(BASE)
    base = cfg["baselines"]["main"]
    cfg["baselines"]["main"] = {k: base[k] for k in reversed(list(base))}
    cfg["baselines"]["main"]["optimizer"] = {"momentum": 0.45, "learning_rate": 0.01, "name": "sgd"}
    cfg["studies"]["momentum"]["factors"]["optimizer.momentum"] = [0, 0.9]  # 0 instead of 0.0
    b = plan_of(cfg)
    assert set(a.experiments) == set(b.experiments)


def test_yaml_round_trip_gives_same_ids():
    text = yaml.safe_dump(BASE, sort_keys=True)
    again = yaml.safe_load(text)
    assert set(plan_of(again).experiments) == set(plan_of(BASE).experiments)


def test_changing_one_value_changes_exactly_one_experiment():
    before = set(plan_of(BASE).experiments)
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["lr"]["factors"]["optimizer.learning_rate"][1] = 0.1
    after = set(plan_of(cfg).experiments)
    assert len(after - before) == 1 and len(before - after) == 1


def test_override_path_is_applied_to_the_spec():
    plan = plan_of(BASE)
    lr = plan.studies["lr"]
    specs = {v.label: plan.experiments[v.experiment].spec for v in lr.variants}
    assert specs["learning_rate=0.05"]["optimizer"]["learning_rate"] == 0.05
    assert specs["learning_rate=0.05"]["optimizer"]["momentum"] == 0.45
    assert specs["baseline"]["optimizer"]["learning_rate"] == 0.01
    assert lr.varied == ["optimizer.learning_rate"]
    assert lr.variants[1].values == {"optimizer.learning_rate": 0.001}


def test_grouped_variant_sets_several_keys_with_its_label():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["act"] = {
        "kind": "ofat",
        "baseline": "main",
        "variants": [
            {
                "label": "tanh (glorot_uniform)",
                "set": {"model.activation": "tanh", "model.initializer": "glorot_uniform"},
            }
        ],
    }
    plan = plan_of(cfg)
    study = plan.studies["act"]
    assert [v.label for v in study.variants] == ["baseline", "tanh (glorot_uniform)"]
    spec = plan.experiments[study.variants[1].experiment].spec
    assert spec["model"]["activation"] == "tanh"
    assert spec["model"]["initializer"] == "glorot_uniform"
    assert study.varied == ["model.activation", "model.initializer"]
    assert study.variants[0].values == {
        "model.activation": "relu",
        "model.initializer": "he_normal",
    }


def test_grid_is_cartesian_and_study_set_applies_to_all():
    cfg = copy.deepcopy(BASE)
    cfg["studies"] = {
        "g": {
            "kind": "grid",
            "baseline": "main",
            "set": {"optimizer.learning_rate": 0.001},
            "grid": {"model.regularizer.l2": [0.0, 0.01], "training.batch_size": [32, 64, 128]},
        }
    }
    plan = plan_of(cfg)
    study = plan.studies["g"]
    assert len(study.variants) == 6
    assert not any(v.is_reference for v in study.variants)
    for v in study.variants:
        assert plan.experiments[v.experiment].spec["optimizer"]["learning_rate"] == 0.001


def test_repeats_derive_distinct_seeds_and_repeat_zero_keeps_the_spec_seed():
    cfg = copy.deepcopy(BASE)
    cfg["repeats"] = 3
    plan = plan_of(cfg)
    runs = plan.studies["lr"].runs["baseline"]
    assert [r.name for r in runs] == ["r0", "r1", "r2"]
    assert runs[0].seed == 42
    assert len({r.seed for r in runs}) == 3
    assert derive_seed(42, "repeat", 1) == runs[1].seed  # stable across calls
    assert len(plan.runs) == 15


def test_duplicate_variant_equal_to_baseline_is_trained_once():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["lr"]["factors"]["optimizer.learning_rate"] = [0.01, 0.05]  # 0.01 == baseline
    study = plan_of(cfg).studies["lr"]
    assert [v.label for v in study.variants] == ["baseline", "learning_rate=0.05"]


def test_unknown_override_path_names_key_file_and_expectation():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["lr"]["factors"] = {"optimizer.learnig_rate": [0.1]}
    with pytest.raises(ConfigError) as err:
        plan_of(cfg)
    msg = str(err.value)
    assert "studies.lr.factors.optimizer.learnig_rate" in msg
    assert "test.yaml" in msg
    assert "expected a dotted path that exists in the baseline" in msg


@pytest.mark.parametrize(
    "mutate, where, expected",
    [
        (
            lambda c: c["baselines"]["main"]["model"].update(activation="rleu"),
            "activation",
            "one of relu",
        ),
        (
            lambda c: c["baselines"]["main"]["optimizer"].update(name="adamw"),
            "optimizer.name",
            "one of sgd",
        ),
        (
            lambda c: c["baselines"]["main"].update(colour="red"),
            "baselines.main",
            "unknown key(s) 'colour'",
        ),
        (
            lambda c: c["baselines"]["main"]["training"].update(epochs="ten"),
            "training.epochs",
            "integer",
        ),
        (
            lambda c: c["studies"]["lr"]["factors"].update({"optimizer.learning_rate": [-1]}),
            "studies.lr.factors.optimizer.learning_rate[0]",
            "> 0",
        ),
    ],
)
def test_bad_values_are_reported_with_their_path(mutate, where, expected):
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        plan_of(cfg)
    assert where in str(err.value)
    assert expected in str(err.value)
    assert "test.yaml" in str(err.value)


def test_missing_baseline_is_reported():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["lr"]["baseline"] = "mian"
    with pytest.raises(ConfigError, match=r"studies\.lr\.baseline.*one of the baselines main"):
        plan_of(cfg)


def test_duplicate_yaml_keys_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("studies:\n  a: {kind: ofat}\n  a: {kind: grid}\n")
    with pytest.raises(ConfigError, match=r"Duplicate key 'a' at line 3.*c.yaml"):
        config_mod.read_yaml(path)


def test_defaults_are_filled():
    plan = plan_of(BASE)
    spec = next(iter(plan.experiments.values())).spec
    assert spec["model"]["regularizer"] == {"l1": 0.0, "l2": 0.0, "layers": "hidden", "bias": False}
    assert spec["model"]["dropout"] == {"rate": 0.0, "layers": "all"}
    assert spec["data"]["split"]["test"] == 0.2
    assert spec["data"]["scaler"]["kind"] == "standard"
    assert spec["training"]["shuffle"] is True


def test_slugs_are_path_safe_and_unique():
    taken = set()
    names = ["lr", "../../etc", "a b", "A B", "$(touch x)"]
    slugs = [slugify(n, taken) for n in names]
    assert slugs[0] == "lr"
    assert len(set(slugs)) == len(slugs)
    for s in slugs:
        assert "/" not in s and ".." not in s and s.strip()


def test_default_config_plans():
    plan = make_plan(config_mod.load(["config/config.yaml"]), ["config/config.yaml"])
    assert "layers" in plan.studies
    main = plan.studies["layers"].variants[0]
    spec = plan.experiments[main.experiment].spec
    assert spec["model"]["hidden"] == [32, 16, 64, 32, 16, 64]
    assert spec["optimizer"] == {
        "name": "sgd",
        "learning_rate": 0.01,
        "momentum": 0.45,
        "nesterov": False,
    }
    assert spec["training"]["batch_size"] == 256
