"""Each variant's effect on the best validation metric, across studies (rule overview)."""

import json

import pandas as pd

from hpstudy import analysis, figures
from hpstudy.io import atomic_path, redirect_output

redirect_output(snakemake.log[0])
studies = json.loads(snakemake.params.studies)
effects = analysis.effects_table(studies, [pd.read_csv(p) for p in snakemake.input.summary])
with atomic_path(snakemake.output.effects) as tmp:
    effects.to_csv(tmp, index=False)
figures.plot_overview(studies, effects, snakemake.output.figure)
