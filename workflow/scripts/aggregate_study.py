"""Tabulate a study's runs and variants (rule aggregate_study)."""

import json
from pathlib import Path

from hpstudy import analysis
from hpstudy.io import atomic_path, redirect_output

redirect_output(snakemake.log[0])  # noqa: F821
study = json.loads(snakemake.params.study)  # noqa: F821
out_dir = Path(snakemake.output.runs).parent  # noqa: F821
runs = analysis.runs_table(study, out_dir)
summary = analysis.summary_table(runs, study)
for table, path in ((runs, snakemake.output.runs), (summary, snakemake.output.summary)):  # noqa: F821
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
print(summary.to_string())
