# One job per run: an experiment (a resolved spec, named by its hash) with a repeat.


rule train:
    input:
        data=get_run_data,
    output:
        history="results/runs/{exp}/{run}/history.csv",
        timing="results/runs/{exp}/{run}/timing.csv",
        metrics="results/runs/{exp}/{run}/metrics.json",
        model="results/runs/{exp}/{run}/model.keras",
    log:
        "results/runs/{exp}/{run}/train.log",
    benchmark:
        "results/runs/{exp}/{run}/benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    params:
        spec=get_spec_json,
        seed=get_seed,
    script:
        "../scripts/train.py"
