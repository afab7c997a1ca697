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

from hpstudy.config import ConfigError
from hpstudy.plan import canonical_json, load_plan

try:
    PLAN = load_plan(list(workflow.configfiles), config)
except ConfigError as exc:
    sys.exit(f"\n{exc}\n\nNothing was run.")

RES = PLAN.config["resources"]
FIG = PLAN.config["report"]["figure_format"]


wildcard_constraints:
    exp="[0-9a-f]{10}",
    run="r[0-9]+",
    prep="[0-9a-f]{8}",
    dataset="[A-Za-z0-9_][A-Za-z0-9_-]*",
    source="[a-z0-9_]+",
    study="[a-z0-9_][a-z0-9_-]*",


def data_path(prep):
    name, _ = PLAN.preps[prep]
    return f"results/data/{name}-{prep}.npz"


def get_source_npz(wildcards):
    return f"resources/datasets/{PLAN.preps[wildcards.prep][1]['source']}.npz"


def get_prep_json(wildcards):
    return canonical_json(PLAN.preps[wildcards.prep][1])


def get_run_data(wildcards):
    return data_path(PLAN.experiments[wildcards.exp].prep_id)


def get_spec_json(wildcards):
    return PLAN.experiments[wildcards.exp].json


def get_seed(wildcards):
    return PLAN.runs[f"{wildcards.exp}/{wildcards.run}"].seed


def get_study_json(wildcards):
    return canonical_json(PLAN.studies[wildcards.study].describe())


def get_study_files(name):
    def files(wildcards):
        return [f"{run.dir}/{name}" for run in PLAN.studies[wildcards.study].all_runs()]

    return files


def report_inputs(name):
    return [f"results/studies/{slug}/{name}" for slug in PLAN.report_studies()]


def get_report_json(wildcards):
    studies = [PLAN.studies[slug] for slug in PLAN.report_studies()]
    used = {v.experiment for s in studies for v in s.variants}
    return canonical_json(
        {
            "title": PLAN.config["title"],
            "studies": [s.describe() for s in studies],
            "config_files": {str(f): Path(f).read_text() for f in PLAN.files},
            "experiments": {e: PLAN.experiments[e].spec for e in sorted(used)},
        }
    )
