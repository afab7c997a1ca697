"""Snakemake script: convert one dataset source's raw files into a canonical .npz.

Expects ``wildcards.source``, ``input`` (the raw files; empty for the bundled
scikit-learn datasets), ``output[0]`` (the .npz) and ``log``.
"""

import logging
import sys
from pathlib import Path

from hpstudy.datasets import convert

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
logger = logging.getLogger("hpstudy.scripts.convert_dataset")

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    sys.stderr = sys.stdout = log
    logging.basicConfig(stream=log, level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        # Bundled datasets have no raw files, hence no input and no raw directory.
        raw_dir = Path(snakemake.input[0]).parent if len(snakemake.input) else None
        convert(snakemake.wildcards.source, raw_dir, snakemake.output[0])
    except Exception:
        logger.exception("conversion of %s failed", snakemake.wildcards.source)
        raise
    finally:
        # Restored so the traceback of an error also reaches the console,
        # instead of a closed log file ("lost sys.stderr").
        sys.stderr, sys.stdout = sys.__stderr__, sys.__stdout__
