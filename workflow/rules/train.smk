# One job per run: an experiment (a resolved spec, named by its hash) with a repeat.
from hpstudy import devices

# Where local training jobs find GPUs (hpstudy.devices). Through the environment, not params:
# which card a run used does not change its results, so it must not trigger a rerun.
devices.export_settings(RES["gpu_ids"], RES["jobs_per_gpu"])


rule train:
    input:
        data=get_run_data,
        lr=get_lr_suggestion,
        code=get_model_files,
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


# The repeats of an experiment trained together (execution.fuse_repeats, hpstudy.fused): one job
# writes the outputs of runs r0..r<R-1>, the same files as R `train` jobs would. One rule per R,
# since a rule's outputs are fixed; each takes only the experiments with R repeats (FUSED).
for _r in sorted(set(FUSED.values())):

    rule:
        name:
            f"train_{_r}_repeats"
        input:
            data=get_repeats_data,
            lr=get_lr_suggestion,
            code=get_model_files,
        output:
            **{
                name: [f"results/runs/{{exp}}/r{k}/{name}.{ext}" for k in range(_r)]
                for name, ext in RUN_OUTPUTS
            },
        log:
            f"results/runs/{{exp}}/train-{_r}-repeats.log",
        benchmark:
            f"results/runs/{{exp}}/train-{_r}-repeats.benchmark.tsv"
        wildcard_constraints:
            exp="|".join(sorted(e for e, n in FUSED.items() if n == _r)),
        conda:
            "../../envs/train.yaml"
        threads: RES["threads"]
        resources:
            mem_mb=get_repeats_mem_mb,
            runtime=get_repeats_runtime,
            gpu=RES["gpu"],
            gpu_model=RES["gpu_model"],
        params:
            spec=get_spec_json,
            seeds=get_repeat_seeds,
        script:
            "../scripts/train_repeats.py"

    # A fused experiment's runs come from its fused job, never from `train`.
    workflow.ruleorder(f"train_{_r}_repeats", "train")
