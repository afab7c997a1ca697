"""What each experiment id stands for: its spec and the study variants using it (rule catalog)."""

import json

from hpstudy import catalog
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
catalog.write(json.loads(snakemake.params.catalog), snakemake.output[0])
