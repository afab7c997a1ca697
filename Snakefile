# Reproducible hyperparameter studies of Keras models.
#
#   snakemake --cores all                         # the default config
#   snakemake --cores all --configfile config/x.yaml
#   snakemake -n                                  # what would run, and why
#
# The rules only connect things; the logic lives in the `hpstudy` package (src/hpstudy).


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report.html",
