"""Learning-rate range test: schedule, smoothing, early stop, suggestion, and `lr_range:` refs."""

import copy
import json
import math

import numpy as np
import pytest
from helpers import plan_of

from hpstudy import lr_range
from hpstudy.config import ConfigError
from hpstudy.plan import lr_range_of


def stop_index(losses, beta: float = 0.98, stop_factor: float = 4.0) -> int | None:
    """Index of the batch after which the test stops (it is still recorded), or None."""
    smoother, lowest = lr_range.Smoother(beta), math.inf
    for i, loss in enumerate(losses):
        smoothed = smoother.update(float(loss))
        if lr_range.should_stop(float(loss), smoothed, lowest, stop_factor):
            return i
        lowest = min(lowest, smoothed)
    return None


CONFIG = {
    "datasets": {"d": {"source": "digits"}},
    "baselines": {
        "b": {
            "dataset": "d",
            "model": {"hidden": [16]},
            "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.5},
            "training": {"epochs": 3, "batch_size": 32},
        }
    },
    "studies": {
        "range": {"kind": "lr_range", "baseline": "b", "lr_range": {"iterations": 50}},
        "uses": {
            "kind": "ofat",
            "baseline": "b",
            "factors": {"optimizer.learning_rate": ["lr_range:b"]},
        },
    },
}


# The schedule ---------------------------------------------------------------------------------


def test_schedule_is_exponential_between_the_endpoints():
    lrs = lr_range.schedule(1e-5, 1.0, 500)
    assert len(lrs) == 500
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1.0)
    ratios = lrs[1:] / lrs[:-1]
    # the same factor every batch: seed 003's exp(log(10^5) / N), with N = 499 steps here
    assert np.allclose(ratios, math.exp(math.log(1e5) / 499))


def test_schedule_rejects_an_empty_range():
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        lr_range.schedule(1.0, 1e-5, 100)


# Smoothing and the early stop --------------------------------------------------------------


def test_smoothing_is_bias_corrected():
    # a constant loss stays that constant from the first batch (no pull towards 0)
    assert np.allclose(lr_range.smooth([2.0] * 20, 0.98), 2.0)
    # and it is the EMA: avg_t = b avg_(t-1) + (1 - b) x_t, divided by 1 - b^t
    beta, xs = 0.9, [1.0, 3.0, 2.0]
    avg, expected = 0.0, []
    for t, x in enumerate(xs, start=1):
        avg = beta * avg + (1 - beta) * x
        expected.append(avg / (1 - beta**t))
    assert np.allclose(lr_range.smooth(xs, beta), expected)


def test_stops_once_the_smoothed_loss_exceeds_the_factor_times_its_minimum():
    losses = [4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 3.0, 9.0, 30.0, 100.0]
    smoothed = lr_range.smooth(losses, 0.5)
    stop = stop_index(losses, beta=0.5, stop_factor=4.0)
    first_over = next(
        i for i in range(1, len(losses)) if smoothed[i] > 4 * smoothed[:i].min()
    )  # the rule written out
    assert stop == first_over
    assert smoothed[stop - 1] <= 4 * smoothed[: stop - 1].min()
    assert stop_index(losses, beta=0.5, stop_factor=1000.0) is None


def test_stops_on_a_non_finite_loss():
    assert stop_index([2.0, 1.5, float("nan"), 1.0], 0.98, 4.0) == 2
    assert stop_index([2.0, float("inf")], 0.98, 4.0) == 1


# The suggestion ---------------------------------------------------------------------------------


def curve(center: float = -2.0):
    """Smoothed loss falling fastest at lr = 10**center, lowest at about 10**-0.6, then rising."""
    lrs = lr_range.schedule(1e-5, 1.0, 400)
    x = np.log10(lrs)
    loss = 2.0 - np.tanh(2 * (x - center)) + np.where(x > -0.6, 30 * (x + 0.6) ** 2, 0.0)
    return lrs, loss


def test_steepest_rule_finds_the_fastest_descent():
    lrs, loss = curve(-2.0)
    s = lr_range.suggest(lrs, loss, "steepest")
    assert s["rule"] == "steepest" and not s["fallback"]
    assert math.log10(s["suggested_lr"]) == pytest.approx(-2.0, abs=0.03)
    assert s["max_descent_slope"] < 0
    assert math.log10(s["min_loss_lr"]) == pytest.approx(-0.6, abs=0.1)


def test_steepest_rule_ignores_the_rise_after_the_minimum():
    lrs, loss = curve(-3.0)
    s = lr_range.suggest(lrs, loss, "steepest")
    assert s["suggested_lr"] < s["min_loss_lr"]
    assert math.log10(s["suggested_lr"]) == pytest.approx(-3.0, abs=0.03)


def test_min_loss_rule_is_a_tenth_of_the_lr_at_the_minimum():
    lrs, loss = curve(-2.0)
    s = lr_range.suggest(lrs, loss, "min_loss_over_10")
    i = int(np.argmin(loss))
    assert s["suggested_lr"] == pytest.approx(lrs[i] / 10)


def test_falls_back_to_min_loss_when_there_is_no_descent():
    lrs = lr_range.schedule(1e-3, 1.0, 50)
    rising = np.linspace(1.0, 5.0, 50)
    s = lr_range.suggest(lrs, rising, "steepest")
    assert s["fallback"] and s["steepest_lr"] is None
    assert s["suggested_lr"] == pytest.approx(1e-3 / 10)


def test_the_suggestion_uses_the_finite_part_of_the_curve():
    lrs, loss = curve(-2.0)
    loss = loss.copy()
    loss[300:] = np.nan  # the test stopped on a non-finite loss
    s = lr_range.suggest(lrs, loss, "steepest")
    assert math.isfinite(s["min_smoothed_loss"])
    assert s["min_loss_lr"] <= lrs[299]


# lr_range:<baseline> in a spec ----------------------------------------------------------


def test_a_reference_names_the_test_in_the_experiment():
    plan = plan_of(CONFIG)
    (test_id,) = plan.lr_ranges
    study = plan.studies["uses"]
    taking = [v for v in study.variants if not v.is_reference]
    spec = plan.experiments[taking[0].experiment].spec
    assert spec["optimizer"]["learning_rate"] == f"lr_range:b@{test_id}"
    assert lr_range_of(spec) == test_id
    assert plan.studies["range"].lr_range == test_id
    assert plan.lr_range_users(test_id) == [("uses", taking[0].label, taking[0].experiment)]
    # the test has no learning rate of its own (it sweeps one) and no training runs
    assert "learning_rate" not in plan.lr_ranges[test_id].spec["optimizer"]
    assert plan.studies["range"].variants == []
    assert plan.report_lr_ranges() == ["range"] and plan.report_studies() == ["uses"]


def test_changing_the_test_changes_the_experiments_that_take_its_suggestion():
    before = plan_of(CONFIG)
    cfg = copy.deepcopy(CONFIG)
    cfg["studies"]["range"]["lr_range"]["max_lr"] = 0.5
    after = plan_of(cfg)
    assert set(before.lr_ranges) != set(after.lr_ranges)
    old = {v.experiment for v in before.studies["uses"].variants}
    new = {v.experiment for v in after.studies["uses"].variants}
    assert len(old & new) == 1  # only the reference, with its numeric learning rate, is kept


def test_a_reference_without_a_range_test_is_an_error():
    cfg = copy.deepcopy(CONFIG)
    del cfg["studies"]["range"]
    with pytest.raises(ConfigError, match=r"studies\.uses\.factors.*exactly one study of kind"):
        plan_of(cfg)


def test_range_test_settings_are_checked():
    cfg = copy.deepcopy(CONFIG)
    cfg["studies"]["range"]["lr_range"] = {"min_lr": 0.1, "max_lr": 0.01}
    with pytest.raises(ConfigError, match=r"studies\.range\.lr_range\.max_lr.*> min_lr"):
        plan_of(cfg)
    cfg["studies"]["range"]["lr_range"] = {"iterations": 5}
    with pytest.raises(ConfigError, match=r"iterations.*>= 10"):
        plan_of(cfg)
    cfg["studies"]["range"]["lr_range"] = {}
    cfg["studies"]["range"]["factors"] = {"model.hidden": [[8]]}
    with pytest.raises(ConfigError, match="no candidates in an lr_range study"):
        plan_of(cfg)


def test_defaults_are_seed_003s_test():
    cfg = copy.deepcopy(CONFIG)
    cfg["studies"]["range"].pop("lr_range")
    plan = plan_of(cfg)
    (test,) = plan.lr_ranges.values()
    settings = test.spec["lr_range"]
    assert (settings["min_lr"], settings["max_lr"], settings["iterations"]) == (1e-5, 1.0, 500)
    assert (settings["smoothing"], settings["stop_factor"]) == (0.98, 4.0)
    assert settings["suggestion"] == "steepest"


def test_the_training_job_reads_the_suggestion_from_its_input(tmp_path):
    spec = {"optimizer": {"name": "sgd", "learning_rate": "lr_range:b@abc123abc1"}}
    good = tmp_path / "suggestion.json"
    good.write_text(json.dumps({"experiment": "abc123abc1", "suggested_lr": 0.02, "rule": "x"}))
    resolved, source = lr_range.resolve_learning_rate(spec, good)
    assert resolved["optimizer"]["learning_rate"] == 0.02
    assert spec["optimizer"]["learning_rate"].startswith("lr_range:")  # input left alone
    assert source["source"] == "lr_range:b@abc123abc1" and source["value"] == 0.02
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"experiment": "ffffffffff", "suggested_lr": 0.5, "rule": "x"}))
    with pytest.raises(ValueError, match="of test 'ffffffffff'"):
        lr_range.resolve_learning_rate(spec, other)
    with pytest.raises(ValueError, match="Received: none"):
        lr_range.resolve_learning_rate(spec, None)
    numeric = {"optimizer": {"name": "sgd", "learning_rate": 0.1}}
    assert lr_range.resolve_learning_rate(numeric, None) == (
        numeric,
        {"value": 0.1, "source": "config"},
    )


def test_tables_show_the_learning_rate_a_range_test_gave():
    from hpstudy.analysis import shown_value

    used = {"learning_rate": {"source": "lr_range:b@abc123abc1", "value": 0.0123}}
    assert shown_value("optimizer.learning_rate", "lr_range:b@abc123abc1", used) == (
        "0.0123 (lr_range:b)"
    )
    assert shown_value("optimizer.learning_rate", 0.01, used) == "0.01"
    assert shown_value("model.hidden", [32, 16], used) == "[32, 16]"
