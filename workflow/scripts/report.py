"""Build the single HTML report (rule report)."""

import json

from hpstudy import report
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])  # noqa: F821
report.build_report(
    json.loads(snakemake.params.report),  # noqa: F821
    {k: v if isinstance(v, str) else list(v) for k, v in snakemake.input.items()},  # noqa: F821
    snakemake.output[0],  # noqa: F821
)
