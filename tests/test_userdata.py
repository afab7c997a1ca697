"""A user's own data file (`source: file`): CSV, Parquet and NPZ, checked, hashed and converted.

- The conversion maps labels of any type to classes (names kept), takes every other numeric
  column as a feature by default, and refuses a non-numeric value, a missing or non-finite
  value, a single class and a test class the training file lacks, naming file, column and row.
- Planning refuses a missing file or column, naming the key; the file's bytes, not its path or
  its mtime, are in the experiment ids.
- End to end: a real CSV (scikit-learn's breast cancer table, string labels) trains; touching
  the file plans nothing, editing it re-prepares and retrains.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, TINY_CONFIG, plan_of, planned_jobs

from hpstudy import prepare
from hpstudy.config import ConfigError
from hpstudy.datasets import DatasetError, load_npz
from hpstudy.userdata import convert, identity


def cancer_frame(n: int | None = None) -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    frame["id"] = [f"p{i}" for i in range(len(frame))]  # text: left out of the features
    return frame if n is None else frame.iloc[:n]


def file_dataset(path, **keys) -> dict:
    return {"source": "file", "path": str(path), "split": {"test": 0.2}, **keys}


def converted(tmp_path, ds, task="classification"):
    fid = identity(ds)
    paths = {k: ds[k] for k in ("path", "test_path") if k in ds}
    names = convert(fid, paths, task, "mine", tmp_path / "out.npz")
    return load_npz(tmp_path / "out.npz"), names


def test_csv_with_string_labels_becomes_classes_and_numeric_features(tmp_path):
    cancer_frame().to_csv(tmp_path / "c.csv", index=False)
    arrays, names = converted(tmp_path, file_dataset(tmp_path / "c.csv", target="diagnosis"))
    assert names["classes"] == ["benign", "malignant"]
    assert len(names["features"]) == 30 and "id" not in names["features"]
    labels = cancer_frame()["diagnosis"].to_numpy()
    assert np.array_equal(arrays["y_train"], (labels == "malignant").astype(np.int64))
    assert arrays["x_train"].shape == (569, 30) and arrays["x_train"].dtype == np.float64


def test_parquet_and_explicit_features_keep_their_order(tmp_path):
    frame = cancer_frame()
    frame.to_parquet(tmp_path / "c.parquet")
    ds = file_dataset(
        tmp_path / "c.parquet", target="mean area", features=["mean radius", "mean texture"]
    )
    arrays, names = converted(tmp_path, ds, task="regression")
    assert names["features"] == ["mean radius", "mean texture"]
    assert np.array_equal(arrays["x_train"][:, 1], frame["mean texture"].to_numpy())
    assert np.array_equal(arrays["y_train"][:, 0], frame["mean area"].to_numpy())


def test_npz_images_of_any_shape_and_non_contiguous_labels(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 8, 8, 3)).astype(np.float32), np.repeat([3, 7, 11, 40], 10)
    np.savez(tmp_path / "img.npz", x=x, y=y)
    arrays, names = converted(tmp_path, file_dataset(tmp_path / "img.npz"))
    assert arrays["x_train"].shape == (40, 8, 8, 3)
    assert names["classes"] == ["3", "7", "11", "40"]
    assert sorted(set(arrays["y_train"].tolist())) == [0, 1, 2, 3]


def text_in_a_feature(frame):
    frame["mean radius"] = frame["mean radius"].astype(object)
    frame.loc[5, "mean radius"] = "n/a"


def nan_in_a_feature(frame):
    frame.loc[9, "mean perimeter"] = np.nan


def inf_in_a_feature(frame):
    frame.loc[4, "mean texture"] = np.inf


def one_class(frame):
    frame["diagnosis"] = "benign"


def a_missing_label(frame):
    frame.loc[3, "diagnosis"] = None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (text_in_a_feature, r"column 'mean radius' holds 'n/a' at row 5 \(line 7 of the file\)"),
        (nan_in_a_feature, r"column 'mean perimeter' holds an empty cell at row 9"),
        (inf_in_a_feature, r"x_train holds 1 non-finite .* at row 4, feature 1 \(mean texture\)"),
        (one_class, r"one class only \('benign'\)"),
        (a_missing_label, r"column 'diagnosis' has no label at row 3"),
    ],
)
def test_bad_values_are_refused_naming_file_column_and_row(tmp_path, edit, message):
    frame = cancer_frame().copy()
    edit(frame)
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DatasetError, match=message) as err:
        converted(tmp_path, file_dataset(tmp_path / "c.csv", target="diagnosis"))
    assert "c.csv" in str(err.value)
    assert not (tmp_path / "out.npz").exists()


def test_a_test_file_class_the_training_file_lacks_is_refused(tmp_path):
    cancer_frame(300).to_csv(tmp_path / "train.csv", index=False)
    test = cancer_frame().iloc[300:].copy()
    test.iloc[7, 30] = "unknown"
    test.to_csv(tmp_path / "test.csv", index=False)
    ds = file_dataset(
        tmp_path / "train.csv", target="diagnosis", test_path=str(tmp_path / "test.csv")
    )
    with pytest.raises(DatasetError, match=r"test file holds class 'unknown' at row 7"):
        converted(tmp_path, ds)


def test_a_file_changed_after_planning_is_refused(tmp_path):
    cancer_frame().to_csv(tmp_path / "c.csv", index=False)
    ds = file_dataset(tmp_path / "c.csv", target="diagnosis")
    fid = identity(ds)
    cancer_frame(100).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DatasetError, match="changed after the workflow was planned"):
        convert(fid, {"path": ds["path"]}, "classification", "mine", tmp_path / "out.npz")


# --------------------------------------------------------------------------- planning


def config_for(path, **keys) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"] = {"d": {"source": "file", "path": str(path), "task": "classification", **keys}}
    return cfg


@pytest.mark.parametrize(
    ("keys", "where", "expected"),
    [
        ({"path": "nowhere.csv", "target": "diagnosis"}, "datasets.d.path", "does not exist"),
        ({"target": "label"}, "datasets.d.target", "no column 'label'"),
        (
            {"target": "diagnosis", "features": ["mean radius", "radius"]},
            "datasets.d.features",
            "no column 'radius'",
        ),  # fmt: skip
        (
            {"target": "diagnosis", "split": {"test": "canonical"}},
            "datasets.d.split.test",
            "needs a test_path",
        ),  # fmt: skip
        ({}, "datasets.d.target", "the name of the target column"),
    ],
)
def test_planning_refuses_a_missing_file_or_column_naming_the_key(tmp_path, keys, where, expected):
    cancer_frame().to_csv(tmp_path / "c.csv", index=False)
    cfg = config_for(tmp_path / "c.csv", **{k: v for k, v in keys.items() if k != "path"})
    if "path" in keys:
        cfg["datasets"]["d"]["path"] = str(tmp_path / keys["path"])
    with pytest.raises(ConfigError) as err:
        plan_of(cfg)
    assert f"`{where}`" in str(err.value) and expected in str(err.value)


def test_file_keys_on_a_built_in_source_are_refused():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["d"]["target"] = "label"
    with pytest.raises(ConfigError, match=r"`datasets.d.target`.*only a file source has one"):
        plan_of(cfg)


def test_the_file_bytes_not_its_path_or_mtime_are_in_the_ids(tmp_path):
    cancer_frame().to_csv(tmp_path / "c.csv", index=False)
    ids = set(plan_of(config_for(tmp_path / "c.csv", target="diagnosis")).experiments)
    os.utime(tmp_path / "c.csv", (1, 1))
    shutil.copy(tmp_path / "c.csv", tmp_path / "moved.csv")
    assert set(plan_of(config_for(tmp_path / "moved.csv", target="diagnosis")).experiments) == ids
    cancer_frame(400).to_csv(tmp_path / "c.csv", index=False)
    edited = set(plan_of(config_for(tmp_path / "c.csv", target="diagnosis")).experiments)
    assert edited and not edited & ids


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_a_csv_trains_and_only_an_edit_retrains(tmp_path, run_snakemake):
    cancer_frame().to_csv(tmp_path / "cancer.csv", index=False)
    cfg = config_for("cancer.csv", target="diagnosis")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, "--cores", "2")
    assert (tmp_path / "results" / "report.html").is_file()
    (prepared,) = (tmp_path / "results" / "data").glob("d-*.npz")
    info = prepare.load(prepared)[1]
    assert info["class_names"] == ["benign", "malignant"] and len(info["feature_names"]) == 30
    assert "non-numeric columns left out of the features: ['id']" in "".join(
        p.read_text() for p in (tmp_path / "results" / "logs" / "datasets").glob("file-*.log")
    )
    os.utime(tmp_path / "cancer.csv")
    assert planned_jobs(run_snakemake(tmp_path, "-n")) == {}
    cancer_frame(400).to_csv(tmp_path / "cancer.csv", index=False)
    jobs = planned_jobs(run_snakemake(tmp_path, "-n"))
    assert jobs["convert_file"] == 1 and jobs["prepare"] == 1
    # Both experiments retrain, as the towers of one job (they differ in their learning rate).
    (training,) = [rule for rule in jobs if rule.startswith("train")]
    assert training.startswith("train_group_") and jobs[training] == 1


def test_a_tsv_reads_by_tabs_and_an_unknown_extension_names_the_key(tmp_path):
    cancer_frame(60).to_csv(tmp_path / "c.tsv", index=False, sep="\t")
    arrays, names = converted(tmp_path, file_dataset(tmp_path / "c.tsv", target="diagnosis"))
    assert arrays["x_train"].shape == (60, 30) and names["classes"] == ["benign", "malignant"]
    (tmp_path / "c.xlsx").write_bytes(b"not a table")
    with pytest.raises(ConfigError, match=r"`datasets.d.path`: expected a .csv, .tsv, .parquet"):
        plan_of(config_for(tmp_path / "c.xlsx", target="diagnosis"))


@pytest.mark.e2e
def test_the_real_boston_table_runs_seed_004s_study_through_the_file_source(
    tmp_path, run_snakemake
):
    """tools/real_data.py writes mlxtend's real Boston table; the example config trains on it."""
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "real_data.py"), "boston", "--out",
         str(tmp_path / "resources" / "real")], check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    table = pd.read_csv(tmp_path / "resources" / "real" / "boston_housing.csv")
    assert table.shape == (506, 14) and table["MEDV"].between(5, 50).all()
    shutil.copy(ROOT / "config" / "examples" / "boston_file.yaml", tmp_path / "config.yaml")
    quick = {
        "repeats": 2,
        "baselines": {"two_hidden": {"training": {"epochs": 3}}},
        "studies": {"optimizer_cv": {"cv": 2}},
    }
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(quick))
    run_snakemake(
        tmp_path, "--cores", "2", "--configfile", str(tmp_path / "config.yaml"),
        str(tmp_path / "quick.yaml"), config=None,
    )  # fmt: skip
    (prepared,) = (tmp_path / "results" / "data").glob("boston-*.npz")
    info = prepare.load(prepared)[1]
    assert info["feature_names"] == list(table.columns[:13])
    assert sum(info["rows"].values()) == 506
    assert (tmp_path / "results" / "report.html").is_file()
