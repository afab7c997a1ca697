"""Bad input is rejected up front: before any job, with the key path, the file and what was expected.

Most cases run at the library level (`plan.load_plan`, which common.smk calls the same way); a
handful go through the real `snakemake` command, which must stop before planning a job and leave
results/ untouched.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_snakemake

from hpstudy import datasets, prepare
from hpstudy.config import ConfigError
from hpstudy.plan import load_plan

GOOD = {
    "datasets": {"digits": {"source": "digits", "subsample": 100}},
    "baselines": {
        "main": {
            "dataset": "digits",
            "model": {"hidden": [8]},
            "optimizer": {"name": "sgd", "learning_rate": 0.01},
            "training": {"epochs": 2, "batch_size": 32},
        }
    },
    "studies": {
        "lr": {"kind": "ofat", "baseline": "main", "factors": {"optimizer.learning_rate": [0.1]}}
    },
}


def edit(path: str, value):
    """A case that sets the dotted `path` (keys of GOOD; digits index lists) to `value`."""

    def apply(cfg):
        *parents, last = path.split(".")
        node = cfg
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value
        return cfg

    return apply


def study(**fields):
    """A case that replaces the `lr` study by one with these fields."""

    def apply(cfg):
        cfg["studies"]["lr"] = {"kind": "ofat", "baseline": "main", **fields}
        return cfg

    return apply


# id -> (change to GOOD, or raw YAML text; fragments the message must contain: key path, expected).
CASES = {
    "unknown top-level key": (edit("epochz", 3), ["<top level>", "only the keys", "'epochz'"]),
    "unknown key in training": (
        edit("baselines.main.training.epoch", 3),
        ["baselines.main.training", "only the keys", "batch_size", "'epoch'"],
    ),
    "unknown key in a study": (
        edit("studies.lr.factor", {}),
        ["studies.lr", "only the keys", "'factor'"],
    ),
    "epochs of the wrong type": (
        edit("baselines.main.training.epochs", "ten"),
        ["baselines.main.training.epochs", "integer", "'ten'"],
    ),
    "epochs given as a boolean": (
        edit("baselines.main.training.epochs", True),
        ["baselines.main.training.epochs", "integer"],
    ),
    "hidden layers as a string": (
        edit("baselines.main.model.hidden", "32,16"),
        ["baselines.main.model.hidden", "array"],
    ),
    "zero epochs": (edit("baselines.main.training.epochs", 0), ["training.epochs", ">= 1", "0"]),
    "negative epochs": (edit("baselines.main.training.epochs", -3), ["training.epochs", ">= 1"]),
    "zero batch size": (
        edit("baselines.main.training.batch_size", 0),
        ["baselines.main.training.batch_size", ">= 1"],
    ),
    "zero learning rate": (
        edit("baselines.main.optimizer.learning_rate", 0),
        ["baselines.main.optimizer.learning_rate", "> 0", "Received: 0"],
    ),
    "negative learning rate": (
        edit("baselines.main.optimizer.learning_rate", -0.1),
        ["baselines.main.optimizer.learning_rate", "> 0"],
    ),
    "learning rate as a number in a string": (
        edit("baselines.main.optimizer.learning_rate", "0.01"),
        ["baselines.main.optimizer.learning_rate", "lr_range:"],
    ),
    "dropout of 1": (
        edit("baselines.main.model.dropout", {"rate": 1.0}),
        ["baselines.main.model.dropout.rate", "< 1"],
    ),
    "negative dropout": (
        edit("baselines.main.model.dropout", {"rate": -0.1}),
        ["baselines.main.model.dropout.rate", ">= 0"],
    ),
    "empty hidden layers": (
        edit("baselines.main.model.hidden", []),
        ["baselines.main.model.hidden", "at least 1 item"],
    ),
    "zero units in a layer": (
        edit("baselines.main.model.hidden", [8, 0]),
        ["baselines.main.model.hidden[1]", ">= 1"],
    ),
    "unknown dataset source": (
        edit("datasets.digits.source", "imagenet"),
        ["datasets.digits.source", "one of digits", "'imagenet'"],
    ),
    "unknown activation": (
        edit("baselines.main.model.activation", "rleu"),
        ["baselines.main.model.activation", "one of relu", "'rleu'"],
    ),
    "unknown initializer": (
        edit("baselines.main.model.initializer", "he_norml"),
        ["baselines.main.model.initializer", "one of he_normal", "'he_norml'"],
    ),
    "unknown optimizer": (
        edit("baselines.main.optimizer.name", "adamw"),
        ["baselines.main.optimizer.name", "one of sgd", "'adamw'"],
    ),
    "unknown scaler": (
        edit("datasets.digits.scaler", {"kind": "robust"}),
        ["datasets.digits.scaler.kind", "one of standard", "'robust'"],
    ),
    "ofat factor path not in the baseline": (
        study(factors={"optimizer.learnin_rate": [0.1]}),
        ["studies.lr.factors.optimizer.learnin_rate", "dotted path that exists"],
    ),
    "variant path not in the baseline": (
        study(variants=[{"label": "x", "set": {"model.dropuot.rate": 0.2}}]),
        ["studies.lr.variants[0].set.model.dropuot.rate", "dotted path that exists"],
    ),
    "ofat factor value that is invalid": (
        study(factors={"training.epochs": [0]}),
        ["studies.lr.factors.training.epochs[0]", ">= 1", "training.epochs"],
    ),
    "study referring to a missing baseline": (
        study(baseline="mian"),
        ["studies.lr.baseline", "one of the baselines main", "'mian'"],
    ),
    "baseline referring to a missing dataset": (
        edit("baselines.main.dataset", "digitz"),
        ["baselines.main.dataset", "one of the datasets digits", "'digitz'"],
    ),
    "report naming a missing study": (
        edit("report", {"studies": ["lrr"]}),
        ["report.studies[0]", "the name of a study", "'lrr'"],
    ),
    "cv with k < 2": (study(kind="cv", cv=1), ["studies.lr.cv", ">= 2"]),
    "factor on a key the baseline's optimizer does not have": (
        study(factors={"optimizer.beta_1": [0.8]}),
        ["studies.lr.factors.optimizer.beta_1", "learning_rate", "optimizer 'sgd'"],
    ),
    "test and validation fractions leaving nothing to train": (
        edit("datasets.digits.split", {"test": 0.5, "validation": 0.5}),
        ["datasets.digits.split", "test + validation fractions < 0.95"],
    ),
    "a test fraction above 1": (
        edit("datasets.digits.split", {"test": 1.5}),
        ["datasets.digits.split.test", "canonical"],
    ),
    "repeats of zero": (edit("repeats", 0), ["repeats", ">= 1"]),
    "a grid study without a grid": (study(kind="grid"), ["studies.lr.grid", "mapping"]),
    "an ofat study with nothing to vary": (study(), ["studies.lr", "at least one entry"]),
    "no studies": (edit("studies", {}), ["studies", "at least 1"]),
    "duplicate study names": (
        yaml.safe_dump({k: v for k, v in GOOD.items() if k != "studies"})
        + "studies:\n"
        + "  lr: {kind: ofat, baseline: main, factors: {training.epochs: [3]}}\n"
        + "  lr: {kind: ofat, baseline: main, factors: {training.epochs: [4]}}\n",
        ["Duplicate key 'lr'", "`studies.lr`", "line"],
    ),
    "YAML that does not parse": (
        "datasets:\n  digits: {source: digits\nbaselines: {}\n",
        ["not valid YAML", "line 3", "Expected a YAML mapping"],
    ),
    "a list at the top level": ("- datasets\n- studies\n", ["expected a mapping"]),
}


def write_case(case, path: Path) -> Path:
    change = CASES[case][0]
    text = change if isinstance(change, str) else yaml.safe_dump(change(copy.deepcopy(GOOD)))
    path.write_text(text)
    return path


def load_like_snakemake(path: Path):
    """What common.smk does: Snakemake parses the file (last duplicate wins), the plan re-reads it."""
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        config = None  # Snakemake itself stops here; see test_yaml_errors_*
    if not isinstance(config, dict):
        config = None
    return load_plan([str(path)], config)


def test_the_good_config_plans():
    assert len(CASES) >= 20
    plan = load_plan([], copy.deepcopy(GOOD))
    assert len(plan.runs) == 2


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_rejected_with_path_file_and_expectation(case, tmp_path):
    path = write_case(case, tmp_path / "bad-config.yaml")
    with pytest.raises(ConfigError) as err:
        load_like_snakemake(path)
    message = str(err.value)
    assert "bad-config.yaml" in message, message
    assert "xpected" in message, message  # "expected" / "Expected": what would have been right
    for fragment in CASES[case][1]:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


# --------------------------------------------------------------------------- the real command


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, config=None, check=False, timeout=300)


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


@pytest.fixture
def workdir(tmp_path):
    """A directory with a results/ tree from earlier work, which a rejected config must not touch."""
    old = tmp_path / "results" / "studies" / "old"
    old.mkdir(parents=True)
    (old / "runs.csv").write_text("variant\nbaseline\n")
    return tmp_path


SNAKEMAKE_CASES = [
    "unknown key in training",
    "zero learning rate",
    "study referring to a missing baseline",
    "duplicate study names",
    "ofat factor path not in the baseline",
]


@pytest.mark.e2e
@pytest.mark.parametrize("case", SNAKEMAKE_CASES)
def test_snakemake_stops_before_any_job(case, workdir):
    before = tree(workdir / "results")
    config = write_case(case, workdir / "bad-config.yaml")
    proc = snakemake(workdir, "--cores", "1", "--configfile", str(config))
    assert proc.returncode != 0
    for fragment in ["bad-config.yaml", *CASES[case][1]]:
        assert fragment in proc.stderr, f"{fragment!r} not in:\n{proc.stderr[-3000:]}"
    assert "Nothing was run." in proc.stderr
    assert tree(workdir / "results") == before


@pytest.mark.e2e
def test_yaml_errors_in_the_default_config_name_the_file_and_line(workdir):
    """Snakemake's own parser only says "not valid JSON or YAML": the Snakefile checks first."""
    before = tree(workdir / "results")
    (workdir / "config").mkdir()
    write_case("YAML that does not parse", workdir / "config" / "config.yaml")
    proc = snakemake(workdir, "--cores", "1")
    assert proc.returncode != 0
    for fragment in ["config/config.yaml", "not valid YAML", "line 3, column"]:
        assert fragment in proc.stderr, proc.stderr[-3000:]
    assert tree(workdir / "results") == before


@pytest.mark.e2e
def test_yaml_errors_in_a_configfile_point_to_the_checker(workdir):
    """A --configfile is parsed by Snakemake before any workflow code runs: it must still stop,
    and `python -m hpstudy check FILE` (named in the README) gives the file, line and column."""
    before = tree(workdir / "results")
    config = write_case("YAML that does not parse", workdir / "bad-config.yaml")
    proc = snakemake(workdir, "--cores", "1", "--configfile", str(config))
    assert proc.returncode != 0 and "not valid JSON or YAML" in proc.stderr
    assert tree(workdir / "results") == before
    check = subprocess.run(
        [sys.executable, "-m", "hpstudy", "check", str(config)], capture_output=True, text=True
    )
    assert check.returncode != 0
    assert "bad-config.yaml is not valid YAML at line 3, column" in check.stderr


def test_checker_accepts_a_good_config(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    check = subprocess.run(
        [sys.executable, "-m", "hpstudy", "check", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert "2 runs" in check.stdout


# --------------------------------------------------------------------------- damaged data files


def test_dataset_file_failing_its_checksum_names_the_file(tmp_path):
    raw = tmp_path / "boston_housing"
    raw.mkdir()
    (raw / "boston_housing.npz").write_bytes(b"not the published file")
    with pytest.raises(datasets.DatasetError, match=r"boston_housing\.npz") as err:
        datasets.convert("boston_housing", raw, tmp_path / "out.npz")
    assert "sha256" in str(err.value).lower() or "checksum" in str(err.value).lower()
    assert not (tmp_path / "out.npz").exists()


def test_truncated_prepared_npz_names_the_file(tmp_path):
    arrays = {k: np.zeros((4, 2), np.float32) for k in ("x_train", "x_val", "x_test")}
    arrays.update({k: np.zeros(4, np.int64) for k in ("y_train", "y_val", "y_test")})
    path = tmp_path / "digits-0123abcd.npz"
    prepare.save(arrays, path, {"input_shape": [2], "n_classes": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match=r"digits-0123abcd\.npz.*delete it"):
        prepare.load(path)


def test_truncated_dataset_npz_names_the_file(tmp_path):
    path = tmp_path / "digits.npz"
    datasets.convert("digits", None, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(datasets.DatasetError, match=r"digits\.npz"):
        datasets.load_npz(path)
