"""What the plan hands to the stages: the typed contract between planning and every job after it.

`plan.Study.describe()` is a `StudyInfo`, `Plan.grid_design` a `GridDesign`, `Plan.lr_range_views`
`LRRangeView`s, `combine.choose` a `Combination` and `search.make_request` a `SearchRequest`. They are TypedDicts, not classes, because
they cross a process boundary as JSON (a rule's params): a job reads back exactly what the plan
wrote, and the analysis, grid, cv, combine, observations, figures and report modules take them
with these types. `tests/test_plan.py` checks that every kind of study describes itself with
exactly these keys. No imports of the package here: every stage can import this module.
"""

from __future__ import annotations

from typing import Any, TypedDict


class _RunRequired(TypedDict):
    run: str  # r0, r1, ... or f<i>of<k> for a cv fold
    repeat: int | None
    seed: int
    split_seed: int | None
    dir: str  # results/runs/<experiment>/<run>


class RunInfo(_RunRequired, total=False):
    """One run of a variant; a cv fold also says which fold of how many."""

    fold: int
    folds: int


class VariantInfo(TypedDict):
    """One compared setting of a study: its experiment, the values it varies, its runs."""

    label: str
    experiment: str
    values: dict[str, Any]  # dotted path -> value, for every path the study varies
    is_reference: bool
    runs: list[RunInfo]


class Winner(TypedDict):
    """A listed study's winner in a combine study (None: no variant beat its reference)."""

    study: str
    slug: str
    variant: str | None
    experiment: str | None


class CombineRequest(TypedDict):
    """What select_combination asks: the combine study and the studies it lists."""

    name: str
    combine: list[dict[str, str]]  # {"name", "slug"} of each listed study


class Combination(TypedDict):
    """combination.json: the winners a combine study sets together."""

    study: str
    winners: list[Winner]


class SearchHalving(TypedDict):
    """Successive halving within each round of a search (`search.make_request`)."""

    rungs: list[int]  # the epochs at which a round's trials are compared, below `epochs`
    eta: int  # each rung keeps the best 1/eta (at least one)
    epochs: int  # the full budget: the reference's epochs


class SearchRequest(TypedDict):
    """What a search's proposals depend on (`search.make_request`): its round jobs' params."""

    study: str
    space: list[list[Any]]  # [dotted path, {low, high, log} or {choices}, + when], in order
    sampler: str  # tpe, random or qmc
    seed: int
    startup_trials: int
    metric: str  # the score: best validation value of this metric
    direction: str  # maximize or minimize
    reference: dict[str, Any]  # the reference's values of the paths `when` reads
    halving: SearchHalving | None  # None: every trial trains the full budget


class SearchTrial(TypedDict):
    """A trial of a round file (`search.propose`), and, once planned, its experiment."""

    trial: int
    params: dict[str, Any]


class Retested(TypedDict):
    """A re-tested trial (retest.json, `search.retest_choice`)."""

    trial: int
    experiment: str
    params: dict[str, Any]
    search_score: float


class SearchInfo(TypedDict):
    """A search study's search, as its jobs and the report receive it."""

    request: SearchRequest
    rounds: list[int]  # the size of each round
    retest: int  # how many of the best trials are re-tested on fresh seeds
    trials: dict[str, str]  # trial number (as a string: JSON keys) -> experiment id, once planned
    retested: list[Retested]  # once chosen


class _StudyRequired(TypedDict):
    name: str
    slug: str
    kind: str  # ofat, grid, cv, combine, lr_range, search
    title: str
    description: str
    baseline: str
    task: str  # classification or regression
    varied: list[str]  # dotted paths the study varies
    variants: list[VariantInfo]


class StudyInfo(_StudyRequired, total=False):
    """A study as the aggregation, figure and report jobs receive it (`Study.describe()`)."""

    cv: int  # k of a cv study
    lr_range: str  # the id of an lr_range study's test
    combine: list[str]  # a combine study: the slugs of the studies it combines
    combination: Combination  # ... and their winners, once chosen
    search: SearchInfo  # a search study's request, trials and re-tested trials


class LRRangeView(StudyInfo):
    """An lr_range study for the report: its test's spec and who uses its suggestion."""

    spec: dict[str, Any]
    used_by: list[dict[str, str]]  # {"study", "variant", "experiment"}


class GridDesign(TypedDict):
    """A study's grid as the plan expands it (`Plan.grid_design`): factors in config order;
    cells `[label, [value of each factor], experiment]`, the experiment the cell resolved to."""

    factors: list[str]
    cells: list[list[Any]]
