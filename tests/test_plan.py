"""Config expansion: hashes, deduplication, override paths, grouped variants, repeats."""

import copy
import json
import math

import pytest
import yaml
from helpers import plan_of

from hpstudy import checks
from hpstudy import config as config_mod
from hpstudy import plan as plan_mod
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
            lambda c: c["baselines"]["main"]["optimizer"].update(name="adamx"),
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


# --------------------------------------------------------------------------- bounds (issue 13)


def test_memory_estimate_counts_dense_parameters_optimizer_slots_batch_and_data():
    cfg = copy.deepcopy(BASE)  # digits (64 inputs, 10 classes), hidden [32, 16], sgd momentum
    spec = next(iter(plan_of(cfg).experiments.values())).spec
    need = checks.estimate_memory(spec)
    assert need["parameters"] == (64 + 1) * 32 + (32 + 1) * 16 + (16 + 1) * 10
    assert need["slots"] == 1  # SGD with momentum keeps one velocity per weight
    assert need["parts"] == {
        "weights": need["parameters"] * 4 * 3,
        "activations": 256 * (64 + 32 + 16 + 10) * 4 * 2,
        "data": 1797 * 64 * 4,
    }
    wide = copy.deepcopy(spec)
    wide["model"]["kind"] = "wide_deep"  # the input joins the last hidden layer at the output
    assert checks.estimate_memory(wide)["parameters"] == (
        (64 + 1) * 32 + (32 + 1) * 16 + (64 + 16 + 1) * 10
    )
    for name, slots in [("adam", 2), ("rmsprop", 1)]:
        other = copy.deepcopy(spec)
        other["optimizer"] = {"name": name, "learning_rate": 0.01}
        assert checks.estimate_memory(other)["slots"] == slots


def test_source_features_and_rows_match_the_data(tmp_path, monkeypatch):
    """The planner's widths (datasets.Source.features, .rows) are those of the converted data."""
    import numpy as np
    from fakedata import hashes, write_raw

    from hpstudy import datasets

    for name in ("digits", "diabetes"):
        x = datasets.load_npz(datasets.convert(name, None, tmp_path / f"{name}.npz"))["x_train"]
        assert (datasets.SOURCES[name].rows, datasets.SOURCES[name].features) == (
            len(x),
            int(np.prod(x.shape[1:])),
        )
    raw = tmp_path / "raw"
    raw.mkdir()
    write_raw(raw, np.random.default_rng(0))
    (tmp_path / "sha.json").write_text(json.dumps(hashes(raw)))
    monkeypatch.setenv(datasets.SHA256_OVERRIDES_ENV, str(tmp_path / "sha.json"))
    for name, source in datasets.SOURCES.items():
        if name in ("digits", "diabetes"):
            continue
        x = datasets.load_npz(datasets.convert(name, raw, tmp_path / f"{name}.npz"))["x_train"]
        assert source.features == int(np.prod(x.shape[1:])), name


def test_an_experiment_too_large_for_mem_mb_is_refused_until_mem_mb_allows_it():
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["digits"]["source"] = "mnist"
    cfg["studies"] = {
        "wide": {"kind": "ofat", "baseline": "main", "factors": {"model.hidden": [[4096, 4096]]}}
    }
    cfg["resources"] = {"mem_mb": 256}
    with pytest.raises(ConfigError) as err:
        plan_of(cfg)
    msg = str(err.value)
    for fragment in [
        "test.yaml",
        "`studies.wide.factors.model.hidden[0]`",
        "expected an experiment that fits resources.mem_mb = 256 MB per training job",
        f"{(784 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 10:,} parameters",
        "raise resources.mem_mb",
    ]:
        assert fragment in msg, msg
    cfg["resources"] = {"mem_mb": 1024}
    assert len(plan_of(cfg).experiments) == 2


def test_the_reference_too_large_names_the_study_set_and_range_tests_are_checked_too():
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["lr"]["set"] = {"model.hidden": [100_000, 100_000]}
    with pytest.raises(ConfigError, match=r"`studies\.lr\.set`: expected an experiment that fits"):
        plan_of(cfg)
    cfg = copy.deepcopy(BASE)
    cfg["baselines"]["main"]["model"]["hidden"] = [100_000, 100_000]
    cfg["studies"] = {"range": {"kind": "lr_range", "baseline": "main"}}
    with pytest.raises(ConfigError, match=r"`baselines\.main`: expected an experiment that fits"):
        plan_of(cfg)


def test_many_planned_runs_warn_on_one_line_and_plan(capsys):
    cfg = copy.deepcopy(BASE)  # 5 experiments
    cfg["repeats"] = 3
    cfg["limits"] = {"max_runs_warning": 15}
    assert len(plan_of(cfg).runs) == 15
    assert capsys.readouterr().err == ""
    cfg["limits"] = {"max_runs_warning": 14}
    assert len(plan_of(cfg).runs) == 15
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hpstudy: warning: test.yaml plans 15 training")
    assert "limits.max_runs_warning (14)" in err


def test_the_default_run_warning_is_2000(capsys):
    cfg = copy.deepcopy(BASE)
    cfg["studies"]["lr"]["factors"]["optimizer.learning_rate"] = [i / 1000 for i in range(1, 401)]
    cfg["repeats"] = 5
    plan = plan_of(cfg)
    assert len(plan.runs) == 2010  # 0.01 is the baseline's own rate
    assert "plans 2,010 training runs" in capsys.readouterr().err


# --------------------------------------------------------------------------- id collisions

# Issue 13: a baseline of defaults on digits, two learning rates found by searching 1.2 M specs.
COLLIDING = {
    "datasets": {"digits": {"source": "digits"}},
    "baselines": {"main": {"dataset": "digits"}},
    "studies": {
        "lr": {
            "kind": "ofat",
            "baseline": "main",
            "factors": {"optimizer.learning_rate": [0.10761839999999999, 0.12083709999999999]},
        }
    },
}


def test_two_specs_with_one_experiment_id_fail_loudly(monkeypatch):
    cfg = copy.deepcopy(COLLIDING)
    cfg["studies"]["lr"]["factors"]["optimizer.learning_rate"] = [0.10761839999999999]
    (first,) = [v.experiment for v in plan_of(cfg).studies["lr"].variants if not v.is_reference]
    cfg["studies"]["lr"]["factors"]["optimizer.learning_rate"] = [0.12083709999999999]
    (second,) = [v.experiment for v in plan_of(cfg).studies["lr"].variants if not v.is_reference]
    if first != second:  # the defaults (or TRAINING_VERSION) changed: force the collision
        real = plan_mod.short_hash
        monkeypatch.setattr(
            plan_mod,
            "short_hash",
            lambda obj, *a: "e5e474ddea" if obj["optimizer"]["learning_rate"] > 0.1 else real(obj),
        )
    with pytest.raises(ConfigError) as err:
        plan_of(COLLIDING)
    msg = str(err.value)
    for fragment in [
        "test.yaml",
        "`studies.lr.factors.optimizer.learning_rate[1]`: expected a spec whose experiment id no "
        "other spec has",
        "`studies.lr.factors.optimizer.learning_rate[0]` already gives a different spec",
        "optimizer.learning_rate: 0.10761839999999999 and 0.12083709999999999",
        "hash collision",
        "Change one of the values slightly",
    ]:
        assert fragment in msg, msg


def test_two_range_tests_with_one_id_fail_loudly(monkeypatch):
    cfg = copy.deepcopy(BASE)
    cfg["baselines"]["other"] = copy.deepcopy(cfg["baselines"]["main"])
    cfg["studies"] = {
        "range": {"kind": "lr_range", "baseline": "main"},
        "range2": {"kind": "lr_range", "baseline": "other", "lr_range": {"iterations": 99}},
    }
    monkeypatch.setattr(plan_mod, "short_hash", lambda obj, *a: "0123456789")
    with pytest.raises(
        ConfigError, match=r"`baselines\.other`: .* range test id .*`baselines\.main`"
    ):
        plan_of(cfg)


def test_exponent_numbers_are_read_as_yaml_1_2_reads_them(tiny_config):
    """`5e-2` is a float in YAML 1.2 but a string to PyYAML and Snakemake: it plans as 0.05."""
    text = yaml.safe_dump(tiny_config).replace("0.05", "5e-2").replace("- 0.1", "- 1e-1")
    written = yaml.safe_load(text)
    assert written["baselines"]["b"]["optimizer"]["learning_rate"] == "5e-2"  # PyYAML's reading
    assert set(plan_of(written).experiments) == set(plan_of(tiny_config).experiments)


def test_the_plan_owns_the_grid_design_and_a_fused_jobs_resources(tiny_config):
    """What the rules ask the plan (common.smk only connects): a grid's factors and cells, a
    fused job's memory (one model's `mem_mb` plus each further tower's estimate) and runtime."""
    from hpstudy.checks import estimate_memory

    cfg = copy.deepcopy(tiny_config)
    cfg["studies"]["g"] = {
        "kind": "grid",
        "baseline": "b",
        "grid": {"optimizer.learning_rate": [0.1, 0.01], "training.batch_size": [16]},
    }
    plan = plan_of(cfg)
    slug = next(s.slug for s in plan.studies.values() if s.name == "g")
    experiment = {v.label: v.experiment for v in plan.studies[slug].variants}
    assert plan.grid_design(slug) == {
        "factors": ["optimizer.learning_rate", "training.batch_size"],
        "cells": [["learning_rate=0.1, batch_size=16", [0.1, 16],
                   experiment["learning_rate=0.1, batch_size=16"]],
                  ["learning_rate=0.01, batch_size=16", [0.01, 16],
                   experiment["learning_rate=0.01, batch_size=16"]]],
    }  # fmt: skip
    # A cell the plan drops as another variant's experiment names that experiment.
    cfg["studies"]["g"]["grid"]["optimizer.learning_rate"] = [0.05, 0.1]  # 0.05: the baseline's
    cfg["studies"]["g"]["grid"]["training.batch_size"] = [32]
    cfg["studies"]["g"]["reference"] = True
    plan = plan_of(cfg)
    study = plan.studies[slug]
    cells = {label: exp for label, _, exp in plan.grid_design(slug)["cells"]}
    reference = next(v.experiment for v in study.variants if v.is_reference)
    assert cells["learning_rate=0.05, batch_size=32"] == reference
    assert "learning_rate=0.05, batch_size=32" not in {v.label for v in study.variants}
    assert plan.grid_design("lr") == {"factors": [], "cells": []}
    exp = next(iter(plan.experiments))
    tower = estimate_memory(plan.experiments[exp].spec)["bytes"] / 2**20
    base = plan.config["resources"]["mem_mb"]
    assert plan.fused_mem_mb(exp, 1) == base
    assert plan.fused_mem_mb(exp, 5) == base + math.ceil(4 * tower) > base
    runtime = plan.config["resources"]["runtime"]
    assert plan.fused_runtime(3, 1) == 3 * runtime and plan.fused_runtime(3, 2) == 6 * runtime


def test_every_kind_of_study_describes_itself_with_exactly_the_contracts_keys(tiny_config):
    """Study.describe() is stages.StudyInfo (and its variants and runs theirs) for every kind;
    Plan.grid_design a GridDesign and Plan.lr_range_views LRRangeViews: what the jobs receive."""
    from hpstudy import stages

    def keys_fit(record: dict, typed) -> None:
        assert typed.__required_keys__ <= set(record) <= typed.__required_keys__ | typed.__optional_keys__, (
            typed.__name__, sorted(record))  # fmt: skip

    cfg = copy.deepcopy(tiny_config)
    cfg["studies"].update({
        "g": {"kind": "grid", "baseline": "b", "grid": {"optimizer.learning_rate": [0.1, 0.2]}},
        "folds": {"kind": "cv", "baseline": "b", "cv": 2, "factors": {"training.batch_size": [16]}},
        "range": {"kind": "lr_range", "baseline": "b"},
        "both": {"kind": "combine", "baseline": "b", "combine": ["lr"]},
        "find": {"kind": "search", "baseline": "b", "search": {"trials": 2, "round_size": 2},
                 "space": {"optimizer.learning_rate": {"low": 0.01, "high": 0.5, "log": True}}},
    })  # fmt: skip
    plan = plan_of(cfg)
    from hpstudy import search

    proposed = search.propose(plan.studies["find"].search["request"], [], {}, 2)
    trials = plan.add_search_rounds("find", [proposed])
    retest = {"retest": [{"trial": 0, "experiment": trials["0"], "search_score": 0.5,
                          "params": proposed["trials"][0]["params"]}]}  # fmt: skip
    plan.add_search_retest("find", retest)
    info = plan.studies["find"].describe()["search"]
    keys_fit(info, stages.SearchInfo)
    keys_fit(info["request"], stages.SearchRequest)
    keys_fit(info["retested"][0], stages.Retested)
    keys_fit(proposed["trials"][0], stages.SearchTrial)
    lr = plan.studies["lr"]
    winner = {"study": "lr", "slug": "lr", "variant": lr.variants[1].label,
              "experiment": lr.variants[1].experiment}  # fmt: skip
    plan.add_combination("both", {"study": "both", "winners": [winner]})
    kinds = set()
    for study in plan.studies.values():
        info = study.describe()
        kinds.add(info["kind"])
        keys_fit(info, stages.StudyInfo)
        for variant in info["variants"]:
            keys_fit(variant, stages.VariantInfo)
            for run in variant["runs"]:
                keys_fit(run, stages.RunInfo)
        keys_fit(plan.grid_design(study.slug), stages.GridDesign)
    assert kinds == {"ofat", "grid", "cv", "lr_range", "combine", "search"}
    assert "combination" in plan.studies["both"].describe()
    assert {"fold", "folds"} <= set(plan.studies["folds"].describe()["variants"][0]["runs"][0])
    (view,) = plan.lr_range_views()
    keys_fit(view, stages.LRRangeView)
    for w in plan.studies["both"].describe()["combination"]["winners"]:
        keys_fit(w, stages.Winner)


def test_the_plan_decides_downloads_user_files_report_studies_and_the_refit(tiny_config, tmp_path):
    """What common.smk asks the plan instead of deciding itself."""
    cfg = copy.deepcopy(tiny_config)
    cfg["datasets"]["m"] = {"source": "mnist"}
    cfg["baselines"]["bm"] = dict(cfg["baselines"]["b"], dataset="m")
    cfg["studies"]["folds"] = {"kind": "cv", "baseline": "b", "cv": 2,
                               "factors": {"training.batch_size": [16]}}  # fmt: skip
    cfg["studies"]["m_lr"] = {"kind": "ofat", "baseline": "bm",
                              "factors": {"optimizer.learning_rate": [0.1, 0.2, 0.3]}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    plan = plan_of(cfg, files=(str(tmp_path / "c.yaml"),))
    assert plan.downloads() == ["mnist"]  # digits ships with scikit-learn
    assert plan.user_files() == {}
    assert plan.report_studies("cv") == ["folds"] and plan.report_studies("combine") == []
    assert plan.report_response_studies() == ["m_lr"]  # three values of a numeric factor
    assert plan.report_grid_studies() == []
    candidate = plan.studies["folds"].variants[0].experiment
    winner = tmp_path / "winner.json"
    winner.write_text(json.dumps({"experiment": candidate}))
    assert plan.refit_experiment("folds", winner) == candidate
    winner.write_text(json.dumps({"experiment": "0123456789"}))
    with pytest.raises(ValueError, match="not a candidate of study folds any more"):
        plan.refit_experiment("folds", winner)
    described = plan.report_description([plan.studies[s] for s in plan.report_studies()])
    assert set(described["experiments"]) == {
        v.experiment for s in plan.report_studies() for v in plan.studies[s].variants
    }
    assert list(described["config_files"].values()) == [(tmp_path / "c.yaml").read_text()]
