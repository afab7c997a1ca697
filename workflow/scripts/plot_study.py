"""Draw a study's comparison figure (rule plot_study)."""

import json
from pathlib import Path

from hpstudy import figures, history
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
study = json.loads(snakemake.params.study)
histories = {
    v["label"]: [history.read_history(Path(r["dir"]) / "history.csv") for r in v["runs"]]
    for v in study["variants"]
}
figures.plot_study(study, histories, snakemake.output[0])
