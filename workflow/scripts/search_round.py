"""Propose a search round after replaying the earlier ones (checkpoint search_round)."""

import json

from hpstudy import search
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
proposed = search.write_round(
    json.loads(snakemake.params.request),
    list(snakemake.input.previous),
    list(snakemake.input.rungs),
    json.loads(snakemake.params.trials),
    int(snakemake.params.size),
    snakemake.output[0],
)
print(json.dumps(proposed, indent=2))
