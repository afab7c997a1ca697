"""Draw a range test's loss against the learning rate (rule plot_lr_range)."""

import json
from pathlib import Path

import pandas as pd

from hpstudy import figures
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
suggestion = json.loads(Path(snakemake.input.suggestion).read_text(encoding="utf-8"))
figures.plot_lr_range(
    pd.read_csv(snakemake.input.csv),
    suggestion,
    snakemake.output[0],
    title=f"Learning-rate range test {snakemake.wildcards.lrr}",
)
