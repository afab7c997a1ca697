"""Interruption loses at most the epoch in progress.

A run is killed with SIGKILL right after an epoch's backup, then started again: it resumes from
that epoch and ends with the same history.csv and metrics.json, byte for byte, as a run that was
never interrupted, with and without Dropout (whose random-generator states must be restored).
One kill goes through the real `snakemake` command and its --rerun-incomplete path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import prepared_digits

from hpstudy.io import atomic_path, atomic_write_text
from hpstudy.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
OUTPUTS = ("history.csv", "timing.csv", "metrics.json", "model.keras")
EPOCHS = 24

CONFIG = f"""\
title: Resume
datasets:
  d: {{source: digits, subsample: 240}}
baselines:
  b:
    dataset: d
    model: {{hidden: [16, 16]}}
    optimizer: {{name: sgd, learning_rate: 0.05, momentum: 0.5}}
    training: {{epochs: {EPOCHS}, batch_size: 24, seed: 3}}
studies:
  dropout:
    kind: ofat
    baseline: b
    variants:
      - label: dropout 0.3
        set: {{model.dropout: {{rate: 0.3, layers: all}}}}
"""

# Trains each job of a JSON list with hpstudy.training.train_run, threads set up as in the rule.
DRIVER = """
import json, sys
from hpstudy import devices
devices.setup(threads=1)
from hpstudy import training
for job in json.loads(sys.argv[1]):
    training.train_run(**job)
"""


# A run that diverges, dies after its last epoch's backup but before writing its outputs, and
# is started again: it must finish as diverged, not train on from NaN weights.
DIVERGED_THEN_KILLED = """
import json, sys
from hpstudy import devices
devices.setup(threads=1)
from hpstudy import training
job = json.loads(sys.argv[1])
write_history = training.write_history
def killed(*args, **kwargs):
    raise SystemExit("killed")
training.write_history = killed
try:
    training.train_run(**job)
except SystemExit:
    pass
training.write_history = write_history
print("METRICS", json.dumps(training.train_run(**job)))
"""


def driver(jobs: list[dict], code: str = DRIVER) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(jobs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def job(case: dict, run_dir: Path) -> dict:
    out = {name.split(".")[0]: str(run_dir / name) for name in OUTPUTS}
    return dict(case, out=out)


def backup_epoch(run_dir: Path) -> int:
    """The last epoch the run's backup holds (0 while there is none)."""
    try:
        with np.load(run_dir / "backup" / "state.npz", allow_pickle=False) as npz:
            return json.loads(npz["meta"].tobytes().decode())["epoch"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return 0


def kill_after(proc: subprocess.Popen, run_dir: Path, epoch: int) -> int:
    """SIGKILL the process group of `proc` as soon as the backup holds `epoch`; return that epoch."""
    deadline = time.monotonic() + 300
    while backup_epoch(run_dir) < epoch:
        assert proc.poll() is None, f"exited before epoch {epoch}:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "no backup appeared"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return backup_epoch(run_dir)


def without_timing(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    assert set(metrics["timing"]) and set(metrics["host"])
    return {k: v for k, v in metrics.items() if k not in ("timing", "host")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs (no Dropout, Dropout) each trained uninterrupted, and killed and resumed."""
    root = tmp_path_factory.mktemp("resume")
    (root / "config.yaml").write_text(CONFIG)
    plan = load_plan([str(root / "config.yaml")])
    data_spec = next(iter(plan.preps.values()))[1]
    data = prepared_digits(root, data_spec)
    cases = {}
    for exp in plan.experiments.values():
        rate = exp.spec["model"]["dropout"]["rate"]
        run = plan.runs[f"{exp.id}/r0"]
        cases["dropout" if rate else "plain"] = {
            "spec": exp.spec,
            "data_path": str(data),
            "seed": run.seed,
            "run": "r0",
            "experiment": exp.id,
        }
    reference = driver([job(c, root / "reference" / name) for name, c in cases.items()])
    absurd = json.loads(json.dumps(cases["plain"]))
    absurd["spec"]["optimizer"].update(learning_rate=10.0, momentum=0.0)
    absurd["spec"]["model"]["hidden"] = [8]
    absurd["spec"]["training"].update(batch_size=10, epochs=8)
    diverging = driver(job(absurd, root / "diverged"), DIVERGED_THEN_KILLED)
    killed = {}
    # The plain run is killed through the real workflow (below); the Dropout run directly.
    name, kill_at = "dropout", 4
    run_dir = root / "killed" / name
    proc = driver([job(cases[name], run_dir)])
    killed[name] = {"epoch": kill_at, "seen": kill_after(proc, run_dir, kill_at)}
    killed[name]["left"] = sorted(p.name for p in run_dir.iterdir())
    resumed = driver([job(cases[name], run_dir)])
    killed[name]["log"] = resumed.communicate()[0]
    assert resumed.returncode == 0, killed[name]["log"]
    assert reference.wait() == 0, reference.communicate()[0]
    killed["diverged"] = {"log": diverging.communicate()[0]}
    assert diverging.returncode == 0, killed["diverged"]["log"][-3000:]
    return root, cases, killed


def test_a_diverged_run_killed_before_its_outputs_finishes_as_diverged(runs):
    root, _, killed = runs
    log = killed["diverged"]["log"]
    metrics = json.loads(log.split("METRICS ", 1)[1])
    epoch = metrics["diverged_epoch"]
    assert metrics["status"] == "diverged" and 1 <= epoch < 8
    assert f"Resuming from the backup at epoch {epoch}" in log
    assert metrics["epochs_run"] == epoch  # no training on from NaN weights
    history = (root / "diverged" / "history.csv").read_text().splitlines()
    assert len(history) == epoch + 1


def test_resumed_dropout_run_equals_an_uninterrupted_one(runs):
    root, _, killed = runs
    info = killed["dropout"]
    assert info["epoch"] <= info["seen"] < EPOCHS  # killed mid-training, after a backup
    assert info["left"] == ["backup"]  # no output at its final path before the job completes
    assert f"Resuming from the backup at epoch {info['seen']}" in info["log"]
    ref, run = root / "reference" / "dropout", root / "killed" / "dropout"
    assert (run / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
    assert without_timing(run / "metrics.json") == without_timing(ref / "metrics.json")
    assert len((ref / "history.csv").read_text().splitlines()) == EPOCHS + 1
    assert not (run / "backup").exists()  # removed once the outputs are complete


@pytest.mark.e2e
def test_snakemake_killed_mid_training_resumes_with_rerun_incomplete(runs):
    root, cases, _ = runs
    work = root / "workflow"
    work.mkdir()
    (work / "config.yaml").write_text(CONFIG)
    exp = cases["plain"]["experiment"]
    run_dir = work / "results" / "runs" / exp / "r0"
    config = str(work / "config.yaml")
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", config]
    target = f"results/runs/{exp}/r0/metrics.json"  # relative to the working directory
    proc = subprocess.Popen(
        [*cmd, "--cores", "1", target],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = kill_after(proc, run_dir, 3)  # Snakemake and its job, as a crashed node would
    assert seen < EPOCHS
    assert sorted(p.name for p in run_dir.iterdir()) == ["backup", "train.log"]
    # A killed Snakemake leaves its lock behind: unlock, then run again.
    subprocess.run([*cmd, "--unlock"], check=True, capture_output=True)
    again = subprocess.run(
        [*cmd, "--cores", "1", "--rerun-incomplete", target], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Resuming from the backup at epoch {seen}" in (run_dir / "train.log").read_text()
    ref = root / "reference" / "plain"
    assert (run_dir / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
    assert without_timing(run_dir / "metrics.json") == without_timing(ref / "metrics.json")
    assert not (run_dir / "backup").exists()


# --------------------------------------------------------------------------- atomic writes


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "history.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("new but incomplete")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_every_output_of_the_library_is_written_atomically():
    """Every write under src/ goes to a temporary path that hpstudy.io renames when complete."""
    write = re.compile(
        r"\.(write_text|write_bytes|savefig|to_csv|save)\(|np\.savez|open\([^)]*[\"'][wxa]"
    )
    writes = []
    for path in sorted((ROOT / "src" / "hpstudy").glob("*.py")):
        if path.name != "io.py":
            code = [line.split("#")[0] for line in path.read_text().splitlines()]
            # A write into a file handle counts with the line that opened it.
            writes += [
                (path.name, f"{a} {b}") for a, b in zip(["", *code], code) if write.search(b)
            ]
    assert len(writes) >= 5
    assert all("tmp" in line for _, line in writes), [w for w in writes if "tmp" not in w[1]]


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    """Not mkstemp's 0600: results on a shared cluster stay readable by the group."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


@pytest.mark.e2e
def test_a_failing_script_names_its_error_on_the_terminal_and_logs_the_traceback(tmp_path):
    """Snakemake only says "check the log"; the job's own stderr says what went wrong."""
    log = tmp_path / "job.log"
    script = (
        "from hpstudy.io import redirect_output\n"
        f"redirect_output({str(log)!r})\n"
        "print('progress line')\n"
        "raise ValueError('results/data/x.npz is truncated: run the prepare job again')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    assert "ValueError: results/data/x.npz is truncated: run the prepare job again" in done.stderr
    assert f"(the traceback is in {log})" in done.stderr
    assert "Traceback" not in done.stderr and "progress line" not in done.stdout + done.stderr
    text = log.read_text()
    assert "progress line" in text and "Traceback (most recent call last)" in text
