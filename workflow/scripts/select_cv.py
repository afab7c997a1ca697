"""Rank a cv study's candidates from their fold runs and name the winner (checkpoint select_cv)."""

import json

from hpstudy import cv
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
chosen = cv.select(
    json.loads(snakemake.params.study), snakemake.output.ranking, snakemake.output.winner
)
print(json.dumps(chosen, indent=2))
