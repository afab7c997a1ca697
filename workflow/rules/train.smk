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


# Repeats of an experiment trained together (execution.fuse_repeats, hpstudy.fused): one job
# writes the outputs of its runs, the same files as one `train` job per run would. One rule per
# set of runs (FUSED_RULES: r0..r<R-1>, or the repeats added since), since a rule's outputs are
# fixed; each takes only the experiments with a job of exactly those runs.
for _runs, _name in FUSED_RULES.items():

    rule:
        name:
            _name
        input:
            data=get_repeats_data(_runs),
            lr=get_lr_suggestion,
            code=get_model_files,
        output:
            **{
                name: [f"results/runs/{{exp}}/{run}/{name}.{ext}" for run in _runs]
                for name, ext in RUN_OUTPUTS
            },
        log:
            f"results/runs/{{exp}}/train-{fused_label(_runs)}.log",
        benchmark:
            f"results/runs/{{exp}}/train-{fused_label(_runs)}.benchmark.tsv"
        wildcard_constraints:
            exp="|".join(fused_experiments(_runs)),
        conda:
            "../../envs/train.yaml"
        threads: RES["threads"]
        resources:
            mem_mb=get_repeats_mem_mb(_runs),
            runtime=get_repeats_runtime(_runs),
            gpu=RES["gpu"],
            gpu_model=RES["gpu_model"],
        params:
            spec=get_spec_json,
            seeds=get_repeat_seeds(_runs),
        script:
            "../scripts/train_repeats.py"

    # A fused job's runs come from it, never from `train`.
    workflow.ruleorder(_name, "train")


# Runs of several experiments trained together (execution.fuse_experiments, hpstudy.groups):
# one rule per group, its outputs the runs' own files. A kept group (its runs finished) is
# rebuilt from its record with the same params and inputs, so none of its runs reruns.
for _group in GROUP_JOBS:

    rule:
        name:
            _group.rule
        input:
            data=list(_group.data),
            code=[ancient(path) for path in _group.code],
        output:
            **{
                name: [
                    f"results/runs/{member}/{name}.{ext}" for member in _group.outputs
                ]
                for name, ext in RUN_OUTPUTS
            },
            record=[_group.record] if _group.new else [],
        log:
            f"{group_dir(_group.name)}/train.log",
        benchmark:
            f"{group_dir(_group.name)}/benchmark.tsv"
        conda:
            "../../envs/train.yaml"
        threads: RES["threads"]
        resources:
            mem_mb=PLAN.group_mem_mb(_group),
            runtime=get_repeats_runtime(_group.members),
            gpu=RES["gpu"],
            gpu_model=RES["gpu_model"],
        params:
            job=_group.params,
            name=_group.name,
            record=canonical_json(_group.to_record()),
        script:
            "../scripts/train_group.py"

    # A group's runs come from it, never from `train`.
    workflow.ruleorder(_group.rule, "train")
