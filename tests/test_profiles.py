"""Every job of every training rule asks for its GPU under each shipped GPU profile.

A dry run with `-F` of the default config and of every seed config, read job by job: a profile
cannot name the fused `train_<R>_repeats` rules that a config creates, so the workflow passes
what the profile sets for `train` on to each rule that trains (common.smk, TRAINING_RULES).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CONFIGS = ["config.yaml", *sorted(p.name for p in (ROOT / "config").glob("seed_*.yaml"))]
TRAINING = re.compile(r"^(train|lr_range)")

pytestmark = pytest.mark.e2e


def dry_run_jobs(*args: str) -> list[tuple[str, str]]:
    """(rule, resources line) of each job a dry run plans, run from a scratch directory."""
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", workdir]
        done = subprocess.run(
            [*cmd, "-n", "-F", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs, rule = [], None
    for line in (done.stdout + done.stderr).splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = m[1]
        elif rule and line.strip().startswith("resources:"):
            jobs.append((rule, line.strip()))
            rule = None
        elif not line.strip():  # a job block without resources ends here
            if rule:
                jobs.append((rule, ""))
            rule = None
    return jobs


def resource(line: str, name: str) -> str | None:
    m = re.search(rf"(?:^resources:|,)\s*{name}=([^,]*)", line)
    return m[1].strip() if m else None


@pytest.mark.parametrize("profile", ["slurm", "gpu"])
@pytest.mark.parametrize("configfile", CONFIGS)
def test_every_training_job_asks_for_one_gpu(profile, configfile):
    jobs = dry_run_jobs(
        "--profile", str(ROOT / "profiles" / profile), "--configfile", f"config/{configfile}"
    )
    training = [(rule, line) for rule, line in jobs if TRAINING.match(rule)]
    assert training, f"{configfile} plans no training job under profiles/{profile}"
    missing = [(rule, line) for rule, line in training if resource(line, "gpu") != "1"]
    assert not missing, f"{len(missing)} training jobs without gpu=1: {missing[:3]}"
    # The light jobs run where Snakemake runs and ask for no GPU.
    light = [(rule, line) for rule, line in jobs if not TRAINING.match(rule)]
    assert all(resource(line, "gpu") in (None, "0") for _, line in light), light[:3]


def test_the_default_config_trains_fused_jobs():
    """What the GPU test above covers: the default config's training jobs are fused ones
    (experiments' own repeats, and groups of experiments), and a fused job of R towers asks for
    R times a run's runtime."""
    jobs = dry_run_jobs(
        "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", "config/config.yaml"
    )
    rules = {rule for rule, _ in jobs if TRAINING.match(rule)}
    groups = {rule for rule in rules if rule.startswith("train_group_")}
    assert rules - groups == {"train_3_repeats"} and len(groups) == 3, rules
    line = next(line for rule, line in jobs if rule == "train_3_repeats")
    assert resource(line, "runtime") == str(30 * 3), line
    # the group of the `main` model's 10 experiments (30 runs, activations included) asks for
    # 30 runs' runtime
    runtimes = sorted(int(resource(line, "runtime")) for rule, line in jobs if rule in groups)
    assert runtimes == [30 * 9, 30 * 9, 30 * 30], runtimes


def test_an_explicit_train_entry_reaches_every_training_rule():
    """`--set-resources train:...` (replacing the profile's list) reaches the fused rules too,
    and a rule's own entry wins over `train`'s."""
    jobs = dry_run_jobs(
        "--profile",
        str(ROOT / "profiles" / "slurm"),
        "--configfile",
        "config/seed_003.yaml",
        "--config",
        "repeats=2",
        "--set-resources",
        "train:gpu=2",
        "train:gpu_model=a100",
        "train:runtime=77",
        "lr_range:gpu=1",
    )
    seen = {}
    for rule, line in jobs:
        if TRAINING.match(rule):
            seen.setdefault(rule, set()).add(
                (resource(line, "gpu"), resource(line, "gpu_model"), resource(line, "runtime"))
            )
    assert any(r.startswith("train_") for r in seen), seen
    for rule, values in seen.items():
        expected = {("1" if rule == "lr_range" else "2", "a100", "77")}
        assert values == expected, (rule, values)
