# The single HTML report that gathers every comparison.


rule report:
    input:
        summary=report_inputs("summary.csv"),
        runs=report_inputs("runs.csv"),
        figure=report_inputs(f"curves.{FIG}"),
        observations=report_inputs("observations.csv"),
        anova=report_grid_inputs("anova.csv"),
        additivity=report_inputs("additivity.csv"),
        grid_figure=report_grid_inputs(f"grid.{FIG}"),
        response=report_response_inputs(),
        overview=f"results/overview/effects.{FIG}",
        combinations=get_report_combinations,
        searches=get_report_searches,
        cv_ranking=report_cv_inputs(),
        lr_range_runs=[f"results/studies/{s}/runs.csv" for s in PLAN.report_lr_ranges()],
        lr_range_suggestion=report_lr_range_inputs("suggestion.json"),
        lr_range_figure=report_lr_range_inputs(f"lr_range.{FIG}"),
        search_trials=report_search_inputs("search/trials.csv"),
        search_importance=report_search_inputs("search/importance.csv"),
        search_figure=report_search_inputs(f"search.{FIG}"),
    output:
        "results/report.html",
    log:
        "results/logs/report.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        report=get_report_json,
    script:
        "../scripts/report.py"


# Across studies: each variant's best validation metric against its study's baseline.
rule overview:
    input:
        summary=report_inputs("summary.csv"),
        combinations=get_report_combinations,
        searches=get_report_searches,
    output:
        effects=report(
            "results/overview/effects.csv",
            caption="../report/effects.rst",
            category="Overview",
            labels={"table": "effects"},
        ),
        figure=report(
            f"results/overview/effects.{FIG}",
            caption="../report/effects.rst",
            category="Overview",
            labels={"figure": "effects"},
        ),
    log:
        "results/logs/overview.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        studies=get_overview_json,
    script:
        "../scripts/overview.py"


# What each experiment id stands for (hpstudy.catalog): results/experiments.json and an
# experiment.json in each experiment's folder. Reruns when a study or variant is renamed.
rule catalog:
    output:
        "results/experiments.json",
    log:
        "results/logs/catalog.log",
    priority: 100
    conda:
        "../../envs/analysis.yaml"
    params:
        catalog=get_catalog_json,
    script:
        "../scripts/catalog.py"
