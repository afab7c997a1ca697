# Adaptive search (search studies): Optuna proposes trials in rounds; each round is a checkpoint,
# so the graph learns its trials (ordinary experiments, trained as r0 by the train rules) only
# once the earlier rounds are scored. select_search then ranks the trials and names those to
# re-test on fresh seeds (see hpstudy.search and get_search_study in common.smk).


checkpoint search_round:
    input:
        previous=get_previous_rounds,
        metrics=get_previous_trial_metrics,
    output:
        "results/studies/{study}/search/round-{round}.json",
    log:
        "results/logs/studies/{study}.search_round-{round}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        request=get_search_request,
        trials=get_previous_trials,
        size=get_round_size,
    script:
        "../scripts/search_round.py"


checkpoint select_search:
    input:
        rounds=get_search_rounds,
        metrics=get_search_trial_metrics,
    output:
        trials=report(
            "results/studies/{study}/search/trials.csv",
            caption="../report/search_trials.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "search trials"},
        ),
        retest="results/studies/{study}/search/retest.json",
    log:
        "results/logs/studies/{study}.select_search.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        request=get_search_request,
        # The round sizes, known without the checkpoints: a changed budget reruns this job
        # (Snakemake does not re-evaluate a finished job's checkpoint-dependent inputs).
        rounds=lambda wildcards: PLAN.studies[wildcards.study].search["rounds"],
        trials=get_search_trials,
        retest=lambda wildcards: PLAN.studies[wildcards.study].search["retest"],
        reference=get_search_reference,
    script:
        "../scripts/select_search.py"


rule plot_search:
    input:
        trials="results/studies/{study}/search/trials.csv",
        retest="results/studies/{study}/search/retest.json",
    output:
        figure=report(
            f"results/studies/{{study}}/search.{FIG}",
            caption="../report/search.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "figure": "search"},
        ),
        importance="results/studies/{study}/search/importance.csv",
    log:
        "results/logs/studies/{study}.plot_search.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        request=get_search_request,
        title=lambda wildcards: PLAN.studies[wildcards.study].title,
    script:
        "../scripts/plot_search.py"
