# Learning-rate range tests: one job per lr_range study's reference, then its figure.


rule lr_range:
    input:
        data=get_lr_range_data,
        code=get_lr_range_model_files,
    output:
        csv="results/lr_range/{lrr}/lr_range.csv",
        suggestion="results/lr_range/{lrr}/suggestion.json",
    log:
        "results/lr_range/{lrr}/lr_range.log",
    benchmark:
        "results/lr_range/{lrr}/benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=lambda wildcards, attempt: RES["runtime"] * attempt,
        gpu=RES["gpu"],
        gpu_model=RES["gpu_model"],
    params:
        spec=get_lr_range_json,
    script:
        "../scripts/lr_range.py"


rule plot_lr_range:
    input:
        csv="results/lr_range/{lrr}/lr_range.csv",
        suggestion="results/lr_range/{lrr}/suggestion.json",
    output:
        report(
            f"results/lr_range/{{lrr}}/lr_range.{FIG}",
            caption="../report/lr_range.rst",
            category="Learning-rate range tests",
            labels={"test": "{lrr}", "figure": "loss against learning rate"},
        ),
    log:
        "results/lr_range/{lrr}/plot.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/plot_lr_range.py"
