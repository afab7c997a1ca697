# Cross-validation: rank a cv study's candidates from their fold runs. The winner is refit as
# run r0 of its experiment by the ordinary train rule; being a checkpoint, this rule lets the
# graph learn which experiment that is (see get_cv_refit in common.smk).


checkpoint select_cv:
    input:
        metrics=get_study_files("metrics.json"),
    output:
        ranking=report(
            "results/studies/{study}/cv_ranking.csv",
            caption="../report/cv_ranking.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "cv ranking"},
        ),
        winner="results/studies/{study}/cv_winner.json",
    log:
        "results/logs/studies/{study}.select_cv.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        study=get_study_json,
    script:
        "../scripts/select_cv.py"
