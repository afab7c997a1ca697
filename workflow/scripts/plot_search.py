"""Draw a search's history, slices and parallel coordinates; its importances (rule plot_search)."""

import json

from hpstudy import search
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
found = search.analyse(
    json.loads(snakemake.params.request),
    snakemake.input.trials,
    snakemake.input.retest,
    snakemake.params.title,
    snakemake.output.figure,
    snakemake.output.importance,
)
print(found.to_string(index=False))
