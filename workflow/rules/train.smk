# One job per run: an experiment (a resolved spec, named by its hash) with a repeat.
from hpstudy import devices

# Where local training jobs find GPUs (hpstudy.devices). Through the environment, not params:
# which card a run used does not change its results, so it must not trigger a rerun.
devices.export_settings(RES["gpu_ids"], RES["jobs_per_gpu"])


rule train:
    input:
        data=get_run_data,
        lr=get_lr_suggestion,
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
        # minutes; each retry (--retries, the profiles' `retries`) gets one more base runtime
        runtime=lambda wildcards, attempt: RES["runtime"] * attempt,
        gpu=RES["gpu"],
        gpu_model=RES["gpu_model"],
    params:
        spec=get_spec_json,
        seed=get_seed,
        tensorboard=PLAN.config["logging"]["tensorboard"],
    script:
        "../scripts/train.py"
