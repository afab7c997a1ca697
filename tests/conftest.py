"""Fixtures shared by the test modules (the functions behind them are in helpers.py)."""

from __future__ import annotations

import copy

import helpers
import pytest


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
