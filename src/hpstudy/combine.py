"""Combine studies: the winners of one-factor-at-a-time studies, set together, and whether their
gains add up.

No TensorFlow here. A `combine` study lists ofat studies around its own reference. Once their
tables are made, `choose` takes each one's winner: the variant marked best in its summary.csv
(the detectably better variant with the best mean; see `analysis.best_of`), or none, when no
variant beats the reference detectably. The planner then sets the winners together into one
experiment ("combined"), trained with the study's repeats beside the winners themselves, and
`additivity` asks whether the combined gain is the sum of the single gains: the contrast
combined - baseline - sum(winner - baseline), with Welch's CI (`statistics.contrast`). One-factor-
at-a-time designs cannot see interactions; this is the check that the picks work together.
"""

from __future__ import annotations

import pandas as pd

from . import statistics
from .stages import Combination, CombineRequest, StudyInfo
from .tasks import GREATER_IS_BETTER, delta_range, metric_of


def choose(study: CombineRequest, summaries: dict) -> Combination:
    """combination.json: for each listed study (in order), its winner or None.

    `study` is {"name", "combine": [{"name", "slug"}, ...]}; `summaries` maps a listed study's
    slug to its summary.csv. Only the winners are recorded, so the file changes only when one
    of them does.
    """
    winners = []
    for listed in study["combine"]:
        table = summaries[listed["slug"]]
        best = table[table["is_best"].astype(bool)]
        row = best.iloc[0] if len(best) else None
        winners.append(
            {
                "study": listed["name"],
                "slug": listed["slug"],
                "variant": None if row is None else str(row["variant"]),
                "experiment": None if row is None else str(row["experiment"]),
            }
        )
    return {"study": study["name"], "winners": winners}


def additivity(runs: pd.DataFrame, study: StudyInfo) -> dict | None:
    """Whether the winners' gains add up, on the primary metric, from a combine study's runs.csv.

    Returns None without a combined experiment (fewer than two winners). Otherwise the combined
    Δ and the sum of the single Δs (each against the reference), the contrast with its CI and
    p-value, a verdict ("the gains add up", "less than the sum", "more than the sum"), and the
    combined experiment against each single winner (Welch, Holm over the winners).
    """
    groups = _groups(runs, study)
    if groups is None:
        return None
    values, reference, winners, higher, metric = groups
    test, verdict = _contrast(groups)
    mean = {label: float(values[label].mean()) for label in values}
    gains = [mean[w] - mean[reference] for w in winners]
    against = statistics.adjust(
        [statistics.compare_runs(values["combined"], values[w], higher) for w in winners],
        higher,
        delta_range=delta_range(metric),
    )
    return {
        "combined_delta": mean["combined"] - mean[reference],
        "sum_of_gains": float(sum(gains)),
        "contrast": test,
        "verdict": verdict,
        "against_winners": [{"winner": w, **c.as_dict()} for w, c in zip(winners, against)],
    }


def gains_contrast(runs: pd.DataFrame, study: StudyInfo) -> tuple[dict | None, str] | None:
    """`additivity`'s contrast combined - reference - sum(winner - reference) and its verdict
    alone (None without a combined experiment)."""
    groups = _groups(runs, study)
    return None if groups is None else _contrast(groups)


def _contrast(groups: tuple) -> tuple[dict | None, str]:
    """The contrast and its verdict from `_groups`' scores."""
    values, reference, winners, higher, _ = groups
    samples = [values["combined"], *(values[w] for w in winners), values[reference]]
    coefficients = [1.0, *([-1.0] * len(winners)), len(winners) - 1.0]
    test = statistics.contrast(samples, coefficients)
    return test, _additive(test, higher)


def _groups(runs: pd.DataFrame, study: StudyInfo) -> tuple | None:
    """Each variant's scores, the reference, the winners (study order), direction, metric."""
    labels = [v["label"] for v in study["variants"]]
    if "combined" not in labels:
        return None
    metric = metric_of(study["task"])
    score = runs.set_index("variant")[f"best_val_{metric}"]
    values = {label: pd.to_numeric(score.loc[[label]], errors="coerce").to_numpy()
              for label in labels}  # fmt: skip
    reference = next(v["label"] for v in study["variants"] if v["is_reference"])
    winners = [label for label in labels if label not in ("combined", reference)]
    return values, reference, winners, GREATER_IS_BETTER[metric], metric


CONTRAST_FIELDS = ("estimate", "ci_low", "ci_high", "p_value", "df")
ADDITIVITY_COLUMNS = (
    "comparison", "winner", "combined_delta", "sum_of_gains", *CONTRAST_FIELDS, "verdict",
    *(f for f in statistics.COMPARISON_FIELDS if f != "verdict"),
)  # fmt: skip


def additivity_table(runs: pd.DataFrame, study: StudyInfo) -> pd.DataFrame:
    """additivity.csv: `additivity` as a table (header only for other studies, or without a
    combined experiment). Its first row, `comparison` = "additivity", holds the combined Δ, the
    sum of the single Δs and the contrast (estimate, CI, p, df, its verdict); then one row,
    "combined vs winner", per single winner: `Comparison.as_dict`'s fields (Holm over winners).
    """
    found = additivity(runs, study) if study["kind"] == "combine" else None
    if found is None:
        return pd.DataFrame(columns=list(ADDITIVITY_COLUMNS))
    test = found["contrast"] or {}
    rows = [{
        "comparison": "additivity",
        "combined_delta": found["combined_delta"],
        "sum_of_gains": found["sum_of_gains"],
        **{key: test.get(key) for key in CONTRAST_FIELDS},
        "verdict": found["verdict"],
    }]  # fmt: skip
    rows += [{"comparison": "combined vs winner", **a} for a in found["against_winners"]]
    return pd.DataFrame(rows, columns=list(ADDITIVITY_COLUMNS))


def _additive(test: dict | None, higher: bool) -> str:
    if test is None:
        return "single run"
    if test["p_value"] >= statistics.ALPHA:
        return "the gains add up (no detectable departure from their sum)"
    more = test["estimate"] > 0 if higher else test["estimate"] < 0
    return (
        "more than the sum of the single gains" if more else "less than the sum of the single gains"
    )
