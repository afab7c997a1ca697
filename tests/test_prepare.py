"""The data split: fractions, stratification, no row in two splits, scaler fitted on training rows only."""

import numpy as np
import pytest

from hpstudy import prepare


def data_spec(task="classification", **split):
    base = {
        "test": 0.2,
        "validation": 0.2,
        "validation_rows": "random",
        "stratify": True,
        "seed": 42,
    }
    base.update(split)
    return {
        "source": "digits",
        "task": task,
        "split": base,
        "scaler": {"kind": "standard", "by": 255.0},
        "subsample": 0,
    }


def canonical(n=1000, features=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * np.arange(1, features + 1) + 3
    x[:, 0] = np.arange(n)  # a unique id per row, to trace rows across splits
    y = rng.integers(0, classes, size=n)
    return {"x_train": x, "y_train": y}


def test_fractions_and_disjoint_rows():
    arrays = prepare.split(canonical(), data_spec())
    sizes = {p: len(arrays[f"x_{p}"]) for p in prepare.SPLITS}
    assert sizes == {"train": 600, "val": 200, "test": 200}
    ids = [set(arrays[f"x_{p}"][:, 0].tolist()) for p in prepare.SPLITS]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 1000


def test_split_is_seeded_and_stratified():
    a = prepare.split(canonical(), data_spec())
    b = prepare.split(canonical(), data_spec())
    c = prepare.split(canonical(), data_spec(seed=7))
    assert np.array_equal(a["x_test"], b["x_test"])
    assert not np.array_equal(a["x_test"], c["x_test"])
    full = np.bincount(canonical()["y_train"]) / 1000
    for part in prepare.SPLITS:
        share = np.bincount(a[f"y_{part}"], minlength=4) / len(a[f"y_{part}"])
        assert np.abs(share - full).max() < 0.02


def test_scaler_sees_training_rows_only():
    data = data_spec()
    raw = prepare.split(canonical(), data)
    out = prepare.prepare(canonical(), data)
    # Standardised training features have mean 0 and std 1; the others are scaled with the
    # training statistics, so their mean is not exactly 0.
    assert np.allclose(out["x_train"][:, 1:].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(out["x_train"][:, 1:].std(axis=0), 1, atol=1e-4)
    expected = (raw["x_test"] - raw["x_train"].mean(axis=0)) / raw["x_train"].std(axis=0)
    assert np.allclose(out["x_test"], expected, atol=1e-4)
    assert np.allclose(out["scaler_shift"], raw["x_train"].mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize(
    "kind, check",
    [
        ("minmax", lambda x: np.isclose(x.min(), 0) and np.isclose(x.max(), 1)),
        ("divide", lambda x: True),
        ("none", lambda x: True),
    ],
)
def test_other_scalers(kind, check):
    data = data_spec()
    data["scaler"] = {"kind": kind, "by": 255.0}
    raw = prepare.split(canonical(), data)
    out = prepare.prepare(canonical(), data)
    assert check(out["x_train"])
    if kind == "divide":
        assert np.allclose(out["x_train"], raw["x_train"] / 255.0, atol=1e-6)
    if kind == "none":
        assert np.allclose(out["x_train"], raw["x_train"], atol=1e-3)


def test_canonical_test_head_validation_and_validate_on_test():
    can = canonical()
    can["x_test"], can["y_test"] = can["x_train"][:100] + 10_000, can["y_train"][:100]
    head = prepare.split(can, data_spec(test="canonical", validation=50, validation_rows="head"))
    assert np.array_equal(head["x_val"], can["x_train"][:50])  # seed 003: the first rows
    assert np.array_equal(head["x_test"], can["x_test"])
    assert len(head["x_train"]) == 950
    on_test = prepare.split(can, data_spec(test="canonical", validation="test"))
    assert np.array_equal(on_test["x_val"], on_test["x_test"])  # seed 002
    frac = prepare.split(can, data_spec(test="canonical", validation=0.2))
    assert len(frac["x_val"]) == 200 and len(frac["x_train"]) == 800  # seed 000: 80/20 of train


def test_regression_targets_are_columns_and_unscaled(tmp_path):
    rng = np.random.default_rng(1)
    can = {"x_train": rng.normal(size=(200, 3)), "y_train": rng.normal(size=200) * 50 + 100}
    data = data_spec(task="regression")
    out = prepare.prepare(can, data)
    assert out["y_train"].shape == (120, 1)
    assert out["y_train"].mean() > 50  # targets are left in their units
    path = tmp_path / "d.npz"
    prepare.save(out, path, prepare.describe(out, data))
    arrays, info = prepare.load(path)
    assert info["n_outputs"] == 1 and info["rows"] == {"train": 120, "val": 40, "test": 40}
    assert np.array_equal(arrays["x_val"], out["x_val"])


def test_truncated_prepared_file_names_the_file(tmp_path):
    path = tmp_path / "d.npz"
    out = prepare.prepare(canonical(), data_spec())
    prepare.save(out, path, prepare.describe(out, data_spec()))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RuntimeError, match="d.npz is unreadable"):
        prepare.load(path)
