"""Tabulate a study's runs and variants (rule aggregate_study)."""

import json
from pathlib import Path

from hpstudy import analysis, combine, cv, grid, observations
from hpstudy.io import atomic_path, redirect_output

redirect_output(snakemake.log[0])
study = json.loads(snakemake.params.study)
out_dir = Path(snakemake.output.runs).parent
if study["kind"] == "cv":  # fold runs, then the winner's refit
    runs, summary = cv.study_tables(study, snakemake.input.winner[0], out_dir)
elif study["kind"] == "lr_range":  # one range test, no training runs
    runs = summary = analysis.lr_range_table(study, snakemake.input.lr_range[0], out_dir)
else:
    runs = analysis.runs_table(study, out_dir)
    summary = analysis.summary_table(runs, study)
notes = observations.study_observations(study)
design = json.loads(snakemake.params.grid)
ranking = snakemake.input.ranking
ranking = grid.read_table(ranking[0], design) if ranking else None
anova = grid.study_anova(study, design, runs, ranking)
outputs = snakemake.output
for table, path in (
    (runs, outputs.runs),
    (summary, outputs.summary),
    (notes, outputs.observations),
    (anova, outputs.anova),
    (combine.additivity_table(runs, study), outputs.additivity),
):
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
print(summary.to_string())
