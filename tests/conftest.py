"""Fixtures shared by the test modules (the functions behind them are in helpers.py)."""

from __future__ import annotations

import copy
import sys

import helpers
import pytest

# The modules that take longest start first, so that with `-n 2` (pytest-xdist, `make test`) the
# other worker works through the rest meanwhile and neither is left with a long module at the end
# (the SLURM tests and the seeds' five workflows take about 8 minutes each under that load).
LONGEST_FIRST = ("test_slurm.py", "test_seeds.py", "test_combine.py", "test_add_repeats.py")


def pytest_collection_modifyitems(items):
    """Put the modules of LONGEST_FIRST first, in that order; the rest keep theirs."""

    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def in_process_keras():
    """Keras in this process (the tests that train here) on one CPU thread, as a job with one
    thread trains: set through TensorFlow's API, before the first operation, never through
    os.environ, so the processes the tests start (snakemake and its jobs) inherit the caller's
    environment unchanged, whichever test module was imported first."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.set_visible_devices([], "GPU")
    yield


@pytest.fixture(scope="session")
def run_snakemake():
    """`run_snakemake(workdir, *args, config="config.yaml", check=True, env=None)`."""
    return helpers.run_snakemake


@pytest.fixture(scope="session")
def plan_of():
    """`plan_of(cfg)`: validate a config dict and plan it, as the workflow does."""
    return helpers.plan_of


@pytest.fixture
def tiny_config() -> dict:
    """A fresh copy of the smallest useful config (one digits baseline, one study)."""
    return copy.deepcopy(helpers.TINY_CONFIG)
