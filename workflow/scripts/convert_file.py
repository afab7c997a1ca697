"""Check a user's data file and convert it to the canonical .npz (rule convert_file)."""

import json

from hpstudy import userdata
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
spec = snakemake.params.spec
paths = {"path": snakemake.input[0]}
if len(snakemake.input) > 1:
    paths["test_path"] = snakemake.input[1]
names = userdata.convert(spec["file"], paths, spec["task"], spec["dataset"], snakemake.output[0])
print(json.dumps({"dataset": spec["dataset"], **names}, indent=2))
