"""Statistics: Welch and Nadeau-Bengio tests, P(better), Holm, verdicts and seeds needed."""

import ast
import gc
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

from hpstudy import statistics as st
from hpstudy.statistics import (
    ALPHA,
    Comparison,
    adjust,
    compare_folds,
    compare_runs,
    describe_method,
    holm,
    seeds_needed,
)

# Every verdict the statistics can give (the report colours and counts these).
VERDICTS = ("better", "worse", "no detectable difference", "single run")
MODULE = Path(st.__file__)


@pytest.fixture(scope="module", autouse=True)
def cheap_garbage_collection():
    """statsmodels' multipletests calls gc.collect() on every Holm adjustment, and the
    simulations below adjust a thousand studies: freezing the objects that exist already makes
    each collection cheap without changing any result."""
    gc.freeze()
    yield
    gc.unfreeze()


def simulate_study(rng, shifts, higher_is_better, repeats=5, sd=1.0):
    """One study: a baseline and one variant per shift (in sds), all normal, judged together."""
    baseline = rng.normal(0.0, sd, repeats)
    comparisons = [
        compare_runs(rng.normal(shift * sd, sd, repeats), baseline, higher_is_better, n_boot=200)
        for shift in shifts
    ]
    return adjust(comparisons, higher_is_better)


# --- calibration and power on simulated studies ---


def test_same_distribution_is_mostly_no_detectable_difference():
    rng = np.random.default_rng(20240601)
    studies = [simulate_study(rng, [0, 0, 0, 0], True) for _ in range(200)]
    verdicts = [c.verdict for study in studies for c in study]
    assert len(verdicts) == 800
    assert verdicts.count("no detectable difference") / len(verdicts) >= 0.90
    # Holm keeps the chance of any false verdict in a study near alpha (here 5% of 200 = 10)
    studies_with_false_verdict = sum(
        any(c.verdict != "no detectable difference" for c in study) for study in studies
    )
    assert studies_with_false_verdict <= 20


@pytest.mark.parametrize(
    "shift, higher_is_better, expected",
    [
        (+3, True, "better"),  # accuracy up
        (-3, True, "worse"),  # accuracy down
        (-3, False, "better"),  # MAE down
        (+3, False, "worse"),  # MAE up
    ],
)
def test_three_sd_shift_with_five_repeats_is_detected(shift, higher_is_better, expected):
    rng = np.random.default_rng(7)
    verdicts = [simulate_study(rng, [shift], higher_is_better)[0].verdict for _ in range(200)]
    assert verdicts.count(expected) / len(verdicts) >= 0.90
    opposite = {"better": "worse", "worse": "better"}[expected]
    assert verdicts.count(opposite) == 0


def test_delta_keeps_metric_units_and_sign_for_lower_is_better():
    c = compare_runs([0.2, 0.21, 0.19], [0.3, 0.31, 0.29], higher_is_better=False)
    assert c.delta_mean == pytest.approx(-0.1)
    assert c.delta_ci_low < c.delta_mean < c.delta_ci_high < 0
    assert c.prob_better == 1.0
    [judged] = adjust([c], higher_is_better=False)
    assert judged.verdict == "better"


# --- Holm ---


def test_holm_hand_checked_example():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_holm_matches_statsmodels():
    p = np.array([0.001, 0.2, 0.013, 0.04, 0.9, 0.0101, 0.5])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])


def test_holm_passes_nan_through_and_does_not_count_it():
    adjusted = holm([0.01, np.nan, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adjusted, [0.03, np.nan, 0.06, 0.06, np.nan])
    assert np.isnan(holm([np.nan, np.nan])).all()
    assert holm([]).shape == (0,)


# --- Welch ---

VARIANT = [0.912, 0.905, 0.921, 0.899, 0.917]
BASELINE = [0.893, 0.901, 0.887, 0.899, 0.885, 0.890]


def test_welch_p_and_ci_equal_scipy():
    c = compare_runs(VARIANT, BASELINE, higher_is_better=True)
    expected = stats.ttest_ind(VARIANT, BASELINE, equal_var=False)
    ci = expected.confidence_interval(0.95)
    assert c.method == "Welch t-test"
    assert c.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert (c.delta_ci_low, c.delta_ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert c.delta_mean == pytest.approx(np.mean(VARIANT) - np.mean(BASELINE))
    assert (c.n_variant, c.n_baseline) == (5, 6)
    # and not the pooled-variance t-test
    assert c.p_value != pytest.approx(stats.ttest_ind(VARIANT, BASELINE).pvalue, rel=1e-6)


def test_non_finite_scores_are_dropped_and_not_counted():
    clean = compare_runs(VARIANT, BASELINE, higher_is_better=True)
    dirty = compare_runs(VARIANT + [np.nan, np.inf], [np.nan] + BASELINE, higher_is_better=True)
    assert (dirty.n_variant, dirty.n_baseline) == (5, 6)
    assert dirty == clean


def test_single_run_on_either_side_has_no_test():
    for variant, baseline in [([0.9], [0.8, 0.85, 0.86]), ([0.8, 0.85], [0.9, np.nan])]:
        c = compare_runs(variant, baseline, higher_is_better=True)
        assert math.isnan(c.p_value)
        assert math.isnan(c.delta_ci_low) and math.isnan(c.delta_ci_high)
        assert math.isnan(c.prob_better_ci_low) and math.isnan(c.prob_better_ci_high)
        assert c.prob_better in (0.0, 1.0)  # still estimated from the pairs there are
        [judged] = adjust([c], higher_is_better=True)
        assert judged.verdict == "single run"
        assert math.isnan(judged.p_adjusted)
        assert judged.seeds_needed is None


def test_single_run_does_not_count_toward_holm():
    tested = compare_runs(VARIANT, BASELINE, higher_is_better=True)
    single = compare_runs([0.95], BASELINE, higher_is_better=True)
    judged_tested, judged_single = adjust([tested, single], higher_is_better=True)
    assert judged_tested.p_adjusted == pytest.approx(tested.p_value)
    assert judged_single.verdict == "single run"


def test_no_runs_at_all():
    c = compare_runs([np.nan], [], higher_is_better=True)
    assert (c.n_variant, c.n_baseline) == (0, 0)
    assert math.isnan(c.prob_better) and math.isnan(c.delta_mean)
    assert adjust([c], True)[0].verdict == "single run"


# --- P(better) ---


def test_prob_better_separated_and_identical_samples():
    low, high = [0.1, 0.2, 0.3], [0.7, 0.8, 0.9, 1.0]
    assert compare_runs(high, low, higher_is_better=True).prob_better == 1.0
    assert compare_runs(low, high, higher_is_better=True).prob_better == 0.0
    assert compare_runs(low, high, higher_is_better=False).prob_better == 1.0
    same = compare_runs(low, low, higher_is_better=True)
    assert same.prob_better == 0.5
    assert compare_runs([0.5, 0.5], [0.5, 0.5, 0.5], True).prob_better == 0.5


def test_prob_better_counts_ties_as_half():
    # pairs of [1, 2] against [2, 3]: 1<2, 1<3, 2=2, 2<3 -> 0.5 win out of 4 pairs
    assert compare_runs([1.0, 2.0], [2.0, 3.0], True).prob_better == pytest.approx(0.125)
    assert compare_runs([1.0, 2.0], [2.0, 3.0], False).prob_better == pytest.approx(0.875)


def test_prob_better_ci_contains_estimate_and_is_a_probability():
    rng = np.random.default_rng(3)
    for _ in range(20):
        c = compare_runs(rng.normal(0.3, 1, 6), rng.normal(0, 1, 5), True, n_boot=500, seed=1)
        assert 0.0 <= c.prob_better_ci_low <= c.prob_better <= c.prob_better_ci_high <= 1.0
        assert c.prob_better_ci_low < c.prob_better_ci_high


def test_prob_better_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(8)
    variant, baseline = rng.normal(0.2, 1, 10), rng.normal(0, 1, 10)
    a = compare_runs(variant, baseline, True, seed=11)
    b = compare_runs(variant, baseline, True, seed=11)
    c = compare_runs(variant, baseline, True, seed=12)
    assert (a.prob_better_ci_low, a.prob_better_ci_high) == (
        b.prob_better_ci_low,
        b.prob_better_ci_high,
    )
    assert (a.prob_better_ci_low, a.prob_better_ci_high) != (
        c.prob_better_ci_low,
        c.prob_better_ci_high,
    )


def test_prob_better_bootstrap_agrees_with_a_resampling_loop():
    """The vectorised bootstrap has the distribution of resampling the runs one by one."""
    variant, baseline = np.array([3.0, 1.0, 4.0, 1.5, 5.0]), np.array([2.0, 6.0, 2.5, 0.5])
    c = compare_runs(variant, baseline, True, n_boot=4000, seed=0)
    rng = np.random.default_rng(99)
    boot = []
    for _ in range(4000):
        v = rng.choice(variant, variant.size)
        b = rng.choice(baseline, baseline.size)
        boot.append(stats.mannwhitneyu(v, b).statistic / (v.size * b.size))
    low, high = np.quantile(boot, [0.025, 0.975])
    assert c.prob_better_ci_low == pytest.approx(low, abs=0.06)
    assert c.prob_better_ci_high == pytest.approx(high, abs=0.06)


# --- folds: corrected resampled paired t-test ---

CAND = [0.91, 0.88, 0.93, 0.90, 0.89]
REF = [0.89, 0.88, 0.90, 0.88, 0.90]


def test_compare_folds_matches_hand_computation():
    k = 5
    c = compare_folds(CAND, REF, higher_is_better=True, k=k)
    d = np.array(CAND) - np.array(REF)  # 0.02, 0, 0.03, 0.02, -0.01
    mean = d.mean()
    var = (1 / k + 1 / (k - 1)) * d.var(ddof=1)
    t = mean / math.sqrt(var)
    half = stats.t.ppf(0.975, k - 1) * math.sqrt(var)
    assert c.method == "corrected paired t-test (Nadeau-Bengio)"
    assert c.delta_mean == pytest.approx(0.012)
    assert c.p_value == pytest.approx(2 * stats.t.sf(abs(t), k - 1), rel=1e-12)
    assert (c.delta_ci_low, c.delta_ci_high) == pytest.approx((mean - half, mean + half))
    assert c.prob_better == pytest.approx((3 + 0.5) / 5)  # 3 wins, 1 tie, 1 loss
    assert (c.n_variant, c.n_baseline) == (5, 5)


def test_compare_folds_is_more_cautious_than_plain_paired_t_test():
    c = compare_folds(CAND, REF, higher_is_better=True, k=5)
    plain = stats.ttest_rel(CAND, REF)
    plain_ci = plain.confidence_interval(0.95)
    assert c.p_value > plain.pvalue
    assert c.delta_ci_high - c.delta_ci_low > plain_ci.high - plain_ci.low


def test_compare_folds_drops_incomplete_pairs():
    c = compare_folds(CAND + [np.nan, 0.95], REF + [0.9, np.nan], True, k=7)
    d = np.array(CAND) - np.array(REF)
    se = math.sqrt((1 / 5 + 1 / 6) * d.var(ddof=1))  # J = 5 complete pairs, k = 7
    assert (c.n_variant, c.n_baseline) == (5, 5)
    assert c.p_value == pytest.approx(2 * stats.t.sf(d.mean() / se, 4))


def test_compare_folds_rejects_unpaired_input_and_bad_k():
    with pytest.raises(ValueError):
        compare_folds([0.1, 0.2, 0.3], [0.1, 0.2], True, k=3)
    with pytest.raises(ValueError):
        compare_folds([0.1], [0.2], True, k=1)


def test_compare_folds_prob_better_direction_and_bootstrap():
    c = compare_folds(CAND, REF, higher_is_better=False, k=5, seed=4)
    assert c.prob_better == pytest.approx(1.5 / 5)
    assert 0.0 <= c.prob_better_ci_low <= c.prob_better <= c.prob_better_ci_high <= 1.0
    assert c == compare_folds(CAND, REF, higher_is_better=False, k=5, seed=4)


def test_fold_comparison_gets_no_seeds_needed():
    c = compare_folds(CAND, REF, higher_is_better=True, k=5)
    [judged] = adjust([c], higher_is_better=True)
    assert judged.verdict == "no detectable difference"
    assert judged.seeds_needed is None


# --- seeds needed ---


def test_seeds_needed_matches_statsmodels():
    delta, sd_v, sd_b, alpha = 0.01, 0.012, 0.008, 0.05 / 3
    pooled = math.sqrt((sd_v**2 + sd_b**2) / 2)
    expected = TTestIndPower().solve_power(
        effect_size=delta / pooled, alpha=alpha, power=0.8, ratio=1.0, alternative="two-sided"
    )
    assert seeds_needed(delta, sd_v, sd_b, alpha) == math.ceil(expected)
    assert seeds_needed(-delta, sd_v, sd_b, alpha) == math.ceil(expected)


def test_seeds_needed_grows_as_the_effect_shrinks():
    needed = [seeds_needed(delta, 1.0, 1.0, 0.05) for delta in (2.0, 1.0, 0.5, 0.25)]
    assert needed == sorted(needed)
    assert len(set(needed)) == 4
    assert seeds_needed(1.0, 1.0, 1.0, 0.05, power=0.9) > seeds_needed(1.0, 1.0, 1.0, 0.05)
    assert seeds_needed(1.0, 1.0, 1.0, 0.01) > seeds_needed(1.0, 1.0, 1.0, 0.05)


def test_seeds_needed_none_cap_and_floor():
    assert seeds_needed(0.0, 1.0, 1.0, 0.05) is None
    assert seeds_needed(0.1, 0.0, 0.0, 0.05) is None
    assert seeds_needed(0.1, np.nan, 1.0, 0.05) is None
    assert seeds_needed(np.nan, 1.0, 1.0, 0.05) is None
    assert seeds_needed(1e-4, 1.0, 1.0, 0.05) == 10000
    assert seeds_needed(0.03, 1.0, 1.0, 0.05) == 10000  # statsmodels: about 17,400
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert seeds_needed(50.0, 1.0, 1.0, 0.05) == 2  # a t-test needs two runs a side


def test_adjust_sets_seeds_needed_at_holms_first_step():
    rng = np.random.default_rng(5)
    baseline = rng.normal(0.0, 1.0, 5)
    comparisons = [compare_runs(rng.normal(0.3, 1.0, 5), baseline, True) for _ in range(3)]
    comparisons.append(compare_runs([1.0], baseline, True))  # single run: not a test
    judged = adjust(comparisons, higher_is_better=True)
    undecided = [c for c in judged if c.verdict == "no detectable difference"]
    assert undecided
    for c in undecided:
        expected = seeds_needed(c.delta_mean, c.variant_sd, c.baseline_sd, ALPHA / 3)
        assert c.seeds_needed == expected is not None
        assert c.seeds_needed > seeds_needed(c.delta_mean, c.variant_sd, c.baseline_sd, ALPHA)
    assert judged[-1].seeds_needed is None


# --- degenerate cases ---


def test_zero_variance_on_both_sides():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = compare_runs([0.5, 0.5, 0.5], [0.5, 0.5], True)
        apart = compare_runs([0.6, 0.6, 0.6], [0.5, 0.5], True)
        folds_same = compare_folds([0.7, 0.8, 0.9], [0.7, 0.8, 0.9], True, k=3)
        folds_apart = compare_folds([0.8, 0.9, 1.0], [0.7, 0.8, 0.9], True, k=3)
        judged = adjust([same, apart], True)
    assert (same.p_value, same.delta_ci_low, same.delta_ci_high) == (1.0, 0.0, 0.0)
    assert apart.p_value == 0.0
    assert apart.delta_ci_low == apart.delta_ci_high == apart.delta_mean == pytest.approx(0.1)
    assert judged[0].verdict == "no detectable difference" and judged[0].seeds_needed is None
    assert judged[1].verdict == "better"
    assert (folds_same.p_value, folds_same.delta_ci_low, folds_same.delta_ci_high) == (1, 0, 0)
    assert folds_apart.p_value == 0.0
    assert folds_apart.delta_ci_low == folds_apart.delta_ci_high == pytest.approx(0.1)


def test_differences_at_rounding_level_count_as_no_spread():
    # 0.1 + 0.2 != 0.3 in floating point: rounding noise is not a spread to test against
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = compare_runs([0.1 + 0.2, 0.3, 0.3], [0.3, 0.3], True)
    assert (c.p_value, c.delta_ci_low, c.delta_ci_high) == (1.0, 0.0, 0.0)
    assert (c.variant_sd, c.baseline_sd) == (0.0, 0.0)
    [judged] = adjust([c], True)
    assert judged.verdict == "no detectable difference" and judged.seeds_needed is None


def test_zero_variance_on_one_side_is_an_ordinary_welch_test():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = compare_runs([0.5, 0.5, 0.5], [0.4, 0.45, 0.47], True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss note
        expected = stats.ttest_ind([0.5, 0.5, 0.5], [0.4, 0.45, 0.47], equal_var=False)
    assert c.p_value == pytest.approx(expected.pvalue)
    assert 0 < c.p_value < 1


# --- the dataclass, the verdict vocabulary and the description ---


def test_as_dict_keys_and_prefix():
    c = adjust([compare_runs(VARIANT, BASELINE, True)], True)[0]
    d = c.as_dict("acc_")
    assert set(d) == {
        "acc_" + key
        for key in (
            "delta_mean delta_ci_low delta_ci_high delta_ci_low_adjusted delta_ci_high_adjusted "
            "p_value p_adjusted prob_better "
            "prob_better_ci_low prob_better_ci_high verdict seeds_needed n_variant n_baseline "
            "method"
        ).split()
    }
    assert d["acc_verdict"] == c.verdict and d["acc_p_adjusted"] == c.p_adjusted
    assert set(c.as_dict()) == {key.removeprefix("acc_") for key in d}


def test_comparison_is_frozen_and_defaults_to_single_run():
    c = compare_runs(VARIANT, BASELINE, True)
    assert c.verdict == "single run" and math.isnan(c.p_adjusted)
    with pytest.raises(AttributeError):
        c.verdict = "better"
    assert isinstance(c, Comparison)


def test_every_verdict_is_in_the_vocabulary():
    rng = np.random.default_rng(0)
    baseline = rng.normal(0, 1, 5)
    comparisons = [compare_runs(rng.normal(s, 1, 5), baseline, True) for s in (-5, 0, 5)]
    comparisons.append(compare_runs([0.0], baseline, True))
    verdicts = [c.verdict for c in adjust(comparisons, True)]
    assert verdicts == ["worse", "no detectable difference", "better", "single run"]
    assert set(verdicts) == set(VERDICTS)


def test_describe_method_names_the_methods_and_alpha():
    text = describe_method(0.01)
    for phrase in ("Welch", "Nadeau", "Holm", "bootstrap", "0.01", "power", "not paired"):
        assert phrase in text
    assert "\n" not in text
    assert "0.05" in describe_method()


def test_module_imports_neither_pandas_nor_keras():
    tree = ast.parse(MODULE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "contextlib", "math", "warnings", "collections"} | {
        "dataclasses",
        "numpy",
        "scipy",
        "statsmodels",
    }
    code = (
        "import sys, hpstudy.statistics; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_public_functions_are_documented_and_short():
    tree = ast.parse(MODULE.read_text())
    assert ast.get_docstring(tree) and len(ast.get_docstring(tree)) > 500
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            assert node.end_lineno - node.lineno <= 55, node.name
            if not node.name.startswith("_"):
                assert ast.get_docstring(node), node.name


# --- simultaneous intervals and the range of delta ---


def test_the_simultaneous_interval_is_welchs_at_alpha_over_m():
    rng = np.random.default_rng(3)
    groups = [rng.normal(0.5 + 0.02 * i, 0.03, 3) for i in range(4)]
    compared = [compare_runs(g, groups[0], True) for g in groups[1:]]
    for c in adjust(compared, True):
        assert c.delta_ci_low_adjusted < c.delta_ci_low < c.delta_mean < c.delta_ci_high
        assert c.delta_ci_high < c.delta_ci_high_adjusted
    # m = 3: the interval at 1 - 0.05/3, from scipy's own Welch interval at that level
    v, b = groups[1], groups[0]
    c = adjust(compared, True)[0]
    ci = stats.ttest_ind(v, b, equal_var=False).confidence_interval(1 - 0.05 / 3)
    assert (c.delta_ci_low_adjusted, c.delta_ci_high_adjusted) == pytest.approx((ci.low, ci.high))
    # One comparison: the simultaneous interval is the 95% one.
    one = adjust(compared[:1], True)[0]
    assert one.delta_ci_low_adjusted == pytest.approx(one.delta_ci_low)


@pytest.mark.parametrize("seed", range(40))
def test_an_adjusted_interval_excluding_zero_is_never_beside_no_detectable_difference(seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.5, 0.05, 3)
    compared = [compare_runs(rng.normal(0.5 + d, 0.05, 3), base, True) for d in (0.03, 0.06, 0.1)]
    for c in adjust(compared, True):
        if c.delta_ci_low_adjusted > 0 or c.delta_ci_high_adjusted < 0:
            assert c.verdict in ("better", "worse"), c


def test_intervals_stay_within_the_range_delta_can_take():
    """Two repeats of accuracy: Welch's interval reaches past 1; intersected with [-1, 1]."""
    c = adjust([compare_runs([0.95, 0.35], [0.2, 0.1], True)], True, delta_range=(-1.0, 1.0))[0]
    wide = adjust([compare_runs([0.95, 0.35], [0.2, 0.1], True)], True)[0]
    assert wide.delta_ci_high > 1 and wide.delta_ci_low < -1
    assert (c.delta_ci_low, c.delta_ci_high) == (-1.0, 1.0)
    assert c.delta_ci_high_adjusted == 1.0 and c.delta_mean == wide.delta_mean
    assert c.p_value == wide.p_value and c.verdict == wide.verdict  # the test is unchanged


def test_no_interval_for_p_better_when_every_resample_agrees():
    """3 runs a side, each variant run beats each baseline run: the percentile bootstrap would
    say [1.00, 1.00]; there is no interval, and the report counts the pairs instead."""
    from hpstudy.report import _prob

    c = adjust([compare_runs([0.9, 0.91, 0.92], [0.8, 0.81, 0.82], True)], True)[0]
    assert c.prob_better == 1.0
    assert math.isnan(c.prob_better_ci_low) and math.isnan(c.prob_better_ci_high)
    assert _prob({**c.as_dict(), "is_reference": False}) == "1.00 (9 of 9 pairs)"
    mixed = adjust([compare_runs([0.9, 0.8, 0.92], [0.85, 0.81, 0.95], True)], True)[0]
    assert mixed.prob_better_ci_low < mixed.prob_better_ci_high  # a real interval
    assert _prob({**mixed.as_dict(), "is_reference": False}).count("[") == 1
