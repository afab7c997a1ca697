"""Draw a search's history, slices, parallel coordinates and learning curves; its importances
(rule plot_search)."""

import json

from hpstudy import figures, search
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
request = json.loads(snakemake.params.request)
table = search.read_trials(snakemake.input.trials)
figures.plot_search(
    table,
    search.scales(request),
    snakemake.output.figure,
    label=f"best validation {request['metric']} (r0)",
    higher=request["direction"] == "maximize",
    title=snakemake.params.title,
    retested=search.retested_trials(snakemake.input.retest),
    curves=search.read_trials(snakemake.input.curves),
    rungs=search.rungs_of(request),
    curve_label=f"validation {request['metric']}",
)
found = search.write_importance(request, table, snakemake.output.importance)
print(found.to_string(index=False))
