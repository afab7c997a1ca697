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

TINY = """\
title: SLURM profile test
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
      optimizer.learning_rate: [0.001, 0.05, 0.1]
resources:
  mem_mb: 1000
  runtime: 10
"""

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
    submitted = {
        run: job_id
        for job_id, run in re.findall(
            r"submitted with SLURM jobid (\d+) \(log: \S+/rule_train/([^/\s]+)/\d+\.log\)",
            done.stderr,
        )
    }
    jobs = []
    for metrics in sorted(tmp_path.glob("results/runs/*/r0/metrics.json")):
        host = json.loads(metrics.read_text())["host"]
        job_id = host["slurm_job_id"]
        assert job_id and job_id.isdigit(), f"{metrics} ran outside SLURM: {host}"
        # the same job that Snakemake reported submitting for this run
        run = f"{metrics.parent.parent.name}_{metrics.parent.name}"
        assert submitted.get(run) == job_id, (run, job_id, submitted)
        job = slurm_job(job_id)
        assert job["JobState"] == "COMPLETED" and "gres:gpu:1" in job["TresPerJob"], job
        # what the config's resources ask for: threads 1, mem_mb 1000, runtime 10 (attempt 1)
        assert (job["CPUs/Task"], job["MinMemoryNode"], job["TimeLimit"]) == (
            "1",
            "1000M",
            "00:10:00",
        ), job
        # the job kept the GPU SLURM gave it (on this cluster, without cgroups, the same number)
        given = re.search(r"SLURM_STEP_GPUS=(\S+)\)", host["device"])
        assert given, host["device"]
        assert given.group(1) in {"0", "1"} and host["cuda_visible_devices"] == given.group(1)
        assert host["device"].startswith(f"GPU {given.group(1)} (CUDA_VISIBLE_DEVICES from SLURM")
        start, end = (datetime.fromisoformat(job[k]) for k in ("StartTime", "EndTime"))
        jobs.append((given.group(1), start, end, job_id))
    assert len(jobs) == 4 and len({j[3] for j in jobs}) == 4

    overlapping = 0
    for (gpu_a, start_a, end_a, id_a), (gpu_b, start_b, end_b, id_b) in combinations(jobs, 2):
        if start_a < end_b and start_b < end_a:
            overlapping += 1
            assert gpu_a != gpu_b, f"SLURM jobs {id_a} and {id_b} ran at once on GPU {gpu_a}"
    assert overlapping >= 1, f"`--resources gpu=1` serialised the cluster jobs: {jobs}"
