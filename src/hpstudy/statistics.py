"""Statistics: verdicts on the per-run scores of a study.

No TensorFlow and no pandas here: numpy, scipy.stats and statsmodels only.

**Variants trained with repeated seeds.** Every variant of a study is trained R times, repeat k
of every variant with the same seed. A variant is compared with its baseline by **Welch's
unequal-variance t-test** (Welch 1947; `scipy.stats.ttest_ind(equal_var=False)`), which gives the
two-sided p-value and the 95% confidence interval of the difference of the mean scores (variant
minus baseline, in the units of the metric). The runs are *not* paired by seed: a variant that
changes the architecture, the batch size or anything else that consumes the random stream
differently does not get the same initial weights or the same batches as the baseline, so sharing
a seed does not make two runs alike in general. Pairing would cost degrees of freedom (n - 1
instead of about 2n - 2) for a correlation that is absent for most factors, and Welch's test stays
valid, only conservative, under the positive correlation a shared seed can bring. Colas, Sigaud
and Oudeyer (2018, "How many random seeds?") recommend Welch's test for comparing learning
algorithms over seeds.

**Folds of a cross-validation.** Candidates scored by k-fold cross-validation are paired by fold
(fold i of every candidate holds out the same rows) and compared by the **corrected resampled
paired t-test** of Nadeau and Bengio (2003), as evaluated by Bouckaert and Frank (2004): with
d_i the difference of the scores in fold i, the variance of the mean difference is
(1/J + n_test/n_train) * s_d^2 instead of s_d^2 / J, where J is the number of paired folds and
n_test/n_train = 1/(k - 1) for k-fold CV; t = mean(d) / sqrt(that variance) has J - 1 degrees of
freedom. The training sets of different folds share (k - 2)/(k - 1) of their rows, so the fold
scores are positively correlated and the plain paired t-test underestimates the variance: it finds
differences that are not there far more often than its nominal level.

**Probability of improvement.** Beside the difference of means, each comparison reports
P(variant > baseline): the probability that one run of the variant beats one run of the baseline
in the metric's better direction (higher accuracy, lower MAE), ties counting 1/2. It is the
Mann-Whitney U statistic divided by n*m, as in rliable (Agarwal et al. 2021, "Deep reinforcement
learning at the edge of the statistical precipice"); its 95% interval is a percentile bootstrap
that resamples the runs of each side independently (stratified bootstrap). For folds it is the
fraction of folds the candidate wins, with a bootstrap over folds.

**Multiple comparisons and verdicts.** The p-values of the comparisons of one study form one
family and are adjusted by the **Holm-Bonferroni** step-down method (Holm 1979), which keeps the
probability of any false "better" or "worse" within the study at most alpha (0.05 by default).
A comparison with fewer than two finite runs on either side has no test and the verdict
"single run". Otherwise an adjusted p-value below alpha gives "better" or "worse", by the sign of
the difference and the metric's direction, and anything else "no detectable difference" (which is
not evidence of equality). For the latter, the report gives the number of repeats per side that a
two-sample t-test would need to detect the observed difference with 80% power at the observed
spread (statsmodels' `TTestIndPower`), at level alpha/m for a family of m tests (Holm's first,
strictest step, so the number is on the safe side); it is capped at 10000.

Scores that are NaN or infinite (missing or diverged runs) are dropped before anything is computed,
and n counts only the finite ones. When neither side varies (beyond floating-point rounding) the
difference is exact: p = 1 with CI [0, 0] if it is zero, else p = 0 with CI [delta, delta].
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower
from statsmodels.tools.sm_exceptions import ConvergenceWarning

ALPHA = 0.05
SEEDS_NEEDED_CAP = 10000
WELCH = "Welch t-test"
NADEAU_BENGIO = "corrected paired t-test (Nadeau-Bengio)"

_NAN = float("nan")
# The fields of a comparison that its tables and the report show (`Comparison.as_dict`).
COMPARISON_FIELDS = (
    "delta_mean",
    "delta_ci_low",
    "delta_ci_high",
    "delta_ci_low_adjusted",
    "delta_ci_high_adjusted",
    "p_value",
    "p_adjusted",
    "prob_better",
    "prob_better_ci_low",
    "prob_better_ci_high",
    "verdict",
    "seeds_needed",
    "n_variant",
    "n_baseline",
    "method",
)


@dataclass(frozen=True)
class Comparison:
    """One variant (or candidate) against its baseline (or reference) on one metric.

    `delta_*` are in the metric's units, variant minus baseline (sign not flipped for metrics
    where lower is better); `prob_better` follows the metric's better direction. `p_adjusted`,
    `verdict` and `seeds_needed` are filled by `adjust`. `variant_sd` and `baseline_sd` are the
    sample standard deviations of the finite scores (NaN with fewer than two, 0 when they differ
    by floating-point rounding only), kept so that `adjust` can compute `seeds_needed`.
    """

    n_variant: int
    n_baseline: int
    variant_mean: float
    baseline_mean: float
    delta_mean: float
    delta_ci_low: float
    delta_ci_high: float
    p_value: float
    prob_better: float
    prob_better_ci_low: float
    prob_better_ci_high: float
    method: str
    p_adjusted: float = _NAN
    verdict: str = "single run"
    seeds_needed: int | None = None
    variant_sd: float = _NAN
    baseline_sd: float = _NAN
    # The simultaneous interval over the study's m comparisons (`adjust`), and what makes it:
    # the test's standard error and degrees of freedom (0 and inf for an exact difference).
    delta_ci_low_adjusted: float = _NAN
    delta_ci_high_adjusted: float = _NAN
    se: float = _NAN
    df: float = _NAN

    @staticmethod
    def fields(prefix: str = "") -> tuple[str, ...]:
        """The keys of `as_dict(prefix)`, in order (the columns of summary.csv)."""
        return tuple(prefix + key for key in COMPARISON_FIELDS)

    def as_dict(self, prefix: str = "") -> dict:
        """The reported fields (delta, CIs, p-values, P(better), verdict, ...), keys prefixed."""
        return {prefix + key: getattr(self, key) for key in COMPARISON_FIELDS}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the numerical warnings of numpy, scipy and statsmodels inside the block."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _finite(values) -> np.ndarray:
    """The finite entries of `values`, as a flat float array."""
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else _NAN


def _rounding(scale: float) -> float:
    """Differences up to this size are floating-point rounding of numbers of size `scale`."""
    return 8 * float(np.finfo(float).eps) * scale


def _constant(x: np.ndarray) -> bool:
    """Whether `x` does not vary beyond floating-point rounding."""
    return bool(np.ptp(x) <= _rounding(float(np.max(np.abs(x)))))


def _sd(x: np.ndarray) -> float:
    """Sample standard deviation: NaN below two values, 0 if they differ by rounding only."""
    if x.size < 2:
        return _NAN
    return 0.0 if _constant(x) else float(np.std(x, ddof=1))


def _exact(delta: float, scale: float) -> tuple[float, float, float]:
    """p-value and CI of a difference measured without any spread: it is exact."""
    if abs(delta) <= _rounding(scale):
        return 1.0, 0.0, 0.0
    return 0.0, delta, delta


def _welch(variant: np.ndarray, baseline: np.ndarray) -> tuple[float, ...]:
    """Two-sided p-value, 95% CI, standard error and degrees of freedom of
    mean(variant) - mean(baseline) by Welch's t-test."""
    if variant.size < 2 or baseline.size < 2:
        return _NAN, _NAN, _NAN, _NAN, _NAN
    if _constant(variant) and _constant(baseline):
        scale = float(max(np.max(np.abs(variant)), np.max(np.abs(baseline))))
        return (*_exact(float(np.mean(variant) - np.mean(baseline)), scale), 0.0, math.inf)
    with _quiet():
        result = stats.ttest_ind(variant, baseline, equal_var=False)
        ci = result.confidence_interval(0.95)
    se = math.sqrt(
        np.var(variant, ddof=1) / variant.size + np.var(baseline, ddof=1) / baseline.size
    )
    return float(result.pvalue), float(ci.low), float(ci.high), se, float(result.df)


def _percentile_ci(boot: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of a bootstrap, or NaN when it has no width: every resample
    of a few runs that all win (or all lose) gives the same value, and [1.00, 1.00] from 3 runs
    a side would claim a certainty the runs cannot give."""
    low, high = np.quantile(boot, [0.025, 0.975])
    if low == high:
        return _NAN, _NAN
    return float(low), float(high)


def _resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) counts of each item in n_boot resamples of n items with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def _prob_better_runs(
    variant: np.ndarray, baseline: np.ndarray, higher_is_better: bool, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """P(a variant run beats a baseline run), ties 1/2, with a stratified bootstrap 95% CI."""
    n, m = variant.size, baseline.size
    if n == 0 or m == 0:
        return _NAN, _NAN, _NAN
    better, worse = (variant, baseline) if higher_is_better else (baseline, variant)
    with _quiet():
        u = stats.mannwhitneyu(better, worse).statistic
    prob = float(u) / (n * m)
    if n < 2 or m < 2:
        return prob, _NAN, _NAN
    diff = variant[:, None] - baseline[None, :]
    if not higher_is_better:
        diff = -diff
    wins = (diff > 0) + 0.5 * (diff == 0)  # wins[i, j]: variant run i against baseline run j
    rng = np.random.default_rng(seed)
    counts_v = _resample_counts(n, n_boot, rng)
    counts_b = _resample_counts(m, n_boot, rng)
    boot = np.einsum("ri,ij,rj->r", counts_v, wins, counts_b) / (n * m)
    return (prob, *_percentile_ci(boot))


def compare_runs(
    variant, baseline, higher_is_better: bool, *, n_boot: int = 2000, seed: int = 0
) -> Comparison:
    """Compare the repeated runs of a variant with those of its baseline on one metric.

    Takes the scores of the variant's runs and of the baseline's runs (NaN and infinite scores
    are dropped), whether higher scores are better, the number of bootstrap resamples and the
    bootstrap's seed. Returns a `Comparison` (verdict "single run" until `adjust` judges it).

    The test is Welch's unpaired t-test, not a paired one: runs with the same repeat index share
    a seed, but a variant that changes the architecture, batch size or anything else that
    consumes the random stream differently does not get the same initial weights or batches, so
    a shared seed does not make runs alike in general. Pairing would cost degrees of freedom
    (n - 1 instead of about 2n - 2) for a correlation absent for most factors, and Welch's test
    stays valid (conservative) under the positive correlation a shared seed can bring; Colas et
    al. (2018) recommend it. With fewer than two finite runs on either side the p-value and the
    CIs are NaN. When neither side varies (beyond floating-point rounding), the difference is
    exact: p = 1 and CI [0, 0] if the means are equal, else p = 0 and CI [delta, delta]. P(better) is the Mann-Whitney U / (n*m)
    with a percentile bootstrap CI resampling each side independently (deterministic for `seed`).
    """
    v, b = _finite(variant), _finite(baseline)
    p_value, ci_low, ci_high, se, df = _welch(v, b)
    prob, prob_low, prob_high = _prob_better_runs(v, b, higher_is_better, n_boot, seed)
    return Comparison(
        n_variant=int(v.size),
        n_baseline=int(b.size),
        variant_mean=_mean(v),
        baseline_mean=_mean(b),
        delta_mean=_mean(v) - _mean(b),
        delta_ci_low=ci_low,
        delta_ci_high=ci_high,
        p_value=p_value,
        prob_better=prob,
        prob_better_ci_low=prob_low,
        prob_better_ci_high=prob_high,
        method=WELCH,
        variant_sd=_sd(v),
        baseline_sd=_sd(b),
        se=se,
        df=df,
    )


def _paired_finite(candidate, reference) -> tuple[np.ndarray, np.ndarray]:
    """The fold scores of both sides with every pair that has a non-finite side dropped."""
    c = np.asarray(candidate, dtype=float).ravel()
    r = np.asarray(reference, dtype=float).ravel()
    if c.shape != r.shape:
        raise ValueError(f"fold scores are paired: got {c.size} and {r.size} scores")
    keep = np.isfinite(c) & np.isfinite(r)
    return c[keep], r[keep]


def _nadeau_bengio(d: np.ndarray, k: int) -> tuple[float, ...]:
    """Two-sided p-value, 95% CI, standard error and degrees of freedom of mean(d) by the
    corrected resampled paired t-test."""
    n = d.size
    if n < 2:
        return _NAN, _NAN, _NAN, _NAN, _NAN
    mean = float(np.mean(d))
    if _constant(d):
        return (*_exact(mean, float(np.max(np.abs(d)))), 0.0, math.inf)
    se = math.sqrt((1.0 / n + 1.0 / (k - 1)) * float(np.var(d, ddof=1)))
    p_value = 2.0 * float(stats.t.sf(abs(mean) / se, n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return p_value, mean - half, mean + half, se, float(n - 1)


def _prob_better_folds(
    d: np.ndarray, higher_is_better: bool, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """Fraction of folds won (ties 1/2) with a bootstrap 95% CI resampling whole folds."""
    if d.size == 0:
        return _NAN, _NAN, _NAN
    signed = d if higher_is_better else -d
    wins = (signed > 0) + 0.5 * (signed == 0)
    prob = float(np.mean(wins))
    if d.size < 2:
        return prob, _NAN, _NAN
    counts = _resample_counts(d.size, n_boot, np.random.default_rng(seed))
    return (prob, *_percentile_ci(counts @ wins / d.size))


def compare_folds(
    candidate, reference, higher_is_better: bool, *, k: int, n_boot: int = 2000, seed: int = 0
) -> Comparison:
    """Compare two candidates scored by the same k-fold cross-validation, paired by fold.

    Takes the candidate's and the reference's scores in fold 0, 1, ... (same length; a pair
    with a NaN on either side is dropped), whether higher is better, the number of folds `k` of
    the cross-validation, and the bootstrap's size and seed. Returns a `Comparison` whose n's
    are the number of complete pairs J.

    The test is the corrected resampled paired t-test of Nadeau and Bengio (2003), as in
    Bouckaert and Frank (2004): with d_i = candidate_i - reference_i, the variance of mean(d) is
    (1/J + n_test/n_train) * s_d^2 with n_test/n_train = 1/(k - 1), and t has J - 1 degrees of
    freedom (J = k when no fold is missing). The folds' training sets overlap, so the fold
    differences are positively correlated and the plain paired t-test (variance s_d^2 / J) is
    anti-conservative. When d does not vary the difference is exact (p = 1 and CI [0, 0] if it
    is 0, else p = 0 and CI [d, d]). P(better) is the fraction of folds the candidate wins
    (ties 1/2), with a percentile bootstrap CI resampling folds.
    """
    if k < 2:
        raise ValueError(f"a k-fold cross-validation needs k >= 2, got k={k}")
    c, r = _paired_finite(candidate, reference)
    d = c - r
    p_value, ci_low, ci_high, se, df = _nadeau_bengio(d, k)
    prob, prob_low, prob_high = _prob_better_folds(d, higher_is_better, n_boot, seed)
    return Comparison(
        n_variant=int(c.size),
        n_baseline=int(r.size),
        variant_mean=_mean(c),
        baseline_mean=_mean(r),
        delta_mean=_mean(d),
        delta_ci_low=ci_low,
        delta_ci_high=ci_high,
        p_value=p_value,
        prob_better=prob,
        prob_better_ci_low=prob_low,
        prob_better_ci_high=prob_high,
        method=NADEAU_BENGIO,
        variant_sd=_sd(c),
        baseline_sd=_sd(r),
        se=se,
        df=df,
    )


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of one family of tests, in the input's order.

    Takes p-values (NaN for comparisons without a test) and returns an array of the same shape:
    NaN entries stay NaN and do not count toward the number of tests. The adjustment is
    statsmodels' `multipletests(method="holm")`.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, _NAN)
    tested = ~np.isnan(p)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return adjusted


def seeds_needed(
    delta: float, sd_variant: float, sd_baseline: float, alpha: float, power: float = 0.8
) -> int | None:
    """Repeats per side a two-sample t-test needs to detect `delta` with probability `power`.

    Takes the difference of means, the two sample standard deviations (pooled as
    sqrt((sd_variant^2 + sd_baseline^2) / 2), the pooled sd of two equal-size samples), the
    two-sided level `alpha` and the power. Returns statsmodels' `TTestIndPower().solve_power`
    for the effect size |delta| / pooled sd, rounded up and capped at SEEDS_NEEDED_CAP (10000):
    beyond that the difference is too small to chase with seeds. Large effects, for which
    statsmodels' noncentral t fails, are settled by checking the power of 2, 3, ... runs (its
    upper tail, a lower bound), so the answer is never below what is needed.
    Returns None when delta is 0 or not finite, or the pooled sd is 0 or not finite.
    """
    pooled = math.sqrt((sd_variant**2 + sd_baseline**2) / 2.0)
    if not math.isfinite(delta) or delta == 0 or not math.isfinite(pooled) or pooled == 0:
        return None
    effect = abs(delta) / pooled
    z = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
    if 2.0 * (z / effect) ** 2 > SEEDS_NEEDED_CAP:  # the normal approximation is a lower bound
        return SEEDS_NEEDED_CAP
    if _power_lower_bound(effect, 2, alpha) >= power:
        return 2
    with _quiet():
        n = TTestIndPower().solve_power(
            effect_size=effect, alpha=alpha, power=power, ratio=1.0, alternative="two-sided"
        )
    n = float(np.asarray(n).ravel()[0])
    needed = max(math.ceil(n), 3) if math.isfinite(n) else 3
    # for large effects statsmodels' noncentral t gives NaN and the solver NaN or its bound 2
    while needed < SEEDS_NEEDED_CAP and _power_lower_bound(effect, needed, alpha) < power:
        needed += 1
    return min(needed, SEEDS_NEEDED_CAP)


def _power_lower_bound(effect: float, n: int, alpha: float) -> float:
    """Upper tail of the power of a two-sided two-sample t-test with n runs a side.

    The lower tail (a significant result in the wrong direction) is left out, so this is a
    lower bound of the power, short of it by less than alpha/2.
    """
    df = 2 * n - 2
    with _quiet():
        return float(stats.nct.sf(stats.t.isf(alpha / 2.0, df), df, effect * math.sqrt(n / 2.0)))


def _judge(
    comparison: Comparison,
    p_adjusted: float,
    higher_is_better: bool,
    alpha: float,
    power: float,
    m: int,
) -> Comparison:
    """The comparison with its adjusted p-value, verdict and (if undecided) seeds needed."""
    c = comparison
    if c.n_variant < 2 or c.n_baseline < 2 or math.isnan(p_adjusted):
        return replace(c, p_adjusted=p_adjusted, verdict="single run", seeds_needed=None)
    if p_adjusted < alpha:
        verdict = "better" if (c.delta_mean > 0) == higher_is_better else "worse"
        return replace(c, p_adjusted=p_adjusted, verdict=verdict, seeds_needed=None)
    needed = None
    if "Nadeau" not in c.method:  # folds are not seeds: more of them is not a remedy
        needed = seeds_needed(c.delta_mean, c.variant_sd, c.baseline_sd, alpha / m, power)
    return replace(
        c, p_adjusted=p_adjusted, verdict="no detectable difference", seeds_needed=needed
    )


def simultaneous(c: Comparison, m: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The interval of Δ at level 1 - alpha/m (Bonferroni): with the other m - 1 intervals of
    the study it covers every true Δ at once with probability at least 1 - alpha. It excludes 0
    only if p < alpha/m, and then Holm's adjusted p is below alpha too, so an adjusted interval
    that excludes 0 never sits beside "no detectable difference"."""
    if m < 1 or not math.isfinite(c.se) or not c.df > 0:
        return _NAN, _NAN
    if c.se == 0.0:  # exact: the 95% interval is already the point (or [0, 0])
        return c.delta_ci_low, c.delta_ci_high
    half = float(stats.t.isf(alpha / (2.0 * m), c.df)) * c.se
    return c.delta_mean - half, c.delta_mean + half


def within(c: Comparison, delta_range: tuple[float, float] | None) -> Comparison:
    """The comparison with its intervals of Δ intersected with the range Δ can take (for a
    metric in [0, 1], [-1, 1]). The true Δ lies in that range, so the intersection covers it
    whenever the interval does: the coverage is kept and the interval only loses what no Δ
    can be (a t interval from 2 repeats can reach past 1)."""
    if delta_range is None:
        return c
    low, high = delta_range

    def clip(x: float) -> float:
        """`x` moved into [low, high] (NaN stays NaN)."""
        return x if not math.isfinite(x) else min(max(x, low), high)

    return replace(
        c,
        delta_ci_low=clip(c.delta_ci_low),
        delta_ci_high=clip(c.delta_ci_high),
        delta_ci_low_adjusted=clip(c.delta_ci_low_adjusted),
        delta_ci_high_adjusted=clip(c.delta_ci_high_adjusted),
    )


def shown_interval(rec: dict, prefix: str = "") -> tuple:
    """The interval shown beside a verdict: the simultaneous one (1 - alpha/m, as the verdict is
    adjusted over the study's m comparisons), or the 95% one where there is no other."""
    low = rec.get(f"{prefix}delta_ci_low_adjusted")
    if low is not None and isinstance(low, float) and math.isfinite(low):
        return low, rec.get(f"{prefix}delta_ci_high_adjusted")
    return rec.get(f"{prefix}delta_ci_low"), rec.get(f"{prefix}delta_ci_high")


def adjust(
    comparisons: list[Comparison],
    higher_is_better: bool,
    alpha: float = ALPHA,
    power: float = 0.8,
    delta_range: tuple[float, float] | None = None,
) -> list[Comparison]:
    """Holm-adjust the comparisons of one study (one family) and give each its verdict.

    Takes the study's comparisons on one metric, whether higher is better, the level `alpha`
    and the power for `seeds_needed`. Returns new `Comparison`s, in the same order, with
    `p_adjusted` and `verdict` set: "single run" with fewer than two finite runs on either side;
    else "better" or "worse" (by the sign of delta_mean and the metric's direction) if the Holm
    adjusted p-value is below alpha; else "no detectable difference", with `seeds_needed` the
    repeats per side that would detect the observed difference at level alpha/m (m tests in the
    family) with `power` (None for fold comparisons, whose folds are not seeds). Each also gets
    its simultaneous interval (`simultaneous`), and every interval of Δ is intersected with
    `delta_range`, the range Δ can take, when given (`within`).
    """
    adjusted = holm([c.p_value for c in comparisons])
    m = int(np.count_nonzero(~np.isnan(adjusted)))
    judged = []
    for c, p in zip(comparisons, adjusted):
        low, high = simultaneous(c, m, alpha)
        c = replace(c, delta_ci_low_adjusted=low, delta_ci_high_adjusted=high)
        judged.append(within(_judge(c, float(p), higher_is_better, alpha, power, m), delta_range))
    return judged


def describe_method(alpha: float = ALPHA) -> str:
    """One paragraph of plain text describing the tests, intervals and verdicts at `alpha`."""
    return (
        "Each variant is compared with its baseline by Welch's unequal-variance t-test on the "
        "finite scores of its runs (missing or diverged runs are left out). The runs are not "
        "paired by seed: a variant that changes the architecture, the batch size or anything "
        "else that consumes the random stream differently does not start from the same weights "
        "or see the same batches, so pairing would spend degrees of freedom on a correlation "
        "that is mostly absent, and Welch's test stays valid (conservative) if a shared seed "
        "does make runs alike. Candidates of a k-fold cross-validation are paired by fold and "
        "compared by the corrected resampled paired t-test of Nadeau and Bengio (2003), whose "
        "variance (1/k + 1/(k-1)) s^2 accounts for the overlap of the folds' training sets. "
        "Delta is the variant's mean minus the baseline's, with its 95% confidence interval from "
        "the same test, and the interval the report shows beside the verdict is the simultaneous "
        "one: at level 1 - alpha/m (Bonferroni, m comparisons in the study), so that the m "
        "intervals together cover every true Delta with probability at least 95%. It excludes 0 "
        "only when the difference is also detected by Holm's method, which is never less "
        "powerful (Holm may detect a difference whose simultaneous interval still touches 0). "
        "For a metric bounded in [0, 1] (accuracy) the intervals are intersected with [-1, 1], "
        "the values Delta can take, which keeps their coverage. P(better) is the probability that a run of the variant beats a run of "
        "the baseline in the metric's better direction (ties count 1/2; the Mann-Whitney U "
        "divided by the number of pairs, as in rliable), with a 95% percentile bootstrap "
        "interval that resamples each side independently (none when every resample gives the same "
        "value, as when each of a few runs beats each of the other side's: the report then "
        "counts the pairs won). Within each study the p-values are "
        f"adjusted by the Holm-Bonferroni method, and a difference is called better or worse "
        f"when its adjusted p-value is below alpha = {alpha:g}; otherwise it is no detectable "
        "difference, which is not evidence of equality, and a variant with fewer than two "
        "finite runs on either side is a single run that is not tested. For a difference not "
        "detected, 'seeds needed' is the number of runs per side with which a two-sample t-test "
        f"at level {alpha:g}/m (m tests in the study) would detect the observed difference with "
        "80% power at the observed spread (capped at 10000)."
    )


def contrast(groups: Sequence, coefficients: Sequence[float], alpha: float = ALPHA) -> dict | None:
    """A linear contrast of independent group means, sum(c_g * mean_g), with Welch's t.

    Its standard error is sqrt(sum(c_g^2 s_g^2 / n_g)) and its degrees of freedom those of
    Welch and Satterthwaite; returns {"estimate", "ci_low", "ci_high", "p_value", "df"}, or
    None when a group has fewer than two finite values. Used for additivity: combined - baseline
    - sum(winner - baseline) is the contrast (+1, -1 per winner, k - 1 for the baseline).
    """
    data = [_finite(g) for g in groups]
    if any(len(g) < 2 for g in data):
        return None
    c = np.asarray(coefficients, dtype=float)
    means = np.array([g.mean() for g in data])
    terms = np.array([ci**2 * g.var(ddof=1) / len(g) for ci, g in zip(c, data)])
    estimate, se = float(c @ means), float(np.sqrt(terms.sum()))
    if se == 0:
        p = 1.0 if estimate == 0 else 0.0
        return {"estimate": estimate, "ci_low": estimate, "ci_high": estimate, "p_value": p,
                "df": math.inf}  # fmt: skip
    df = float(terms.sum() ** 2 / sum(t**2 / (len(g) - 1) for t, g in zip(terms, data) if t))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return {"estimate": estimate, "ci_low": estimate - half, "ci_high": estimate + half,
            "p_value": p, "df": df}  # fmt: skip
