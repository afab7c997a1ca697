"""Split and scale one dataset (rule prepare)."""

import json

from hpstudy import prepare
from hpstudy.datasets import load_npz
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
data = json.loads(snakemake.params.data)
canonical = load_npz(snakemake.input[0])
# A user's file carries its feature and class names (hpstudy.userdata.convert).
names = json.loads(canonical.pop("names").tobytes()) if "names" in canonical else {}
prepare.check_finite(canonical, snakemake.wildcards.dataset, snakemake.input[0])
arrays = prepare.prepare(canonical, data)
info = prepare.describe(arrays, data)
for key, plural in (("feature_names", "features"), ("class_names", "classes")):
    if names.get(plural):
        info[key] = names[plural]
prepare.save(arrays, snakemake.output[0], info)
print(json.dumps(info, indent=2))
