"""A tiny study through `snakemake --profile profiles/slurm` on the real single-node SLURM cluster
that tools/slurm/up.sh brings up (2 fake GPUs). `.ci/run` starts it and sets HPSTUDY_SLURM=1;
without that the test is skipped, with the reason .ci/run gives (HPSTUDY_SLURM_SKIP_REASON)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from itertools import combinations
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("HPSTUDY_SLURM") != "1",
        reason=os.environ.get("HPSTUDY_SLURM_SKIP_REASON")
        or "needs the local SLURM cluster: run `bash tools/slurm/up.sh`, then set HPSTUDY_SLURM=1",
    ),
]

# Every kind of training job: fused repeats (repeats 2: `train_2_repeats`), a cv study's folds and
# refit (`train`) and a range test (`lr_range`).
TINY = """\
title: SLURM profile test
repeats: 2
datasets:
  digits: {source: digits, subsample: 120}
baselines:
  main:
    dataset: digits
    model: {hidden: [4]}
    training: {epochs: 1, batch_size: 64}
studies:
  lr:
    kind: ofat
    baseline: main
    factors:
      optimizer.learning_rate: [0.05, 0.1]
  width:
    kind: cv
    baseline: main
    cv: 2
    variants:
      - {label: "4 units", set: {}}
      - {label: "8 units", set: {model.hidden: [8]}}
  range:
    kind: lr_range
    baseline: main
    lr_range: {iterations: 20}
resources:
  mem_mb: 1000
  runtime: 10
"""
TRAINING_RULES = {"train", "train_2_repeats", "lr_range"}

# Only what this cluster needs on top of the profile: no accounting database (so squeue, not
# sacct, for job states) and fast polling, so a 4-job study takes about a minute.
OVERRIDES = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
]


def _interruptible() -> None:
    """Let `timeout -s INT` stop Snakemake (cancelling its jobs) even when the tests were started
    in the background, where SIGINT is ignored and that would be inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def slurm_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay visible for MinJobAge=600 s)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, f"scontrol does not know SLURM job {job_id}: {out.stderr}"
    return dict(field.split("=", 1) for field in out.stdout.split() if "=" in field)


def test_tiny_study_through_the_slurm_profile(tmp_path):
    if os.environ.get("HPSTUDY_SLURM_ERROR"):  # installed, but the cluster did not come up
        pytest.fail(os.environ["HPSTUDY_SLURM_ERROR"])
    assert shutil.which("sbatch"), "HPSTUDY_SLURM=1 but sbatch is not on PATH"
    (tmp_path / "config.yaml").write_text(TINY)
    env = dict(os.environ)
    for name in ("CUDA_VISIBLE_DEVICES", "HPSTUDY_GPUS", "SLURM_JOB_ID"):
        env.pop(name, None)
    cmd = ["timeout", "-k", "60", "-s", "INT", "600", sys.executable, "-m", "snakemake"]
    cmd += ["--profile", "profiles/slurm", *OVERRIDES]
    # A workstation's GPU limit: with `gpu` scoped local by the profile it must not serialise
    # the cluster's training jobs.
    cmd += ["--resources", "gpu=1"]
    cmd += ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    cmd += ["--configfile", str(tmp_path / "config.yaml")]
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=_interruptible
    )
    assert done.returncode == 0, done.stderr[-4000:]

    report = tmp_path / "results" / "report.html"
    assert report.is_file() and "SLURM profile test" in report.read_text()

    # "Job 6 has been submitted with SLURM jobid 41 (log: .../rule_train/<exp>_<run>/41.log)."
    submitted = re.findall(
        r"submitted with SLURM jobid (\d+) \(log: \S+/rule_(\w+)/([^/\s]+)/\d+\.log\)", done.stderr
    )
    rules = {job_id: rule for job_id, rule, _ in submitted}
    assert set(rules.values()) == TRAINING_RULES, f"only training jobs go to SLURM: {submitted}"
    # 3 fused experiments, 2 candidates x 2 folds and the cv winner's refit, 1 range test
    counts = {rule: list(rules.values()).count(rule) for rule in TRAINING_RULES}
    assert counts == {"train_2_repeats": 3, "train": 5, "lr_range": 1}, submitted

    # Each training job, from SLURM itself: one GPU, and the config's resources (threads 1,
    # runtime 10 per run: a fused job of 2 repeats asks for 20; mem_mb 1000, more when fused).
    for job_id, rule in rules.items():
        job = slurm_job(job_id)
        assert job["JobState"] == "COMPLETED" and "gres:gpu:1" in job["TresPerJob"], (rule, job)
        fused = rule == "train_2_repeats"
        assert job["CPUs/Task"] == "1", job
        assert job["TimeLimit"] == ("00:20:00" if fused else "00:10:00"), (rule, job)
        memory = int(job["MinMemoryNode"].removesuffix("M"))
        assert memory > 1000 if fused else memory == 1000, (rule, job)

    # Each run, from what it recorded: it ran in the job Snakemake submitted, which kept the GPU
    # SLURM gave it (on this cluster, without cgroups, the same number).
    recorded = sorted(tmp_path.glob("results/runs/*/*/metrics.json"))
    recorded += sorted(tmp_path.glob("results/lr_range/*/suggestion.json"))
    assert len(recorded) == 3 * 2 + 5 + 1, recorded
    jobs = {}
    for path in recorded:
        host = json.loads(path.read_text())["host"]
        job_id = host["slurm_job_id"]
        assert job_id in rules, f"{path} ran outside the jobs Snakemake submitted: {host}"
        given = re.search(r"SLURM_STEP_GPUS=(\S+)\)", host["device"])
        assert given, (path, host["device"])
        assert given.group(1) in {"0", "1"} and host["cuda_visible_devices"] == given.group(1)
        assert host["device"].startswith(f"GPU {given.group(1)} (CUDA_VISIBLE_DEVICES from SLURM")
        job = slurm_job(job_id)
        start, end = (datetime.fromisoformat(job[k]) for k in ("StartTime", "EndTime"))
        jobs[job_id] = (given.group(1), start, end, job_id)
    # both repeats of a fused experiment came from one job; every job wrote something
    assert set(jobs) == set(rules), (sorted(jobs), rules)

    overlapping = 0
    for (gpu_a, start_a, end_a, id_a), (gpu_b, start_b, end_b, id_b) in combinations(
        jobs.values(), 2
    ):
        if start_a < end_b and start_b < end_a:
            overlapping += 1
            assert gpu_a != gpu_b, f"SLURM jobs {id_a} and {id_b} ran at once on GPU {gpu_a}"
    assert overlapping >= 1, f"`--resources gpu=1` serialised the cluster jobs: {jobs}"
