"""Each observation rule on histories built for the purpose: when it fires, with which numbers,
and when it does not. The last tests check sentences against the CSV files they cite."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from helpers import cited_files

from hpstudy import observations as ob


def history(val_loss, loss=None, val_metric=None, metric="accuracy") -> pd.DataFrame:
    """A history.csv-like frame; training loss defaults to 0.8 × val loss, metric to 1 − val loss."""
    val_loss = np.asarray(val_loss, dtype=float)
    n = len(val_loss)
    loss = 0.8 * val_loss if loss is None else np.asarray(loss, dtype=float)
    val_metric = 1 - val_loss / 10 if val_metric is None else np.asarray(val_metric, dtype=float)
    return pd.DataFrame(
        {
            "epoch": np.arange(1, n + 1),
            "loss": loss,
            metric: 1 - loss / 10,
            "val_loss": val_loss,
            f"val_{metric}": val_metric,
        }
    )


def decay(n=100, start=2.0, end=0.5):
    return end + (start - end) * np.exp(-np.arange(n) / (n / 8))


def u_shape(n=100, low_at=40, low=0.5, rise=0.3):
    """Decays to `low` at epoch `low_at`, then rises linearly by `rise` (relative) at the end."""
    v = np.empty(n)
    v[:low_at] = np.linspace(2.0, low, low_at)
    v[low_at:] = low * (1 + rise * np.arange(1, n - low_at + 1) / (n - low_at))
    return v


# -- divergence --------------------------------------------------------------------------------
def test_divergence_names_first_non_finite_epoch_and_last_finite_value():
    v = np.array([2.0, 1.5, np.nan, np.nan])
    text, epoch = ob.divergence(history(v))
    assert epoch == 3
    assert text == "diverged at epoch 3 (last finite val loss 1.5 at epoch 2)"


def test_divergence_on_training_loss_alone():
    h = history([2.0, 1.5, 1.2], loss=[2.0, np.inf, 1.0])
    assert ob.divergence(h)[1] == 2


def test_divergence_does_not_fire_on_finite_history():
    assert ob.divergence(history(decay())) is None


# -- overfitting -------------------------------------------------------------------------------
def test_overfitting_finds_minimum_and_rise():
    text, rise, where = ob.overfitting(history(u_shape(100, low_at=40, rise=0.3)))
    assert "minimum 0.5 at epoch 40" in text
    assert "overfitting starts near epoch 40" in text
    assert "epochs 91–100" in text
    # mean of the last 10 epochs: 0.5 × (1 + 0.3 × mean(51..60)/60)
    expected = 0.3 * np.mean(np.arange(51, 61)) / 60
    assert rise == pytest.approx(expected)
    assert f"rises {expected:.0%}" in text
    assert where == "epochs 40, 91–100"


def test_overfitting_does_not_fire_on_decreasing_loss():
    assert ob.overfitting(history(decay())) is None


def test_overfitting_does_not_fire_on_small_rise():
    assert ob.overfitting(history(u_shape(100, low_at=40, rise=0.08))) is None


def test_overfitting_does_not_fire_when_minimum_is_in_the_final_window():
    v = decay(100)
    v[95] = 0.1  # a dip inside the last 10 epochs
    assert ob.overfitting(history(v)) is None


def test_overfitting_ignores_diverged_tail():
    v = u_shape(100, low_at=40, rise=0.5)
    v[80:] = np.nan
    text, _, _ = ob.overfitting(history(v))
    assert "epochs 73–80" in text


# -- speed -------------------------------------------------------------------------------------
def ramp(reach_at: int, top: float, n: int = 100) -> np.ndarray:
    """Accuracy rising linearly to `top` at epoch `reach_at`, then flat."""
    epochs = np.arange(1, n + 1)
    return np.minimum(top, 0.1 + (top - 0.1) * epochs / reach_at)


def test_speed_later():
    ref = history(decay(), val_metric=ramp(40, 0.9))
    var = history(decay(), val_metric=ramp(100, 0.95))
    # the variant passes 0.9 at the first epoch where 0.1 + 0.85 e/100 ≥ 0.9, that is 95
    text, ratio, where = ob.speed(var, ref, "val_accuracy", higher=True)
    assert ratio == pytest.approx(95 / 40)
    assert text == (
        "reaches the baseline's best val accuracy 0.9 at epoch 95, 2.4× later than the "
        "baseline (epoch 40)"
    )
    assert where == "epochs 95 and 40 (baseline)"


def test_speed_sooner():
    ref = history(decay(), val_metric=ramp(60, 0.9))
    var = history(decay(), val_metric=ramp(20, 0.9))
    text, ratio, _ = ob.speed(var, ref, "val_accuracy", higher=True)
    assert ratio == pytest.approx(20 / 60)
    assert "3.0× sooner" in text


def test_speed_does_not_fire_when_epochs_are_close():
    ref = history(decay(), val_metric=ramp(40, 0.9))
    var = history(decay(), val_metric=ramp(50, 0.9))
    assert ob.speed(var, ref, "val_accuracy", higher=True) is None


def test_speed_never_reaches():
    ref = history(decay(), val_metric=ramp(40, 0.9))
    var = history(decay(), val_metric=ramp(40, 0.85))
    text, ratio, _ = ob.speed(var, ref, "val_accuracy", higher=True)
    assert math.isinf(ratio)
    assert text == (
        "never reaches the baseline's best val accuracy 0.9 (epoch 40); its best is 0.85 in 100 epochs"
    )


def test_speed_lower_is_better_for_mae():
    ref = history(decay(), val_metric=10 - ramp(40, 9.0), metric="mae")  # mae falls to 1.0
    var = history(decay(), val_metric=10 - ramp(80, 9.0), metric="mae")
    text, ratio, _ = ob.speed(var, ref, "val_mae", higher=False)
    assert ratio == pytest.approx(2.0)
    assert "best val mae 1 at epoch 80, 2.0× later" in text


# -- oscillation -------------------------------------------------------------------------------
def zigzag(n=100, amplitude=0.05, level=0.5):
    return level * (1 + amplitude * (-1.0) ** np.arange(n))


def test_oscillation_index_is_zero_for_monotonic_curves():
    index, first, last = ob.oscillation_index(history(decay()))
    assert index == pytest.approx(0.0, abs=1e-12)
    assert (first, last) == (81, 100)


def test_oscillation_index_of_a_zigzag():
    # last 20 epochs of level·(1 ± a): 19 steps of 2a·level, net change 2a·level, mean = level
    index, _, _ = ob.oscillation_index(history(zigzag(100, 0.05)))
    assert index == pytest.approx((19 * 0.05 - 0.05) / (19 * 0.5))


def test_oscillation_more_than_baseline():
    ref = [history(zigzag(amplitude=0.01))]
    var = [history(zigzag(amplitude=0.031))]
    text, ratio, where = ob.oscillation(var, ref)
    assert ratio == pytest.approx(3.1, rel=0.01)
    assert text.startswith(
        "validation loss oscillates 3.1× more than the baseline over the last 20%"
    )
    assert where == "epochs 81–100"


def test_oscillation_less_than_baseline():
    text, ratio, _ = ob.oscillation(
        [history(zigzag(amplitude=0.01))], [history(zigzag(amplitude=0.04))]
    )
    assert "4.0× less" in text


def test_oscillation_against_a_smooth_baseline():
    text, ratio, _ = ob.oscillation([history(zigzag(amplitude=0.05))], [history(decay())])
    assert math.isinf(ratio)
    assert text.endswith("of its level per epoch), while the baseline's is smooth")


def test_oscillation_smooth_against_an_oscillating_baseline():
    text, ratio, _ = ob.oscillation([history(decay())], [history(zigzag(amplitude=0.05))])
    assert ratio == 0
    assert "is smooth over the last 20% of epochs" in text


def test_oscillation_needs_five_finite_epochs():
    short = history(np.r_[2.0, 1.9, 2.1, 1.8, np.full(96, np.nan)])
    assert math.isnan(ob.oscillation_index(short)[0])
    assert ob.oscillation([short], [history(zigzag(amplitude=0.05))]) is None


def test_oscillation_does_not_fire_on_similar_or_tiny_movement():
    similar = ob.oscillation([history(zigzag(amplitude=0.03))], [history(zigzag(amplitude=0.02))])
    assert similar is None
    # 10× the baseline's, but 0.04% of the level per epoch: below the floor
    tiny = ob.oscillation([history(zigzag(amplitude=0.0002))], [history(zigzag(amplitude=0.00002))])
    assert tiny is None


def test_oscillation_averages_over_repeats():
    var = [history(zigzag(amplitude=0.02)), history(zigzag(amplitude=0.04))]
    _, ratio, _ = ob.oscillation(var, [history(zigzag(amplitude=0.01))])
    assert ratio == pytest.approx(3.0, rel=0.01)


# -- gap ---------------------------------------------------------------------------------------
def test_gap_of_baseline():
    h = history(np.full(10, 0.6), loss=np.full(10, 0.2))
    text, ratio, where = ob.gap(h, None)
    assert ratio == pytest.approx(3.0)
    assert text.startswith(
        "final validation loss is 3.0× the training loss (0.6 vs 0.2 at epoch 10)"
    )
    assert where == "epoch 10"


def test_gap_of_baseline_does_not_fire_below_ratio():
    assert ob.gap(history(np.full(10, 0.3), loss=np.full(10, 0.2)), None) is None


def test_gap_against_baseline():
    ref = history(np.full(10, 0.6), loss=np.full(10, 0.2))  # gap 0.4
    wide = history(np.full(10, 1.1), loss=np.full(10, 0.1))  # gap 1.0
    narrow = history(np.full(10, 0.5), loss=np.full(10, 0.4))  # gap 0.1
    similar = history(np.full(10, 0.7), loss=np.full(10, 0.2))  # gap 0.5
    closed = history(np.full(10, 0.4), loss=np.full(10, 0.5))
    assert "gap is 1 at epoch 10, 2.5× the baseline's 0.4" in ob.gap(wide, ref)[0]
    assert "gap is 0.1 at epoch 10, 4.0× smaller than the baseline's 0.4" in ob.gap(narrow, ref)[0]
    assert ob.gap(similar, ref) is None
    assert ob.gap(closed, ref)[0].startswith("no train−val gap: final val loss 0.4 is below")


def test_gap_uses_last_finite_epoch():
    v = np.full(10, 0.6)
    v[7:] = np.nan
    text, _, where = ob.gap(history(v, loss=np.full(10, 0.2)), None)
    assert "at epoch 7" in text and where == "epoch 7"


# -- a whole study, checked against the files it cites -------------------------------------------
def study(labels, repeats=1, task="classification"):
    return {
        "name": "s",
        "task": task,
        "variants": [
            {
                "label": label,
                "is_reference": i == 0,
                "runs": [{"run": f"r{r}", "dir": f"runs/{label}/r{r}"} for r in range(repeats)],
            }
            for i, label in enumerate(labels)
        ],
    }


def write(tmp_path, s, histories):
    paths = {}
    for v in s["variants"]:
        paths[v["label"]] = []
        for run, h in zip(v["runs"], histories[v["label"]]):
            path = tmp_path / run["dir"] / "history.csv"
            path.parent.mkdir(parents=True)
            h.to_csv(path, index=False)
            paths[v["label"]].append(str(path))
    return paths


def test_observe_study_and_check_against_cited_files(tmp_path):
    s = study(["baseline", "lr=0.05", "lr=0.0001", "lr=1"])
    base = history(decay(), loss=0.9 * decay(), val_metric=ramp(40, 0.9))
    noisy = history(u_shape(100, low_at=30, rise=0.4) * (1 + 0.05 * (-1.0) ** np.arange(100)))
    slow = history(decay(), loss=0.9 * decay(), val_metric=ramp(100, 0.95))
    diverged = history(np.r_[2.0, 3.0, np.full(98, np.nan)])
    hist = {"baseline": [base], "lr=0.05": [noisy], "lr=0.0001": [slow], "lr=1": [diverged]}
    paths = write(tmp_path, s, hist)
    found = ob.observe(s, hist, paths)
    rules = {(o.variant, o.rule) for o in found}
    assert ("lr=1", "divergence") in rules
    assert ("lr=0.05", "overfitting") in rules and ("lr=0.05", "oscillation") in rules
    assert ("lr=0.0001", "speed") in rules
    assert not any(o.variant == "baseline" for o in found)  # smooth, no gap, nothing to say
    assert not any(o.rule == "overfitting" for o in found if o.variant != "lr=0.05")
    assert ("lr=1", "gap") not in rules  # no gap judged on a diverged run

    frame = ob.to_frame(s, found)
    assert list(frame.columns) == ["study", "variant", "rule", "text", "source", "value"]
    assert len(frame) == len(found)

    for o in found:
        cited = cited_files(o.source)
        assert cited and all(p in paths[o.variant] + paths["baseline"] for p in cited)
        data = pd.read_csv(cited[0])
        if o.rule == "divergence":
            epoch = int(re.search(r"epoch (\d+)", o.text).group(1))
            row = data[data["epoch"] == epoch].iloc[0]
            assert not np.isfinite(row["val_loss"])
            assert np.isfinite(data[data["epoch"] == epoch - 1]["val_loss"]).all()
        if o.rule == "overfitting":
            m = re.search(
                r"minimum (\S+) at epoch (\d+) and rises (\d+)% by epochs (\d+)–(\d+)", o.text
            )
            low, epoch, rise, first, last = m.groups()
            at = data[data["epoch"] == int(epoch)]["val_loss"].iloc[0]
            assert at == data["val_loss"].min()
            assert float(low) == pytest.approx(at, rel=1e-2)
            tail = data[data["epoch"].between(int(first), int(last))]["val_loss"].mean()
            assert round(100 * (tail / at - 1)) == int(rise)
        if o.rule == "speed":
            m = re.search(r"best val accuracy (\S+) (?:at epoch (\d+)|\(epoch)", o.text)
            target = float(m.group(1))
            assert target == pytest.approx(pd.read_csv(paths["baseline"][0])["val_accuracy"].max())
            reached = data[data["val_accuracy"] >= target - 1e-9]["epoch"]
            if o.text.startswith("never"):
                assert reached.empty
            else:
                assert reached.iloc[0] == int(m.group(2))


def test_observe_with_repeats_uses_mean_curve_and_cites_every_run(tmp_path):
    s = study(["baseline", "slow"], repeats=2)
    base = [history(decay(), val_metric=ramp(40, 0.9)), history(decay(), val_metric=ramp(40, 0.92))]
    slow = [
        history(decay(), val_metric=ramp(80, 0.91)),
        history(decay(), val_metric=ramp(100, 0.91)),
    ]
    hist = {"baseline": base, "slow": slow}
    paths = write(tmp_path, s, hist)
    (speed,) = [o for o in ob.observe(s, hist, paths) if o.rule == "speed"]
    # baseline mean curve tops at 0.91 at epoch 40; the slow mean reaches 0.91 at epoch 100
    assert "best val accuracy 0.91 at epoch 100" in speed.text
    assert speed.source.startswith(f"mean of {tmp_path}/runs/slow/{{r0,r1}}/history.csv; ")
    assert f"baseline mean of {tmp_path}/runs/baseline/{{r0,r1}}/history.csv: " in speed.source


def test_cited_files_expands_braces():
    source = "mean of r/x/{r0,r1}/history.csv; baseline r/y/r0/history.csv: epoch 3"
    assert cited_files(source) == [
        "r/x/r0/history.csv",
        "r/x/r1/history.csv",
        "r/y/r0/history.csv",
    ]


def test_sources_list_paths_that_do_not_share_a_directory():
    assert ob._files(["a/r0/history.csv", "b/r1/history.csv"]) == (
        "mean of a/r0/history.csv, b/r1/history.csv"
    )


def test_observe_without_reference_skips_comparisons():
    s = study(["a", "b"])
    s["variants"][0]["is_reference"] = False
    wobbly = decay() * (1 + 0.05 * (-1.0) ** np.arange(100))
    hist = {"a": [history(decay())], "b": [history(wobbly)]}
    assert [o.rule for o in ob.observe(s, hist) if o.rule != "not_converged"] == []


def test_every_rule_is_documented():
    assert set(ob.RULES) == {
        "divergence",
        "not_converged",
        "overfitting",
        "speed",
        "oscillation",
        "gap",
    }
    for rule in ob.RULES:
        assert f"**{rule}**" in ob.__doc__


def test_small_shares_keep_their_digits():
    """A ratio of 250× must not be shown as "0.00% vs 1.05%"."""
    assert ob.pct(0.0105) == "1.05%"
    assert ob.pct(0.0000418) == "0.0042%"
    assert ob.pct(0.0) == "0.00%"


def _history(values, column="val_accuracy"):
    n = len(values)
    return pd.DataFrame({"epoch": range(1, n + 1), "loss": [1.0] * n, "val_loss": [1.0] * n,
                         column: values})  # fmt: skip


def test_not_converged_when_most_repeats_peak_in_the_last_tenth():
    rising = _history([0.1 * k for k in range(1, 21)])  # best at epoch 20 of 20
    peaked = _history([0.5] * 5 + [0.9] + [0.5] * 14)  # best at epoch 6
    found = ob.not_converged([rising, rising, peaked], "val_accuracy", True)
    assert found is not None
    text, share, where = found
    assert "epoch 20 of 20" in text and "2 of 3 repeats" in text and share == 2 / 3
    assert ob.not_converged([rising, peaked, peaked], "val_accuracy", True) is None
    # Lower is better (MAE): the best is the minimum.
    falling = _history([20 - k for k in range(20)], "val_mae")
    assert ob.not_converged([falling], "val_mae", False) is not None
    assert ob.best_epoch_late(_history([0.2, 0.1]), "val_accuracy", True) is None  # best: epoch 1
    assert "not_converged" in ob.RULES


def test_an_observation_about_a_shared_baseline_is_stated_once():
    from hpstudy.report import state_once

    def section(slug, exp):
        note = {"variant": "baseline", "rule": "gap", "text": "val loss 14.3× training loss"}
        return {"study": {"slug": slug, "title": slug.upper()},
                "rows": [{"label": "baseline", "experiment": exp}], "observations": [note]}  # fmt: skip

    sections = [section("lr", "e1"), section("l2", "e1"), section("other", "e2")]
    state_once(sections)
    first, again, other = (s["observations"][0] for s in sections)
    assert "stated_in" not in first and "stated_in" not in other  # other runs: its own claim
    assert again["stated_in"] == {"slug": "lr", "title": "LR"} and again["rules"] == ["gap"]


def test_response_factors_and_their_points():
    from hpstudy import analysis, plan

    def variant(label, lr, bs, ref=False):
        values = {"optimizer.learning_rate": lr, "training.batch_size": bs}
        return {"label": label, "is_reference": ref, "values": values, "runs": []}

    study = {"kind": "ofat", "task": "classification",
             "varied": ["optimizer.learning_rate", "training.batch_size"],
             "variants": [variant("baseline", 0.01, 32, True), variant("lr=0.1", 0.1, 32),
                          variant("lr=0.001", 0.001, 32), variant("bs=64", 0.01, 64)]}  # fmt: skip
    assert plan.response_factors(study) == ["optimizer.learning_rate"]  # batch size: 2 values
    points = plan.response_points(study, "optimizer.learning_rate")
    assert points == [(0.001, "lr=0.001"), (0.01, "baseline"), (0.1, "lr=0.1")]
    summary = pd.DataFrame({"variant": ["baseline", "lr=0.1", "lr=0.001", "bs=64"],
                            "is_reference": [True, False, False, False],
                            "best_val_accuracy_mean": [0.9, 0.8, 0.85, 0.9],
                            "best_val_accuracy_std": [0.01, 0.02, 0.0, 0.01], "runs": [3, 3, 3, 1],
                            "verdict": [None, "worse", "no detectable difference", "single run"]})  # fmt: skip
    table = analysis.response_table(study, summary, "optimizer.learning_rate")
    base = table[table["variant"] == "baseline"].iloc[0]
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3)
    assert (base["low"], base["high"]) == pytest.approx((0.9 - half, 0.9 + half))
    study["variants"][2]["values"]["optimizer.learning_rate"] = "from the range test"
    assert plan.response_factors(study) == []  # a value that is not a number
    assert plan.response_factors({**study, "kind": "grid"}) == []
