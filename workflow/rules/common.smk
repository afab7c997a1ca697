# Load and validate the config once, plan every experiment, and expose small get_* functions.
import json
import os
import sys
from pathlib import Path

# The package is importable by every job: locally, in a SLURM job (which re-reads this file)
# and in a conda env, without installing it.
_SRC = str(Path(workflow.basedir) / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.getenv("PYTHONPATH", "")) if p)
)

from snakemake.resources import Resources

from hpstudy import catalog
from hpstudy.config import ConfigError
from hpstudy.datasets import raw_paths
from hpstudy.groups import group_dir, read_record
from hpstudy.ids import canonical_json, fused_label, fused_rule_name
from hpstudy.plan import load_plan, lr_range_of, trained_with
from hpstudy.search import rung_record
from hpstudy.userdata import canonical_name
from hpstudy.usermodel import file_paths

try:
    PLAN = load_plan(list(workflow.configfiles), config)
except ConfigError as exc:
    sys.exit(f"\n{exc}\n\nNothing was run.")

# A combine study's winners, when an earlier run chose them, and a search study's trials and
# re-test, when earlier rounds proposed them (for jobs on cluster nodes too).
PLAN.load_combinations()
PLAN.load_searches()

RES = PLAN.config["resources"]
FIG = PLAN.config["report"]["figure_format"]

# Experiment -> its fused jobs, each the runs it trains together (Plan.fused_jobs), and the
# groups that train runs of several experiments together (hpstudy.groups): what is finished
# keeps the job that trained it, so raising `repeats` trains only the new repeats and a
# changed experiment trains only its own runs.
FUSED_JOBS, GROUP_JOBS = PLAN.training_jobs(
    lambda exp, run: trained_with(f"results/runs/{exp}/{run}"), read_record
)
# Each distinct set of runs has its own fused rule (train_<R>_repeats for r0..r<R-1>, train_r3_r4).
FUSED_RULES = {
    runs: fused_rule_name(runs)
    for runs in sorted({runs for jobs in FUSED_JOBS.values() for runs in jobs})
}
# The rules that train. Each asks for the config's `resources:`, then for what a profile or
# --set-resources sets for `train`: a profile cannot name the rules the config creates
# (train_5_repeats), so `train` is the one place for all of them. The Snakefile refuses a rule
# that trains (conda env envs/train.yaml) and is missing here.
TRAINING_RULES = [
    "train",
    "train_rung",
    "lr_range",
    *FUSED_RULES.values(),
    *(g.rule for g in GROUP_JOBS),
]


def inherit_training_resources(rules):
    """Apply the `train` entries of --set-resources (or a profile's set-resources) to `rules`.

    A rule's own entries win. Snakemake applies these overrides by rule name when it defines a
    rule, so this must run before the rules are defined. Explicit values are taken as they are:
    unlike the config's per-run `resources.mem_mb` and `runtime`, they are not scaled for a
    fused job's towers. `_parsed_overwrite_resources` is Snakemake's own (pinned in
    pyproject.toml); tests/test_profiles.py fails if it stops working.
    """
    overrides = workflow.resource_settings._parsed_overwrite_resources
    if "train" not in overrides:
        return
    for name in rules:
        merged = Resources()
        merged.update(overrides["train"])
        merged.update(overrides.get(name, Resources()))
        overrides[name] = merged


inherit_training_resources(TRAINING_RULES)


wildcard_constraints:
    exp="[0-9a-f]{10}",
    run="r[0-9]+|f[0-9]+of[0-9]+",
    lrr="[0-9a-f]{10}",
    prep="[0-9a-f]{8}",
    dataset="[A-Za-z0-9_][A-Za-z0-9_-]*",
    source="[a-z0-9_]+",
    digest="[0-9a-f]{16}",
    study="[a-z0-9_][a-z0-9_-]*",
    round="[0-9]+",
    rung="[0-9]+",


def data_path(prep):
    name, _ = PLAN.preps[prep]
    return f"results/data/{name}-{prep}.npz"


def get_source_npz(wildcards):
    return f"resources/datasets/{canonical_name(PLAN.preps[wildcards.prep][1])}.npz"


# Users' own files, by the name of the canonical .npz each converts to: the dataset, its spec.
USER_FILES = PLAN.user_files()


def get_user_files(wildcards):
    """The user's file and test file, ancient(): touching one retrains nothing (its SHA-256,
    in the params, decides), and an edited one has a new name and so a job of its own.
    """
    ds = PLAN.config["datasets"][USER_FILES[f"file-{wildcards.digest}"][0]]
    return [ancient(ds[key]) for key in ("path", "test_path") if key in ds]


def get_user_file_spec(wildcards):
    name, data = USER_FILES[f"file-{wildcards.digest}"]
    return {"dataset": name, "task": data["task"], "file": data["file"]}


def raw_files(source):
    """The verified raw files of a source (none for the bundled ones), in its own directory."""
    return [str(p) for p in raw_paths(source, f"resources/datasets/{source}")]


def get_raw_files(wildcards):
    return raw_files(wildcards.source)


# Sources of the config's datasets that are fetched from the network (one download rule each).
DOWNLOADS = PLAN.downloads()
# Where the download jobs fetch from (see data.smk for why this is not a param).
if PLAN.config["data_mirror"]:
    os.environ.update(HPSTUDY_DATA_MIRROR=PLAN.config["data_mirror"])


def get_prep_json(wildcards):
    return canonical_json(PLAN.preps[wildcards.prep][1])


def run_data(run):
    """The run's prepared split: its own (repeats_vary: split, repeat > 0) or its experiment's."""
    return data_path(run.prep or PLAN.experiments[run.experiment].prep_id)


def get_run_data(wildcards):
    return run_data(PLAN.find_run(wildcards.exp, wildcards.run))


# A run's outputs, as (name, extension): the `train` rule's and each fused rule's.
RUN_OUTPUTS = [
    ("history", "csv"),
    ("timing", "csv"),
    ("metrics", "json"),
    ("model", "keras"),
]


def fused_experiments(runs):
    """The experiments with a fused job that trains exactly `runs`."""
    return sorted(exp for exp, jobs in FUSED_JOBS.items() if runs in jobs)


def fused_runs(exp, runs):
    return [PLAN.find_run(exp, name) for name in runs]


def get_repeats_data(runs):
    """Input function: the prepared data of each of `runs` of a fused experiment, in order."""
    return lambda wildcards: [run_data(run) for run in fused_runs(wildcards.exp, runs)]


def get_repeat_seeds(runs):
    return lambda wildcards: [run.seed for run in fused_runs(wildcards.exp, runs)]


def get_repeats_mem_mb(runs):
    return lambda wildcards: PLAN.fused_mem_mb(wildcards.exp, len(runs))


def get_repeats_runtime(runs):
    return lambda wildcards, attempt: PLAN.fused_runtime(len(runs), attempt)


def model_files(spec):
    """A user model's file and helper files, ancient(): touching one retrains nothing (their
    SHA-256, in the spec, decides), and an edited one is a new experiment with jobs of its own.
    """
    if spec["model"]["kind"] != "python":
        return []
    return [ancient(path) for path in file_paths(spec["model"])]


def get_model_files(wildcards):
    return model_files(PLAN.experiments[wildcards.exp].spec)


def get_lr_range_model_files(wildcards):
    return model_files(PLAN.lr_ranges[wildcards.lrr].spec)


def get_spec_json(wildcards):
    return PLAN.experiments[wildcards.exp].json


def get_seed(wildcards):
    return PLAN.find_run(wildcards.exp, wildcards.run).seed


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def resolved_study(slug):
    """The study `slug`; a combine study with its winners and their combination, a search study
    with its re-tested trials, once chosen (until then, Snakemake's checkpoint makes the asking
    job wait for select_combination or select_search).
    """
    study = PLAN.studies[slug]
    if study.kind == "combine":
        chosen = checkpoints.select_combination.get(study=slug).output[0]
        PLAN.add_combination(slug, read_json(chosen))
    if study.kind == "search":
        PLAN.add_search_retest(
            slug, read_json(checkpoints.select_search.get(study=slug).output.retest)
        )
    return study


def get_study_json(wildcards):
    return canonical_json(resolved_study(wildcards.study).describe())


def get_combination(wildcards):
    """A combine study's combination.json (an input of the jobs whose params it changes)."""
    if PLAN.studies[wildcards.study].kind != "combine":
        return []
    return [checkpoints.select_combination.get(study=wildcards.study).output[0]]


def get_search_retest(wildcards):
    """A search study's retest.json (an input of the jobs whose params it changes)."""
    if PLAN.studies[wildcards.study].kind != "search":
        return []
    return [checkpoints.select_search.get(study=wildcards.study).output.retest]


def get_report_combinations(wildcards):
    return [
        checkpoints.select_combination.get(study=s).output[0]
        for s in PLAN.report_studies("combine")
    ]


def get_report_searches(wildcards):
    return [
        checkpoints.select_search.get(study=s).output.retest
        for s in PLAN.report_studies("search")
    ]


def get_combined_summaries(wildcards):
    """The summary.csv of each ofat study a combine study lists (their verdicts)."""
    return [
        f"results/studies/{s}/summary.csv"
        for s in PLAN.studies[wildcards.study].combine
    ]


def get_combine_json(wildcards):
    study = PLAN.studies[wildcards.study]
    listed = [{"name": PLAN.studies[s].name, "slug": s} for s in study.combine]
    return canonical_json({"name": study.name, "combine": listed})


def get_study_files(name):
    def files(wildcards):
        return [
            f"{run.dir}/{name}" for run in resolved_study(wildcards.study).all_runs()
        ]

    return files


# Adaptive search (search studies) -----------------------------------------------------------


def search_inputs(wildcards, k=None):
    """What a job that scores the trials of rounds 0..k-1 (all by default) reads (see
    Plan.search_inputs). It is read from the round and rung files written so far, not through a
    checkpoint's get(): a job that lists a missing one waits for it, and Snakemake evaluates
    its inputs again once that checkpoint has run (get() would not: Snakemake does not rerun a
    finished job whose checkpoint-dependent input is pending)."""
    return PLAN.search_inputs(wildcards.study, k)


def get_search_request(wildcards):
    return canonical_json(PLAN.studies[wildcards.study].search["request"])


def get_round_size(wildcards):
    return PLAN.studies[wildcards.study].search["rounds"][int(wildcards.round)]


def search_part(name, previous=False):
    """`name` of `search_inputs`, of the rounds before this one (`previous`) or of all."""

    def part(wildcards):
        found = search_inputs(wildcards, int(wildcards.round) if previous else None)
        return canonical_json(found[name]) if name == "trials" else found[name]

    return part


def get_rung_round(wildcards):
    return PLAN.search_round_file(wildcards.study, int(wildcards.round))


def get_previous_rung(wildcards):
    k, j = int(wildcards.round), int(wildcards.rung)
    return [PLAN.search_rung_file(wildcards.study, k, j - 1)] if j else []


def rung_trials(wildcards):
    return PLAN.rung_trials(wildcards.study, int(wildcards.round), int(wildcards.rung))


def get_rung_epochs(wildcards):
    request = PLAN.studies[wildcards.study].search["request"]
    return request["halving"]["rungs"][int(wildcards.rung)]


def get_rung_records(wildcards):
    epochs = get_rung_epochs(wildcards)
    return sorted({rung_record(exp, epochs) for exp in rung_trials(wildcards).values()})


def get_trial_data(wildcards):
    return run_data(PLAN.find_run(wildcards.exp, "r0"))


def get_trial_seed(wildcards):
    return PLAN.find_run(wildcards.exp, "r0").seed


def get_search_reference(wildcards):
    return PLAN.reference_experiment(wildcards.study)


def report_search_inputs(name):
    """`name` of each search study the report shows, in report order."""
    return [f"results/studies/{s}/{name}" for s in PLAN.report_studies("search")]


def report_inputs(name):
    return [f"results/studies/{slug}/{name}" for slug in PLAN.report_studies()]


def get_overview_json(wildcards):
    return canonical_json(
        [resolved_study(slug).describe() for slug in PLAN.report_studies()]
    )


def get_catalog_json(wildcards):
    return canonical_json(catalog.build(PLAN))


def get_report_json(wildcards):
    studies = [resolved_study(slug) for slug in PLAN.report_studies()]
    return canonical_json(PLAN.report_description(studies))


# Cross-validation (cv studies) and learning-rate range tests (lr_range studies) ------------


def get_lr_suggestion(wildcards):
    """The range test's suggestion.json when the run's learning rate is "lr_range:<baseline>"."""
    test = lr_range_of(PLAN.experiments[wildcards.exp].spec)
    return [f"{PLAN.lr_ranges[test].dir}/suggestion.json"] if test else []


def get_lr_range_data(wildcards):
    return data_path(PLAN.lr_ranges[wildcards.lrr].prep_id)


def get_lr_range_json(wildcards):
    return PLAN.lr_ranges[wildcards.lrr].json


def get_cv_winner(wildcards):
    if PLAN.studies[wildcards.study].kind != "cv":
        return []
    return [checkpoints.select_cv.get(study=wildcards.study).output.winner]


def get_cv_refit(wildcards):
    """The winner's refit (run r0 of its experiment), known once select_cv has run."""
    if PLAN.studies[wildcards.study].kind != "cv":
        return []
    winner = checkpoints.select_cv.get(study=wildcards.study).output.winner
    exp = PLAN.refit_experiment(wildcards.study, winner)
    return [f"results/runs/{exp}/r0/{name}" for name in ("metrics.json", "history.csv")]


def get_study_lr_range(wildcards):
    test = PLAN.studies[wildcards.study].lr_range
    return [f"{PLAN.lr_ranges[test].dir}/suggestion.json"] if test else []


def report_cv_inputs():
    return [f"results/studies/{s}/cv_ranking.csv" for s in PLAN.report_studies("cv")]


def report_lr_range_inputs(name):
    """`name` of the test of each lr_range study the report shows, in report order."""
    tests = [PLAN.lr_ranges[PLAN.studies[s].lr_range] for s in PLAN.report_lr_ranges()]
    return [f"{test.dir}/{name}" for test in tests]


# Grid analysis (grid studies, and the candidate grid of cv studies) --------------------------


def get_study_grid(wildcards):
    return canonical_json(PLAN.grid_design(wildcards.study))


def get_cv_ranking(wildcards):
    if PLAN.studies[wildcards.study].kind != "cv":
        return []
    return [checkpoints.select_cv.get(study=wildcards.study).output.ranking]


def report_response_inputs():
    return [
        f"results/studies/{s}/response.{FIG}" for s in PLAN.report_response_studies()
    ]


def report_grid_inputs(name):
    """`name` of each study the report shows that has a grid, in report order."""
    return [f"results/studies/{s}/{name}" for s in PLAN.report_grid_studies()]
