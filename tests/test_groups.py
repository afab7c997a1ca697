"""Fused experiments: experiments that differ only in values a tower holds on its own (learning
rate, SGD momentum, L1/L2 strengths and where they apply, Dropout rates, seeds) train as the
towers of one job, and each tower gives the numbers of its run trained alone to within 1e-5
relative (TensorFlow, CPU), as an experiment's fused repeats do (tests/test_fused.py)."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import TINY_CONFIG, plan_of, prepared_digits
from test_fused import alone, close_results, outs

from hpstudy import fused, stacked, training
from hpstudy.ids import derive_seed


def experiments(variants: list[dict], epochs=10, optimizer=None, **model) -> list:
    """The plan's experiments of a baseline (hidden [24, 12], `model`) and of each variant
    (a dict of `set:` keys), in the variants' order, the baseline first."""
    cfg = copy.deepcopy(TINY_CONFIG)
    base = cfg["baselines"]["b"]
    base["training"]["epochs"] = epochs
    base["model"] = {"hidden": [24, 12], **model}
    base["optimizer"] = optimizer or {"name": "sgd", "learning_rate": 0.05, "momentum": 0.5}
    cfg["studies"] = {"s": {"kind": "ofat", "baseline": "b",
                            "variants": [{"label": f"v{i}", "set": v}
                                         for i, v in enumerate(variants)]}}  # fmt: skip
    plan = plan_of(cfg)
    study = plan.studies["s"]
    return [plan.experiments[v.experiment] for v in study.variants]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    exp = experiments([{"optimizer.learning_rate": 0.01}])[0]
    return prepared_digits(tmp_path_factory.mktemp("group-data"), exp.spec["data"])


def group(exps, data, root, repeats=2):
    """Train `repeats` runs of every experiment of `exps` as one group job; their folders."""
    members, specs, seeds, dirs = [], [], [], []
    for exp in exps:
        for k in range(repeats):
            members.append(f"{exp.id}/r{k}")
            specs.append(exp.spec)
            seeds.append(derive_seed(exp.spec["training"]["seed"], "repeat", k))
            dirs.append(root / exp.id / f"r{k}")
    fused.train_group(specs, [data] * len(specs), [outs(d) for d in dirs], seeds, members,
                      "g0", root / "backup")  # fmt: skip
    return list(zip(members, specs, seeds, dirs))


def check_alone(towers, data, tmp_path, rtol=1e-5):
    for member, spec, seed, directory in towers:
        exp_id, run = member.split("/")
        exp = type("E", (), {"spec": spec, "id": exp_id})
        ref = alone(exp, seed, data, tmp_path / "alone" / exp_id / run, run)
        assert close_results(ref, directory, rtol), member


def test_learning_rate_momentum_and_seed_towers_equal_their_runs_alone(data, tmp_path):
    exps = experiments([
        {"optimizer.learning_rate": 0.01},
        {"optimizer.momentum": 0.0},
        {"optimizer.momentum": 0.9, "optimizer.learning_rate": 0.02},
        {"training.seed": 7},
    ])  # fmt: skip
    towers = group(exps, data, tmp_path / "g")
    check_alone(towers, data, tmp_path)
    metrics = json.loads((towers[2][3] / "metrics.json").read_text())
    assert metrics["fused"]["group"] == "g0" and len(metrics["fused"]["members"]) == 10
    assert metrics["fused"]["runs"] == ["r0", "r1"] and metrics["timing"]["fused_repeats"] == 10
    assert metrics["experiment"] == exps[1].id
    assert not (tmp_path / "g" / "backup").exists()


def test_penalty_and_dropout_towers_equal_their_runs_alone(data, tmp_path):
    exps = experiments(
        [
            {"model.regularizer": {"l1": 0.0, "l2": 0.01, "layers": "all", "bias": False}},
            {"model.regularizer": {"l1": 0.001, "l2": 0.02, "layers": "output", "bias": True}},
            {"model.dropout.rate": 0.4},
        ],
        dropout={"rate": 0.2},
    )
    check_alone(group(exps, data, tmp_path / "g"), data, tmp_path)


def test_adam_towers_with_their_own_learning_rates_equal_their_runs_alone(data, tmp_path):
    exps = experiments([{"optimizer.learning_rate": 0.001}, {"optimizer.learning_rate": 0.03}],
                       optimizer={"name": "adam", "learning_rate": 0.005})  # fmt: skip
    check_alone(group(exps, data, tmp_path / "g"), data, tmp_path)


def test_towers_of_different_architectures_are_refused(data):
    a, b = experiments([{"model.hidden": [24]}], epochs=1)
    inputs = [training.load_inputs(a.spec["data"], data, None)] * 2
    with pytest.raises(stacked.Unstackable, match="different"):
        fused.build_stacked([a.spec, b.spec], inputs, [1, 2])
