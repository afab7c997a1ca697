"""Split and scale one dataset (rule prepare)."""

import json

from hpstudy import prepare
from hpstudy.datasets import load_npz
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])  # noqa: F821
data = json.loads(snakemake.params.data)  # noqa: F821
arrays = prepare.prepare(load_npz(snakemake.input[0]), data)  # noqa: F821
info = prepare.describe(arrays, data)
prepare.save(arrays, snakemake.output[0], info)  # noqa: F821
print(json.dumps(info, indent=2))
