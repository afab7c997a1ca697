"""Build the single HTML report (rule report)."""

import json

from hpstudy import report
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
report.build_report(
    json.loads(snakemake.params.report),
    {k: v if isinstance(v, str) else list(v) for k, v in snakemake.input.items()},
    snakemake.output[0],
)
