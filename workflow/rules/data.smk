# Verified raw files, the canonical dataset files, then one split-and-scaled .npz per dataset
# and data setting. Downloads and conversions are light and need the network (or the mirror),
# which cluster nodes often lack, so they run on the submitting host.

# One rule per remote source, named download_<source>: the files differ in name and number
# (fashion_mnist has four), and each is a declared output so a deleted file is fetched again.
# The mirror (config `data_mirror`) is not a param: the files are pinned by SHA-256, so where they
# come from never changes them, and a changed param would re-download and so retrain everything.
# common.smk hands it to the jobs as HPSTUDY_DATA_MIRROR, which hpstudy.fetch.download reads.
for _source in DOWNLOADS:

    rule:
        name:
            f"download_{_source}"
        output:
            raw_files(_source),
        log:
            f"results/logs/datasets/{_source}.download.log",
        # Generated names cannot be listed in the Snakefile's `localrules:`.
        localrule: True
        conda:
            "../../envs/analysis.yaml"
        params:
            source=_source,
        script:
            "../scripts/download_dataset.py"


rule convert_dataset:
    input:
        get_raw_files,
    output:
        "resources/datasets/{source}.npz",
    log:
        "results/logs/datasets/{source}.convert.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/convert_dataset.py"


# A user's own file (source: file): named by the SHA-256 of its bytes and columns.
rule convert_file:
    input:
        get_user_files,
    output:
        "resources/datasets/file-{digest}.npz",
    log:
        "results/logs/datasets/file-{digest}.convert.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=get_user_file_spec,
    script:
        "../scripts/convert_file.py"


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
