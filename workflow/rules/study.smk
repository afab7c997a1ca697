# Per study: the table of runs and variants, then the comparison figure.


rule aggregate_study:
    input:
        metrics=get_study_files("metrics.json"),
        histories=get_study_files("history.csv"),
        winner=get_cv_winner,
        refit=get_cv_refit,
        lr_range=get_study_lr_range,
        combination=get_combination,
        retest=get_search_retest,
        ranking=get_cv_ranking,
    output:
        runs=report(
            "results/studies/{study}/runs.csv",
            caption="../report/runs.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "runs"},
        ),
        summary=report(
            "results/studies/{study}/summary.csv",
            caption="../report/summary.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "summary"},
        ),
        observations=report(
            "results/studies/{study}/observations.csv",
            caption="../report/observations.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "observations"},
        ),
        anova=report(
            "results/studies/{study}/anova.csv",
            caption="../report/anova.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "anova"},
        ),
        additivity=report(
            "results/studies/{study}/additivity.csv",
            caption="../report/additivity.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "additivity"},
        ),
    log:
        "results/logs/studies/{study}.aggregate.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        study=get_study_json,
        grid=get_study_grid,
    script:
        "../scripts/aggregate_study.py"


rule plot_study:
    input:
        runs="results/studies/{study}/runs.csv",
        histories=get_study_files("history.csv"),
        combination=get_combination,
        retest=get_search_retest,
    output:
        report(
            f"results/studies/{{study}}/curves.{FIG}",
            caption="../report/curves.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "figure": "curves"},
        ),
    log:
        "results/logs/studies/{study}.plot.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        study=get_study_json,
    script:
        "../scripts/plot_study.py"


# The best validation metric against each numeric factor's value (studies with a numeric factor of
# three or more values; the report asks for it only for those).
rule plot_response:
    input:
        summary="results/studies/{study}/summary.csv",
    output:
        f"results/studies/{{study}}/response.{FIG}",
    log:
        "results/logs/studies/{study}.response.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        study=get_study_json,
    script:
        "../scripts/plot_response.py"


# A grid's main effects, interactions and parallel coordinates (grid studies, and cv studies with
# a grid); the report asks for it only for those.
rule plot_grid:
    input:
        runs="results/studies/{study}/runs.csv",
        ranking=get_cv_ranking,
    output:
        report(
            f"results/studies/{{study}}/grid.{FIG}",
            caption="../report/grid.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "figure": "grid"},
        ),
    log:
        "results/logs/studies/{study}.plot_grid.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        study=get_study_json,
        grid=get_study_grid,
    script:
        "../scripts/plot_grid.py"
