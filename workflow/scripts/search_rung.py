"""Compare a search round's trials at a successive-halving rung and promote the best
(checkpoint search_rung)."""

import json

from hpstudy import search
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
chosen = search.write_rung(
    json.loads(snakemake.params.request),
    int(snakemake.wildcards.round),
    int(snakemake.wildcards.rung),
    json.loads(snakemake.params.alive),
    snakemake.output[0],
)
print(json.dumps(chosen, indent=2))
