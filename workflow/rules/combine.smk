# Combine studies: once the ofat studies they list have their verdicts, take each one's winner.
# Being a checkpoint, this lets the graph learn the combined experiment (see resolved_study in
# common.smk); it is trained by the ordinary train rule, and is the same experiment (the same
# id, not trained again) as long as the winners stay the same.


checkpoint select_combination:
    input:
        summaries=get_combined_summaries,
    output:
        "results/studies/{study}/combination.json",
    log:
        "results/logs/studies/{study}.select_combination.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        study=get_combine_json,
    script:
        "../scripts/select_combination.py"
