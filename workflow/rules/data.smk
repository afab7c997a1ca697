# Canonical dataset files, then one split-and-scaled .npz per dataset and data setting.


rule convert_dataset:
    output:
        "resources/datasets/{source}.npz",
    log:
        "results/logs/datasets/{source}.convert.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        raw_dir=lambda wildcards: f"resources/datasets/{wildcards.source}",
    script:
        "../scripts/convert_dataset.py"


rule prepare:
    input:
        get_source_npz,
    output:
        "results/data/{dataset}-{prep}.npz",
    log:
        "results/logs/prepare/{dataset}-{prep}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        data=get_prep_json,
    script:
        "../scripts/prepare.py"
