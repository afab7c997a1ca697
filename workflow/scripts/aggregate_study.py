"""Tabulate a study's runs and variants (rule aggregate_study)."""

import json
from pathlib import Path

from hpstudy import analysis, cv, lr_range, observations
from hpstudy.io import atomic_path, redirect_output

redirect_output(snakemake.log[0])  # noqa: F821
study = json.loads(snakemake.params.study)  # noqa: F821
out_dir = Path(snakemake.output.runs).parent  # noqa: F821
if study["kind"] == "cv":  # fold runs, then the winner's refit
    runs, summary = cv.study_tables(study, snakemake.input.winner[0], out_dir)  # noqa: F821
elif study["kind"] == "lr_range":  # one range test, no training runs
    runs = summary = lr_range.study_table(study, snakemake.input.lr_range[0], out_dir)  # noqa: F821
else:
    runs = analysis.runs_table(study, out_dir)
    summary = analysis.summary_table(runs, study)
notes = observations.study_observations(study)
outputs = snakemake.output  # noqa: F821
for table, path in (
    (runs, outputs.runs),
    (summary, outputs.summary),
    (notes, outputs.observations),
):
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
print(summary.to_string())
