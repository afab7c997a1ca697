"""Rank a search's trials and name those to re-test on fresh seeds (checkpoint select_search)."""

import json

from hpstudy import search
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
chosen = search.select(
    json.loads(snakemake.params.request),
    list(snakemake.input.rounds),
    json.loads(snakemake.params.trials),
    int(snakemake.params.retest),
    snakemake.params.reference,
    snakemake.output.trials,
    snakemake.output.retest,
)
print(json.dumps(chosen, indent=2))
