"""Fetch and verify the raw files of one dataset source (rule download_<source>).

The mirror, if any, comes from the ``HPSTUDY_DATA_MIRROR`` environment variable, which the
workflow sets from the config's ``data_mirror`` (a directory or a base URL).
"""

import logging
import sys
from pathlib import Path

from hpstudy.fetch import download
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
paths = download(snakemake.params.source, Path(snakemake.output[0]).parent)
missing = sorted(set(map(str, snakemake.output)) - set(map(str, paths)))
if missing:  # the rule's outputs must be exactly what download() writes
    raise RuntimeError(f"download() did not produce the declared outputs {missing}")
