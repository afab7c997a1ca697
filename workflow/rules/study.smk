# Per study: the table of runs and variants, then the comparison figure.


rule aggregate_study:
    input:
        metrics=get_study_files("metrics.json"),
        histories=get_study_files("history.csv"),
        winner=get_cv_winner,
        refit=get_cv_refit,
        lr_range=get_study_lr_range,
        combination=get_combination,
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
    log:
        "results/logs/studies/{study}.aggregate.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        study=get_study_json,
    script:
        "../scripts/aggregate_study.py"


rule plot_study:
    input:
        runs="results/studies/{study}/runs.csv",
        histories=get_study_files("history.csv"),
        combination=get_combination,
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
