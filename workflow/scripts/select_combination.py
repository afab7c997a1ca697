"""Take the winner of each ofat study a combine study lists (checkpoint select_combination)."""

import json

import pandas as pd

from hpstudy import combine
from hpstudy.io import atomic_write_text, redirect_output

redirect_output(snakemake.log[0])
study = json.loads(snakemake.params.study)
summaries = {
    listed["slug"]: pd.read_csv(path)
    for listed, path in zip(study["combine"], snakemake.input.summaries)
}
chosen = combine.choose(study, summaries)
atomic_write_text(snakemake.output[0], json.dumps(chosen, indent=2, sort_keys=True) + "\n")
print(json.dumps(chosen, indent=2))
