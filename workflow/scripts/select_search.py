"""Rank a search's trials and name those to re-test on fresh seeds (checkpoint select_search)."""

import json

from hpstudy import search
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
chosen = search.select(
    json.loads(snakemake.params.request),
    list(snakemake.input.rounds),
    list(snakemake.input.rungs),
    json.loads(snakemake.params.trials),
    int(snakemake.params.retest),
    snakemake.params.reference,
    dict(snakemake.output.items()),
)
print(json.dumps(chosen, indent=2))
