"""Draw a study's response figure: the metric against each numeric factor (rule plot_response)."""

import json

import pandas as pd

from hpstudy import figures
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
study = json.loads(snakemake.params.study)
figures.plot_response(study, pd.read_csv(snakemake.input.summary), snakemake.output[0])
