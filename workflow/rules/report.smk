# The single HTML report that gathers every comparison.


rule report:
    input:
        summary=report_inputs("summary.csv"),
        runs=report_inputs("runs.csv"),
        figure=report_inputs(f"curves.{FIG}"),
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
