"""Split and scale a dataset once, for every training job that uses the same data settings.

The scaler is fitted on the training split only, so no statistic of the validation or test rows
leaks into training. The result is one `.npz` without pickled objects.

Cross-validation folds (`fold_arrays`) come from the training split only (never the validation
or test rows), seeded by the data split's seed and stratified by class for classification, so
every candidate of a cv study sees the same folds; a fitted scaler is refit on each fold's
training rows.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .datasets import DatasetError
from .io import atomic_path

SPLITS = ("train", "val", "test")


def _split(x, y, size, seed, stratify, head=False):
    """Hold out `size` rows (a fraction or a count) of (x, y); return (kept, held)."""
    n = len(x)
    count = int(round(size * n)) if isinstance(size, float) else int(size)
    if not 0 < count < n:
        raise ValueError(
            f"Cannot hold out {size!r} of {n} rows: expected between 1 and {n - 1} rows."
        )
    if head:  # seed 003: the first rows are the validation set
        return (x[count:], y[count:]), (x[:count], y[:count])
    strat = y if stratify else None
    from sklearn.model_selection import train_test_split  # 1 s to import: only when splitting

    x_keep, x_held, y_keep, y_held = train_test_split(
        x, y, test_size=count, random_state=seed, shuffle=True, stratify=strat
    )
    return (x_keep, y_keep), (x_held, y_held)


def split(canonical: dict, data: dict) -> dict:
    """Split canonical arrays into train/val/test following `data["split"]`.

    `canonical` has x_train, y_train and, for datasets that ship one, x_test, y_test.
    Returns a dict with x_train, y_train, x_val, y_val, x_test, y_test. The test rows are drawn
    with `split.seed`, the validation rows with `split.validation_seed` (default: `split.seed`).
    """
    cfg = data["split"]
    classification = data["task"] == "classification"
    stratify = cfg["stratify"] and classification
    seed = cfg["seed"]
    x, y = canonical["x_train"], canonical["y_train"]
    if cfg["test"] == "canonical":
        if "x_test" not in canonical:
            raise ValueError(f"Dataset {data['source']!r} has no canonical test split.")
        test = (canonical["x_test"], canonical["y_test"])
        rest = (x, y)
        val_size = cfg["validation"]
    else:
        if "x_test" in canonical:  # a fraction of everything the dataset has
            x = np.concatenate([x, canonical["x_test"]])
            y = np.concatenate([y, canonical["y_test"]])
        rest, test = _split(x, y, cfg["test"], seed, stratify)
        val_size = cfg["validation"]
        if isinstance(val_size, float):  # a fraction of all rows, so 0.2/0.2 gives 60/20/20
            val_size = int(round(val_size * len(x)))
    if val_size == "test":
        train, val = rest, test
    else:
        # The test rows above depend on `seed` only: a repeat that draws its own validation rows
        # (repeats_vary: split) sets `validation_seed` and keeps the same test rows.
        val_seed = cfg.get("validation_seed", seed)
        train, val = _split(
            *rest, val_size, val_seed + 1, stratify, head=cfg["validation_rows"] == "head"
        )
    return {
        "x_train": train[0],
        "y_train": train[1],
        "x_val": val[0],
        "y_val": val[1],
        "x_test": test[0],
        "y_test": test[1],
    }


def fit_scaler(x_train: np.ndarray, scaler: dict) -> dict:
    """Per-feature `shift` and `scale` such that (x - shift) / scale, from training rows only."""
    flat = x_train.reshape(len(x_train), -1).astype(np.float64)
    kind = scaler["kind"]
    if kind == "standard":
        shift, scale = flat.mean(axis=0), flat.std(axis=0)
    elif kind == "minmax":
        shift, scale = flat.min(axis=0), flat.max(axis=0) - flat.min(axis=0)
    elif kind == "divide":
        shift, scale = np.zeros(flat.shape[1]), np.full(flat.shape[1], float(scaler["by"]))
    elif kind == "none":
        shift, scale = np.zeros(flat.shape[1]), np.ones(flat.shape[1])
    else:
        raise ValueError(
            f"Expected scaler kind standard, minmax, divide or none. Received: {kind!r}"
        )
    scale = np.where(scale == 0, 1.0, scale)  # constant features (digit borders) stay at 0
    return {"shift": shift, "scale": scale}


def apply_scaler(x: np.ndarray, params: dict) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    out = (flat - params["shift"]) / params["scale"]
    return out.reshape(x.shape).astype(np.float32)


def subsample(arrays: dict, n: int) -> dict:
    """Keep the first `n` training rows and n/4 validation and test rows (quick trials, tests)."""
    if not n:
        return arrays
    small = max(1, n // 4)
    out = {}
    for key, value in arrays.items():
        out[key] = value[:n] if key.endswith("_train") else value[:small]
    return out


def check_finite(canonical: dict, dataset: str, path: str | Path) -> None:
    """Refuse a NaN or an infinity in the features or targets of a source's arrays.

    One such value makes every run that sees it diverge, which the report would otherwise blame
    on the hyperparameters. The error names the dataset, the file, the array, the first bad row
    (0-based, in the file's order) and its feature (index, or name where the file has
    `feature_names`), and how many values are bad in all.
    """
    names = canonical.get("feature_names")
    for key in sorted(k for k in canonical if k[:2] in ("x_", "y_")):
        values = canonical[key]
        if not np.issubdtype(values.dtype, np.floating):
            continue  # integers and booleans hold no NaN
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        where = np.argwhere(bad)[0]
        row, cell = int(where[0]), tuple(int(i) for i in where[1:])
        kind = "feature" if key.startswith("x_") else "target"
        if not cell:
            column = f"its only {kind}"
        elif kind == "feature" and names is not None and len(cell) == 1:
            column = f"feature {cell[0]} ({names[cell[0]]!s})"
        elif len(cell) == 1:
            column = f"{kind} {cell[0]}"
        else:
            column = f"{kind} at index {cell}"
        raise DatasetError(
            f"Dataset {dataset!r} ({path}): {key} holds {int(bad.sum())} non-finite value(s); "
            f"the first is {values[(row, *cell)].item()!r} at row {row}, {column}. Every run trained on "
            "it would diverge. Fix or drop that row in the source file; for a bundled or "
            f"downloaded source, delete {path} and rerun, which converts it again."
        )


def prepare(canonical: dict, data: dict) -> dict:
    """Split, subsample and scale; returns the arrays to save plus their scaler parameters."""
    arrays = subsample(split(canonical, data), data.get("subsample", 0))
    params = fit_scaler(arrays["x_train"], data["scaler"])
    out = {}
    for part in SPLITS:
        out[f"x_{part}"] = apply_scaler(arrays[f"x_{part}"], params)
        y = arrays[f"y_{part}"]
        if data["task"] == "classification":
            out[f"y_{part}"] = y.reshape(-1).astype(np.int64)
        else:
            by = data["scaler"].get("target_by", 1.0)  # e.g. dollars -> $100,000 (seed 003)
            out[f"y_{part}"] = (y.reshape(len(y), -1) / by).astype(np.float32)
    out["scaler_shift"] = params["shift"].astype(np.float32)
    out["scaler_scale"] = params["scale"].astype(np.float32)
    return out


def describe(arrays: dict, data: dict) -> dict:
    """Shapes and class counts, written next to the data for people and the report."""
    info = {"data": data, "rows": {p: int(len(arrays[f"y_{p}"])) for p in SPLITS}}
    info["input_shape"] = list(arrays["x_train"].shape[1:])
    if data["task"] == "classification":
        labels = np.concatenate([arrays[f"y_{p}"] for p in SPLITS])
        info["n_classes"] = int(labels.max()) + 1
    else:
        info["n_outputs"] = int(arrays["y_train"].shape[1])
    return info


def save(arrays: dict, path: str | Path, info: dict) -> None:
    """Write the arrays (no pickle) and a JSON description, each atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, meta=np.frombuffer(json.dumps(info).encode(), dtype=np.uint8), **arrays)


def load(path: str | Path) -> tuple[dict, dict]:
    """Read a prepared `.npz`; returns (arrays, info)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise RuntimeError(
            f"Prepared data {path} is unreadable ({exc}). Expected a complete .npz written by the "
            "prepare job: delete it and run snakemake again to rebuild it."
        ) from None
    info = json.loads(arrays.pop("meta").tobytes().decode())
    return arrays, info


# Cross-validation folds ----------------------------------------------------------------------


def fold_indices(y: np.ndarray, k: int, seed: int, stratify: bool) -> list[np.ndarray]:
    """Row indices of each of the `k` folds of `y` (disjoint, covering every row, sorted)."""
    from sklearn.model_selection import KFold, StratifiedKFold  # 1 s to import: only here

    if stratify:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    labels = np.asarray(y).reshape(len(y), -1)[:, 0] if stratify else None
    return [np.sort(held) for _, held in splitter.split(np.zeros(len(y)), labels)]


def fold_arrays(arrays: dict, data: dict, k: int, fold: int) -> dict:
    """Training and validation arrays of fold `fold` of `k`, from the training split only.

    `arrays` are a prepared split (x_train, y_train, ..., scaler_shift, scaler_scale) and `data`
    its spec. A fitted scaler (standard, minmax) is refit on the fold's training rows, so no
    statistic of the held-out fold reaches its own training. No test rows are returned.
    """
    stratify = data["task"] == "classification" and data["split"]["stratify"]
    held = fold_indices(arrays["y_train"], k, data["split"]["seed"], stratify)[fold]
    keep = np.setdiff1d(np.arange(len(arrays["y_train"])), held)
    x, y = arrays["x_train"], arrays["y_train"]
    x_fit, x_val = x[keep], x[held]
    if data["scaler"]["kind"] in ("standard", "minmax"):
        shape = x.shape[1:]
        shift, scale = arrays["scaler_shift"], arrays["scaler_scale"]
        raw = [(a.reshape(len(a), -1).astype(np.float64) * scale + shift) for a in (x_fit, x_val)]
        params = fit_scaler(raw[0], data["scaler"])
        x_fit, x_val = (apply_scaler(r, params).reshape((-1, *shape)) for r in raw)
    return {"x_train": x_fit, "y_train": y[keep], "x_val": x_val, "y_val": y[held]}
