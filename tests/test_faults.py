"""Faults that a user's data and a cluster bring.

- A NaN or an infinity in a dataset stops the workflow at its prepare step, before any training
  job, with the dataset, the file, the column and the row in the message (the report would
  otherwise list every run as "diverged", as if the hyperparameters were to blame).
- A training job that receives SIGTERM (a time limit, `scancel`, a preemption) stops within the
  batch, keeps its last complete backup, leaves no output at a final path, exits 1 with one line
  that says so, and its rerun resumes to the bytes of an uninterrupted run; single and fused.
The same faults on the real SLURM cluster are in test_slurm.py.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY_CONFIG, plan_of, prepared_digits

from hpstudy import io
from hpstudy.datasets import DatasetError
from hpstudy.prepare import check_finite

# --------------------------------------------------------------------------- non-finite data


def test_a_nan_feature_is_refused_with_dataset_file_row_and_column():
    x = np.ones((5, 3))
    x[3, 2] = np.nan
    x[4, 0] = np.nan
    with pytest.raises(DatasetError) as err:
        check_finite({"x_train": x, "y_train": np.zeros(5, int)}, "mine", "data/mine.npz")
    message = str(err.value)
    assert "Dataset 'mine' (data/mine.npz): x_train holds 2 non-finite value(s)" in message
    assert "the first is nan at row 3, feature 2." in message
    assert "Fix or drop that row" in message


def test_an_infinite_regression_target_is_refused():
    y = np.linspace(0, 1, 6)
    y[4] = -np.inf
    with pytest.raises(DatasetError, match=r"y_train holds 1 .* -inf at row 4, its only target"):
        check_finite({"x_train": np.ones((6, 2)), "y_train": y}, "house", "h.npz")


def test_a_bad_value_is_named_by_its_feature_name_or_its_pixel():
    x = np.ones((4, 2), np.float32)
    x[1, 1] = np.inf
    names = np.array(["rooms", "age"])
    with pytest.raises(DatasetError, match=r"inf at row 1, feature 1 \(age\)"):
        check_finite({"x_train": x, "y_train": np.ones(4), "feature_names": names}, "h", "h.npz")
    images = np.zeros((3, 8, 8, 1), np.float32)
    images[2, 5, 6, 0] = np.nan
    with pytest.raises(DatasetError, match=r"x_test .* row 2, feature at index \(5, 6, 0\)"):
        check_finite({"x_train": images[:1], "x_test": images}, "img", "img.npz")


def test_finite_and_integer_arrays_pass():
    check_finite({"x_train": np.ones((3, 2)), "y_train": np.arange(3)}, "ok", "ok.npz")
    check_finite({"x_train": np.zeros((3, 4), np.uint8), "y_train": np.arange(3)}, "ok", "ok.npz")


@pytest.mark.e2e
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_in_the_cache_stops_the_workflow_before_training(
    tmp_path, run_snakemake, bad
):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    cache = tmp_path / "resources" / "datasets" / "digits.npz"
    run_snakemake(tmp_path, "--cores", "1", str(cache.relative_to(tmp_path)))
    with np.load(cache) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["x_train"][17, 42] = bad
    np.savez(cache, **arrays)
    done = run_snakemake(tmp_path, "--cores", "1", check=False)
    assert done.returncode != 0
    assert "Error in rule prepare" in done.stderr
    value = "nan" if np.isnan(bad) else "inf"
    assert (
        f"DatasetError: Dataset 'd' (resources/datasets/digits.npz): x_train holds 1 non-finite "
        f"value(s); the first is {value} at row 17, feature 42." in done.stderr
    ), done.stderr[-3000:]
    assert not list((tmp_path / "results").glob("runs/*/r*"))  # no training job started
    assert not list((tmp_path / "results" / "data").glob("*.npz"))


# --------------------------------------------------------------------------- SIGTERM


@pytest.fixture
def sigterm_restored():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_stop_on_sigterm_raises_terminated_in_the_main_thread(sigterm_restored):
    io.stop_on_sigterm()
    with pytest.raises(io.Terminated, match="Terminated by SIGTERM: nothing of it is complete"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode
    assert isinstance(io.Terminated("x"), BaseException)
    assert not isinstance(io.Terminated("x"), Exception)  # no `except Exception` swallows it


def test_finish_first_holds_sigterm_until_the_outputs_are_written(sigterm_restored, capsys):
    io.stop_on_sigterm()
    written = []
    with io.finish_first():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        written.append("metrics.json")
    assert written == ["metrics.json"]
    assert "SIGTERM arrived while the outputs were written" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # stop_on_sigterm's again
    with pytest.raises(io.Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


# A training script as the rules run it: output to the rule's log, SIGTERM handled, one thread.
DRIVER = """
import json, sys
from hpstudy.io import redirect_output, stop_on_sigterm
redirect_output(sys.argv[1])
stop_on_sigterm()
from hpstudy import devices
devices.setup(threads=1)
from hpstudy import fused, training
job = json.loads(sys.argv[2])
(fused.train_repeats if "runs" in job else training.train_run)(**job)
"""
OUTPUTS = {"history": "history.csv", "timing": "timing.csv", "metrics": "metrics.json",
           "model": "model.keras"}  # fmt: skip
EPOCHS = 30


def start(job: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(log), json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def backup_epoch(backup: Path) -> int:
    try:
        with np.load(backup / "state.npz", allow_pickle=False) as npz:
            return json.loads(npz["meta"].tobytes().decode())["epoch"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return 0


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    cfg = copy.deepcopy(TINY_CONFIG)
    base = cfg["baselines"]["b"]
    base["model"] = {"hidden": [32, 16], "dropout": {"rate": 0.2, "layers": "all"}}
    base["training"].update(epochs=EPOCHS, batch_size=8)
    exp = next(iter(plan_of(cfg).experiments.values()))
    root = tmp_path_factory.mktemp("sigterm")
    data = prepared_digits(root, next(iter(plan_of(cfg).preps.values()))[1])
    return exp, str(data)


def single_job(experiment, root: Path) -> tuple[dict, Path, list[Path]]:
    exp, data = experiment
    out = {name: str(root / "r0" / file) for name, file in OUTPUTS.items()}
    job = {"spec": exp.spec, "data_path": data, "out": out, "seed": 11, "run": "r0",
           "experiment": exp.id}  # fmt: skip
    return job, root / "r0" / "backup", [root / "r0"]


def fused_job(experiment, root: Path) -> tuple[dict, Path, list[Path]]:
    exp, data = experiment
    outs = [{name: str(root / f"r{k}" / file) for name, file in OUTPUTS.items()} for k in (0, 1)]
    job = {"spec": exp.spec, "data_paths": [data] * 2, "outs": outs, "seeds": [11, 12],
           "runs": ["r0", "r1"], "experiment": exp.id}  # fmt: skip
    return job, root / "backup-2-repeats", [root / "r0", root / "r1"]


@pytest.mark.parametrize("kind", [single_job, fused_job], ids=["single", "fused"])
def test_sigterm_stops_at_once_keeps_the_backup_and_the_rerun_resumes_to_the_same_bytes(
    experiment, tmp_path, kind
):
    reference, reference_backup, reference_runs = kind(experiment, tmp_path / "reference")
    whole = start(reference, tmp_path / "reference.log")
    job, backup, runs = kind(experiment, tmp_path / "cut")
    log = tmp_path / "cut.log"
    proc, deadline = start(job, log), time.monotonic() + 300
    while backup_epoch(backup) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no backup appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 30, "slower than SLURM's KillWait"
    kept = backup_epoch(backup)
    assert proc.returncode == 1 and stdout == ""
    assert stderr.splitlines() == [
        f"Terminated by SIGTERM during epoch {kept + 1} of {EPOCHS}: the backup of epoch {kept} "
        f"is kept in {backup}, and the retry or a rerun resumes from it."
    ]
    assert 3 <= kept < EPOCHS
    # Nothing that looks complete: the runs' directories hold no output, the backup one file.
    assert all(not run.exists() or not list(run.glob("*.*")) for run in runs)
    assert sorted(p.name for p in backup.iterdir()) == ["state.npz"]
    assert stderr.splitlines()[0] in log.read_text()

    again = start(job, log)
    assert again.wait(timeout=600) == 0, again.communicate()
    assert f"Resuming from the backup at epoch {kept} " in log.read_text()
    assert whole.wait(timeout=600) == 0, whole.communicate()
    for run, ref in zip(runs, reference_runs):
        assert (run / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
        assert len((ref / "history.csv").read_text().splitlines()) == EPOCHS + 1
    assert not backup.exists() and not reference_backup.exists()


def test_a_sigterm_during_a_backup_waits_for_it_then_stops():
    """The backup being written is finished and counted before Terminated is raised, so the
    job's last line names the epoch that is on disk."""
    previous = signal.getsignal(signal.SIGTERM)
    io.stop_on_sigterm()
    done = []
    try:
        with pytest.raises(io.Terminated):
            with io.sigterm_after():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs here, and must only take note
                done.append("written")
        assert done == ["written"]
    finally:
        signal.signal(signal.SIGTERM, previous)
