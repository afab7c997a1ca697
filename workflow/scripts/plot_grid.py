"""Draw a grid or cv study's grid analysis (rule plot_grid)."""

import json

from hpstudy import figures, grid
from hpstudy.io import redirect_output
from hpstudy.tasks import GREATER_IS_BETTER, metric_of

redirect_output(snakemake.log[0])
study = json.loads(snakemake.params.study)
design = json.loads(snakemake.params.grid)
ranking = snakemake.input.ranking
ranking = grid.read_table(ranking[0], design) if ranking else None
runs = grid.read_table(snakemake.input.runs, design)
table, notes = grid.study_observations(study, design, runs, ranking)
print("\n".join(notes))
shown = "main effects and interactions" if len(design["factors"]) > 1 else "main effects"
figures.plot_grid(
    table,
    design["factors"],
    snakemake.output[0],
    label=grid.score_label(study),
    higher=GREATER_IS_BETTER[metric_of(study["task"])],
    title=f"{study['title']}: {shown}",
)
