# Reproducible hyperparameter studies of Keras models.
#
#   snakemake --cores all                         # the default config
#   snakemake --cores all --configfile config/x.yaml
#   snakemake -n                                  # what would run, and why
#
# The rules only connect things; the logic lives in the `hpstudy` package (src/hpstudy).


import sys

import yaml
from snakemake.utils import min_version

min_version("9.0")


# The default config only when no --configfile is given: Snakemake would otherwise merge the
# two, planning the default's studies next to those of the file asked for.
if not workflow.overwrite_configfiles:
    # Snakemake's own parser would say only "not valid JSON or YAML": name the line and column.
    try:
        with open("config/config.yaml") as fh:
            yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        sys.exit(
            f"\nConfig file config/config.yaml is not valid YAML:\n{exc}\n\nNothing was run."
        )
    except OSError:
        pass  # missing: Snakemake's configfile directive says so

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/cv.smk"
include: "workflow/rules/combine.smk"
include: "workflow/rules/lr_range.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/report.smk"


# A rule that trains asks for what every training job asks for (common.smk, TRAINING_RULES).
for _rule in workflow.rules:
    if str(_rule.conda_env or "").endswith("envs/train.yaml") and (
        _rule.name not in TRAINING_RULES
    ):
        sys.exit(
            f"Rule {_rule.name} trains (conda env envs/train.yaml) but is not in TRAINING_RULES "
            "(workflow/rules/common.smk): it would miss the GPU and resources of training jobs."
        )


# Light jobs stay on the machine that runs Snakemake, also under a cluster profile
# (profiles/slurm): only training goes to the cluster.
localrules:
    all,
    convert_dataset,
    prepare,
    aggregate_study,
    plot_study,
    plot_grid,
    plot_response,
    overview,
    select_cv,
    select_combination,
    search_round,
    search_rung,
    select_search,
    plot_search,
    plot_lr_range,
    report,
    catalog,


rule all:
    default_target: True
    input:
        "results/report.html",
        "results/experiments.json",
