"""Bad input is rejected up front: before any job, with the key path, the file and what was expected.

Most cases run at the library level (`plan.load_plan`, which common.smk calls the same way); a
handful go through the real `snakemake` command, which must stop before planning a job and leave
results/ untouched.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_snakemake

from hpstudy import config as config_mod
from hpstudy import datasets, errors, prepare
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


def alias_bomb(levels: int, width: int = 10) -> str:
    """YAML whose aliases nest `levels` deep, each repeating the level below `width` times."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def inline_alias_bomb(levels: int, width: int = 10) -> str:
    """The same as one flow value, each level's anchor defined at its first use: [&t0 [...], *t0]."""
    value = "[" + ", ".join(["x"] * width) + "]"
    for i in range(levels - 1):
        value = f"[&t{i} {value}, " + ", ".join([f"*t{i}"] * (width - 1)) + "]"
    return value


def good_yaml_with(text: str) -> str:
    """GOOD as YAML, then `text` (more top-level keys)."""
    return yaml.safe_dump(GOOD) + text


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
        edit("baselines.main.optimizer.name", "adamx"),
        ["baselines.main.optimizer.name", "one of sgd", "'adamx'"],
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
    # YAML aliases (issue 13, item 2)
    "nine levels of YAML aliases": (
        alias_bomb(9),
        ["aliases expand it to 1,234,567,909 values", "*a7 at line 9, column 10", "100,000"],
    ),
    "nine levels of YAML aliases inside a valid config": (
        good_yaml_with(f"title: {inline_alias_bomb(9)}\n"),
        ["aliases expand it to", "*t7 at line", "100,000"],
    ),
    "an alias that contains itself": (
        good_yaml_with("report: &r {studies: [*r]}\n"),
        ["alias *r at line", "contains it", "never ends"],
    ),
    "a duplicate key in a mapping repeated by an alias": (
        yaml.safe_dump({k: v for k, v in GOOD.items() if k != "baselines"})
        + "baselines:\n"
        + "  main:\n    dataset: digits\n    training: &t {epochs: 2, batch_size: 8, epochs: 3}\n"
        + "  other: {dataset: digits, training: *t}\n",
        ["Duplicate key 'epochs'", "line", "`baselines.main.training.epochs`"],
    ),
    # bounds (issue 13, item 3)
    "a split seed NumPy cannot take (with the validation split's seed + 1)": (
        edit("datasets.digits.split", {"seed": 2**32 - 1}),
        ["datasets.digits.split.seed", "<= 4294967294", "4294967295"],
    ),
    "a training seed of 2**40": (
        edit("baselines.main.training.seed", 2**40),
        ["baselines.main.training.seed", "<= 4294967295", str(2**40)],
    ),
    "a training seed above 2**32 set by a factor": (
        study(factors={"training.seed": [2**32]}),
        ["studies.lr.factors.training.seed[0]", "<= 4294967295", "training.seed"],
    ),
    "10**12 epochs": (
        edit("baselines.main.training.epochs", 10**12),
        ["baselines.main.training.epochs", "<= 1000000"],
    ),
    "a batch size beyond int64": (
        edit("baselines.main.training.batch_size", 2**63),
        ["baselines.main.training.batch_size", "<= 9223372036854775807"],
    ),
    "100,000 repeats": (edit("repeats", 100_000), ["repeats", "<= 10000"]),
    "100,000 repeats in a study": (
        study(factors={"optimizer.learning_rate": [0.1]}, repeats=100_000),
        ["studies.lr.repeats", "<= 10000"],
    ),
    "10**12 MB of memory": (
        edit("resources", {"mem_mb": 10**12}),
        ["resources.mem_mb", "<= 67108864"],
    ),
    "a million threads": (edit("resources", {"threads": 10**6}), ["resources.threads", "<= 4096"]),
    "two hidden layers of 10**9 units": (
        edit("baselines.main.model.hidden", [10**9, 10**9]),
        [
            "`baselines.main`",
            "expected an experiment that fits resources.mem_mb = 2,048 MB",
            "1,000,000,076,000,000,010 parameters",
            "Lower model.hidden",
        ],
    ),
    "a factor whose layers cannot fit mem_mb": (
        study(factors={"model.hidden": [[200_000, 10_000]]}),
        ["`studies.lr.factors.model.hidden[0]`", "resources.mem_mb = 2,048 MB", "needs at least"],
    ),
    "an unknown key in limits": (
        edit("limits", {"max_runs": 10}),
        ["limits", "only the keys max_runs_warning", "'max_runs'"],
    ),
}


@contextmanager
def deadline(seconds: int):
    """Fail the test after `seconds` instead of hanging (before issue 13, nine levels of aliases
    took minutes)."""

    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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
    with deadline(60), pytest.raises(ConfigError) as err:
        load_like_snakemake(path)
    message = str(err.value)
    assert "bad-config.yaml" in message, message
    assert "xpected" in message, message  # "expected" / "Expected": what would have been right
    for fragment in CASES[case][1]:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pytest.mark.parametrize(
    "text", [alias_bomb(9), good_yaml_with(f"title: {inline_alias_bomb(9)}\n")]
)
def test_alias_bomb_is_refused_quickly_with_a_short_message(text, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert path.stat().st_size < 1000
    started = time.perf_counter()
    with deadline(30), pytest.raises(ConfigError) as err:
        load_like_snakemake(path)
    assert time.perf_counter() - started < 2
    assert len(str(err.value)) < 2000, len(str(err.value))


def test_aliases_within_the_bound_are_expanded_and_quoted_short(tmp_path):
    """Four levels (11,111 values) are allowed; a wrong type quotes 200 characters of them."""
    path = tmp_path / "aliases.yaml"
    path.write_text(good_yaml_with(f"title: {inline_alias_bomb(4)}\n"))
    with deadline(30), pytest.raises(ConfigError) as err:
        load_like_snakemake(path)
    message = str(err.value)
    assert "`title`: expected a value of type string. Received: [[[['x', 'x'" in message
    assert "characters)." in message and len(message) < 500, message


def test_a_long_received_value_is_cut_in_cross_key_checks():
    cfg = copy.deepcopy(GOOD)
    cfg["report"] = {"studies": ["x" * 5000]}
    with pytest.raises(ConfigError) as err:
        config_mod.validate(cfg, ["c.yaml"])
    assert "Received: 'xxxx" in str(err.value)
    assert "… (5,002 characters)." in str(err.value)
    assert len(str(err.value)) < 500


def test_quote_cuts_long_values_and_ends_on_lists_that_contain_themselves():
    assert errors.quote({"a": [1, 2.5, None, True, ("t",)]}) == repr(
        {"a": [1, 2.5, None, True, ("t",)]}
    )
    assert errors.quote("y" * 300) == repr("y" * 200)[:200] + "… (302 characters)"
    shared = ["z" * 10] * 10
    for _ in range(8):  # 10**9 strings if expanded
        shared = [shared] * 10
    assert errors.quote(shared).endswith("… (over 100,000 characters)")
    loop: list = [1]
    loop.append(loop)
    assert errors.quote(loop) == "[1, [...]]"


def test_largest_allowed_seeds_plan():
    cfg = copy.deepcopy(GOOD)
    cfg["datasets"]["digits"]["split"] = {"seed": 2**32 - 2}
    cfg["baselines"]["main"]["training"]["seed"] = 2**32 - 1
    plan = load_plan([], cfg)
    assert {e.spec["training"]["seed"] for e in plan.experiments.values()} == {2**32 - 1}


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
    "nine levels of YAML aliases inside a valid config",
    "a factor whose layers cannot fit mem_mb",
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


def test_an_optimizer_key_the_optimizer_does_not_take_is_refused(plan_of, tiny_config):
    """momentum on adam was dropped without a word; now it is an error naming key and optimizer."""
    tiny_config["baselines"]["b"]["optimizer"] = {
        "name": "adam",
        "learning_rate": 0.001,
        "momentum": 0.9,
    }
    with pytest.raises(ConfigError) as err:
        plan_of(tiny_config)
    message = str(err.value)
    assert "`baselines.b.optimizer.momentum`: expected a key that optimizer 'adam' takes" in message
    assert "Received: 0.9" in message
    tiny_config["baselines"]["b"]["optimizer"] = {
        "name": "sgd",
        "learning_rate": 0.01,
        "momentum": 0.9,
    }
    tiny_config["studies"]["lr"]["variants"] = [
        {"label": "adam, momentum", "set": {"optimizer.name": "adam", "optimizer.momentum": 0.5}}
    ]
    del tiny_config["studies"]["lr"]["factors"]
    with pytest.raises(
        ConfigError, match=r"`studies.lr.variants\[0\].set.optimizer.momentum`: .*'adam'"
    ):
        plan_of(tiny_config)
    # Switching the optimizer alone drops the baseline's momentum: it chose another optimizer.
    tiny_config["studies"]["lr"]["variants"][0]["set"] = {"optimizer.name": "adam"}
    plan = plan_of(tiny_config)
    assert {"adam", "sgd"} == {e.spec["optimizer"]["name"] for e in plan.experiments.values()}
