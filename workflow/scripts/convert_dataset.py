"""Convert one dataset source's raw files into a canonical .npz (rule convert_dataset).

Bundled scikit-learn datasets have no raw files, hence no input and no raw directory.
"""

import logging
import sys
from pathlib import Path

from hpstudy.datasets import convert
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
raw_dir = Path(snakemake.input[0]).parent if len(snakemake.input) else None
convert(snakemake.wildcards.source, raw_dir, snakemake.output[0])
