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
import time
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

# Every kind of training job: fused experiments (the baseline and its two learning rates, 2 repeats
# each: one `train_group_<name>`), fused repeats (the wider model, `train_2_repeats`), a cv
# study's folds and refit (`train`) and a range test (`lr_range`).
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
      model.hidden: [[6]]
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
TRAINING_RULES = {"train", "train_2_repeats", "train_group", "lr_range"}

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

    # "Job 6 has been submitted with SLURM jobid 41 (log: .../rule_train/<exp>_<run>/41.log)";
    # a group's rule has no wildcards: ".../rule_train_group_<name>/42.log".
    submitted = re.findall(
        r"submitted with SLURM jobid (\d+) \(log: \S+/rule_(\w+)/(?:([^/\s]+)/)?\d+\.log\)",
        done.stderr,
    )
    rules = {job_id: re.sub(r"^train_group_\w+$", "train_group", rule)
             for job_id, rule, _ in submitted}  # fmt: skip
    assert set(rules.values()) == TRAINING_RULES, f"only training jobs go to SLURM: {submitted}"
    # 1 group of 3 experiments, 1 fused experiment, 2 candidates x 2 folds and the cv winner's
    # refit, 1 range test
    counts = {rule: list(rules.values()).count(rule) for rule in TRAINING_RULES}
    assert counts == {"train_group": 1, "train_2_repeats": 1, "train": 5, "lr_range": 1}, submitted

    # Each training job, from SLURM itself: one GPU, and the config's resources (threads 1,
    # runtime 10 per run: a fused job of 2 repeats asks for 20, the group of 6 runs for 60;
    # mem_mb 1000, more when fused).
    limits = {"train_2_repeats": "00:20:00", "train_group": "01:00:00"}
    for job_id, rule in rules.items():
        job = slurm_job(job_id)
        assert job["JobState"] == "COMPLETED" and "gres:gpu:1" in job["TresPerJob"], (rule, job)
        fused = rule in limits
        assert job["CPUs/Task"] == "1", job
        assert job["TimeLimit"] == limits.get(rule, "00:10:00"), (rule, job)
        memory = int(job["MinMemoryNode"].removesuffix("M"))
        assert memory > 1000 if fused else memory == 1000, (rule, job)

    # Each run, from what it recorded: it ran in the job Snakemake submitted, which kept the GPU
    # SLURM gave it (on this cluster, without cgroups, the same number).
    recorded = sorted(tmp_path.glob("results/runs/*/*/metrics.json"))
    recorded += sorted(tmp_path.glob("results/lr_range/*/suggestion.json"))
    assert len(recorded) == 4 * 2 + 5 + 1, recorded
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


# --------------------------------------------------------------------------- cluster faults

# One fused experiment (repeats 2) that trains for about 2.5 minutes on one idle CPU of this
# machine (0.12 s an epoch; over 100 s even 1.5x faster), longer than a 1-minute time limit,
# which slurmctld enforces within 30 s of its end (so by 90 s); and a short one (one epoch in
# 0.12 s) to cancel while it trains.
FAULTS = """\
title: SLURM faults
repeats: 2
datasets:
  digits: {{source: digits}}
baselines:
  main:
    dataset: digits
    model: {{hidden: [256, 256]}}
    optimizer: {{name: sgd, learning_rate: 0.01, momentum: 0.9}}
    training: {{epochs: {epochs}, batch_size: 8}}
studies:
  same:
    kind: ofat
    baseline: main
    factors:
      training.epochs: [{epochs}]
resources:
  mem_mb: 1000
  runtime: 10
"""
LONG, SHORT = 1200, 200


def start_snakemake(workdir: Path, *args: str, executor: str = "slurm") -> subprocess.Popen:
    """Snakemake on `workdir/config.yaml`, stderr to `workdir/snakemake.err`: through the SLURM
    profile (retries 0 unless `args` say otherwise), or on this machine with one core."""
    env = dict(os.environ)
    for name in ("CUDA_VISIBLE_DEVICES", "HPSTUDY_GPUS", "SLURM_JOB_ID"):
        env.pop(name, None)
    cmd = ["timeout", "-k", "60", "-s", "INT", "900", sys.executable, "-m", "snakemake"]
    if executor == "slurm":
        cmd += ["--profile", "profiles/slurm", *OVERRIDES, "--retries", "0"]
    else:
        cmd += ["--cores", "1"]
    cmd += ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(workdir / "config.yaml"), *args]
    err = open(workdir / "snakemake.err", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=err, stderr=err, text=True, preexec_fn=_interruptible
    )


def finished(proc: subprocess.Popen, workdir: Path) -> tuple[int, str]:
    returncode = proc.wait(timeout=1200)
    return returncode, (workdir / "snakemake.err").read_text()


def workdir_for(root: Path, name: str, epochs: int) -> Path:
    workdir = root / name
    workdir.mkdir()
    (workdir / "config.yaml").write_text(FAULTS.format(epochs=epochs))
    return workdir


def only_experiment(workdir: Path) -> Path:
    (experiment,) = (workdir / "results" / "runs").iterdir()
    return experiment


def backup_epoch(experiment: Path) -> int:
    """The last epoch a fused job's backup holds (0 while there is none, or while it is replaced)."""
    import numpy as np

    try:
        with np.load(experiment / "backup-2-repeats" / "state.npz", allow_pickle=False) as npz:
            return json.loads(npz["meta"].tobytes().decode())["epoch"]
    except Exception:
        return 0


def submitted_jobs(text: str) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: \S+/rule_train_2_repeats/", text)


def assert_same_histories(run: Path, reference: Path, epochs: int) -> None:
    for repeat in ("r0", "r1"):
        got, want = (p / repeat / "history.csv" for p in (run, reference))
        assert got.read_bytes() == want.read_bytes(), f"{got} differs from {want}"
        assert len(want.read_text().splitlines()) == epochs + 1
    assert not (run / "backup-2-repeats").exists()  # dropped once the outputs were written


def test_cluster_faults_resume_from_the_backup(tmp_path):
    """A fused job that reaches its time limit resumes on its retry; a job cancelled with
    scancel resumes on a plain rerun; both end with the bytes of an uninterrupted local run."""
    if os.environ.get("HPSTUDY_SLURM_ERROR"):
        pytest.fail(os.environ["HPSTUDY_SLURM_ERROR"])
    references = {n: workdir_for(tmp_path, f"reference-{n}", n) for n in (LONG, SHORT)}
    timed_out = workdir_for(tmp_path, "timeout", LONG)
    cancelled = workdir_for(tmp_path, "cancel", SHORT)
    # The first attempt asks for 1 minute; its retry (retries 1), which resumes, for 10.
    timeout_run = start_snakemake(
        timed_out, "--retries", "1", "--set-resources", "train:runtime=1 if attempt == 1 else 10"
    )
    local = [start_snakemake(w, executor="local") for w in references.values()]

    # Cancel the short job as soon as its backup holds an epoch: SLURM sends it SIGTERM.
    cancel_run, deadline = start_snakemake(cancelled), time.monotonic() + 600
    while not (cancelled / "results" / "runs").is_dir() or not backup_epoch(
        only_experiment(cancelled)
    ):
        assert cancel_run.poll() is None, (cancelled / "snakemake.err").read_text()[-3000:]
        assert time.monotonic() < deadline, "the job to cancel never wrote a backup"
        time.sleep(0.01)
    (job_id,) = submitted_jobs((cancelled / "snakemake.err").read_text())
    subprocess.run(["scancel", job_id], check=True, timeout=60)
    returncode, err = finished(cancel_run, cancelled)
    experiment = only_experiment(cancelled)
    kept = backup_epoch(experiment)
    assert returncode != 0 and "CANCELLED" in err, err[-3000:]
    assert 0 < kept < SHORT and not (experiment / "r0" / "history.csv").exists()
    log = (experiment / "train-2-repeats.log").read_text()
    assert re.search(rf"Terminated by SIGTERM during epoch \d+ of {SHORT}: the backup of epoch "
                     rf"{kept} is kept", log), log[-3000:]  # fmt: skip
    # The plain rerun: the profile's rerun-incomplete takes the cancelled job again.
    returncode, err = finished(start_snakemake(cancelled), cancelled)
    assert returncode == 0, err[-3000:]
    assert (
        f"Resuming from the backup at epoch {kept} "
        in (experiment / "train-2-repeats.log").read_text()
    )

    returncode, err = finished(timeout_run, timed_out)
    assert returncode == 0, err[-3000:]
    first, retry = submitted_jobs(err)
    assert slurm_job(first)["JobState"] == "TIMEOUT", slurm_job(first)
    assert slurm_job(first)["TimeLimit"] == "00:01:00"
    assert (
        slurm_job(retry)["JobState"] == "COMPLETED" and slurm_job(retry)["TimeLimit"] == "00:10:00"
    )
    # Snakemake starts the rule's log afresh for the retry: the first attempt's last line is in
    # its SLURM log, where the job's terminal output goes.
    (first_log,) = (timed_out / ".snakemake" / "slurm_logs").rglob(f"{first}.log")
    stopped = re.search(rf"Terminated by SIGTERM during epoch (\d+) of {LONG}: the backup of "
                        r"epoch (\d+) is kept in", first_log.read_text())  # fmt: skip
    assert stopped, first_log.read_text()[-3000:]
    resumed_at = int(stopped.group(2))
    assert 0 < resumed_at < LONG and int(stopped.group(1)) == resumed_at + 1
    log = (only_experiment(timed_out) / "train-2-repeats.log").read_text()
    assert f"Resuming from the backup at epoch {resumed_at} " in log, log[:3000]

    for proc, workdir in zip(local, references.values()):
        returncode, err = finished(proc, workdir)
        assert returncode == 0, err[-3000:]
    assert_same_histories(only_experiment(timed_out), only_experiment(references[LONG]), LONG)
    assert_same_histories(experiment, only_experiment(references[SHORT]), SHORT)
