"""Snakemake script: fetch and verify the raw files of one dataset source.

Expects ``params.source``, ``output`` (the files of
``hpstudy.datasets.raw_paths``, all in one directory) and ``log``. The mirror,
if any, comes from the ``HPSTUDY_DATA_MIRROR`` environment variable, which the
workflow sets from the config's ``data_mirror`` (a directory or a base URL).
"""

import logging
import sys
from pathlib import Path

from hpstudy.datasets import download

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
logger = logging.getLogger("hpstudy.scripts.download_dataset")

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    logging.basicConfig(stream=log, level=logging.INFO, format="%(asctime)s %(message)s")
    source = snakemake.params.source
    try:
        paths = download(source, Path(snakemake.output[0]).parent)
        missing = sorted(set(map(str, snakemake.output)) - set(map(str, paths)))
        if missing:
            # The rule's outputs must be exactly what download() writes.
            raise RuntimeError(f"download() did not produce declared outputs {missing}")
    except Exception:
        logger.exception("download of %s failed", source)
        raise
    finally:
        # Restored so the traceback of an error also reaches the console,
        # instead of a closed log file ("lost sys.stderr").
        sys.stderr, sys.stdout = sys.__stderr__, sys.__stdout__
