# Adaptive search (search studies): Optuna proposes trials in rounds; each round is a checkpoint,
# so the graph learns its trials (ordinary experiments, trained as r0 by the train rule) only
# once the earlier rounds are scored. Under successive halving (search.halving) each round's
# trials first train to the rungs' epochs (train_rung), and each rung is a checkpoint that
# promotes the best; the last ones train the full run, resuming from their rung's backup.
# select_search then ranks the trials and names those to re-test on fresh seeds (see
# hpstudy.search, and search_inputs in common.smk).


checkpoint search_round:
    input:
        previous=search_part("rounds", previous=True),
        rungs=search_part("rungs", previous=True),
        metrics=search_part("metrics", previous=True),
    output:
        "results/studies/{study}/search/round-{round}.json",
    log:
        "results/logs/studies/{study}.search_round-{round}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        request=get_search_request,
        trials=search_part("trials", previous=True),
        size=get_round_size,
    script:
        "../scripts/search_round.py"


checkpoint search_rung:
    input:
        round=get_rung_round,
        previous=get_previous_rung,
        records=get_rung_records,
    output:
        "results/studies/{study}/search/round-{round}-rung-{rung}.json",
    log:
        "results/logs/studies/{study}.search_round-{round}-rung-{rung}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        request=get_search_request,
        alive=lambda wildcards: canonical_json(rung_trials(wildcards)),
    script:
        "../scripts/search_rung.py"


# A search trial's run r0 trained up to a rung's epochs; its epoch backup (results/runs/<exp>/
# r0/backup) is kept for the next rung or the full run (`train`), which resume from it.
rule train_rung:
    input:
        data=get_trial_data,
        lr=get_lr_suggestion,
        code=get_model_files,
    output:
        "results/runs/{exp}/r0/rung-e{epochs}.json",
    log:
        "results/runs/{exp}/r0/rung-e{epochs}.log",
    benchmark:
        "results/runs/{exp}/r0/rung-e{epochs}.benchmark.tsv"
    wildcard_constraints:
        epochs="[0-9]+",
    conda:
        "../../envs/train.yaml"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=lambda wildcards, attempt: RES["runtime"] * attempt,
        gpu=RES["gpu"],
        gpu_model=RES["gpu_model"],
    params:
        spec=get_spec_json,
        seed=get_trial_seed,
    script:
        "../scripts/train_rung.py"


checkpoint select_search:
    input:
        rounds=search_part("rounds"),
        rungs=search_part("rungs"),
        metrics=search_part("metrics"),
        histories=search_part("histories"),
        stopped=search_part("stopped"),
    output:
        trials=report(
            "results/studies/{study}/search/trials.csv",
            caption="../report/search_trials.rst",
            category="Studies",
            subcategory="{study}",
            labels={"study": "{study}", "table": "search trials"},
        ),
        curves="results/studies/{study}/search/curves.csv",
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
        trials=search_part("trials"),
        retest=lambda wildcards: PLAN.studies[wildcards.study].search["retest"],
        reference=get_search_reference,
    script:
        "../scripts/select_search.py"


rule plot_search:
    input:
        trials="results/studies/{study}/search/trials.csv",
        curves="results/studies/{study}/search/curves.csv",
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
