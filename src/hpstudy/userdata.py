"""A user's own data file (`source: file`): its identity, its checks and its conversion.

A dataset of the config may be a file in the user's project: a CSV, a Parquet table or an NPZ
holding `x` and `y` arrays of any shape. Planning calls :func:`identity` (it hashes the file and
reads only its header: no Keras, no full parse) and puts the result in the experiment spec, so
the file's SHA-256 is part of every id that uses it: an edited file gives new ids and trains
anew, a touched but unchanged one gives the same ids and trains nothing. The `convert_file` job
calls :func:`convert`, which reads the whole file with pandas (pyarrow for Parquet), refuses
what no run could use (a missing column, a non-numeric feature, a missing or non-finite value,
a single class), and writes the canonical `.npz` every source converts to.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from .datasets import FILE_SOURCE, DatasetError, load_npz, write_npz
from .io import sha256_file
from .prepare import check_finite

FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
TASKS = ("classification", "regression")

# Planning hashes each file once per process, whatever the number of baselines that use it.
_HASHES: dict[tuple, str] = {}
# Rows and flattened features of each planned file, by SHA-256, for the memory estimate.
SHAPES: dict[str, tuple[int, int]] = {}


def file_format(path: str | Path) -> str:
    return FORMATS.get(Path(path).suffix.lower(), "")


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _targets(ds: dict) -> list[str]:
    target = ds.get("target")
    return [target] if isinstance(target, str) else list(target or [])


def identity(ds: dict) -> dict:
    """What the prepared data of a file dataset depends on: its format, its bytes (SHA-256, and
    the test file's), and the target and feature columns as configured (the task is the data
    spec's own key). The paths are not in the ids. Records the file's shape in :data:`SHAPES`."""
    out = {"format": file_format(ds["path"]), "sha256": _sha256(Path(ds["path"]))}
    out["target"] = _targets(ds)
    out["features"] = list(ds["features"]) if ds.get("features") is not None else None
    if ds.get("test_path"):
        out["test_sha256"] = _sha256(Path(ds["test_path"]))
    if out["sha256"] not in SHAPES:  # once per file: every baseline and study resolves it
        SHAPES[out["sha256"]] = probe(ds)
    return out


def digest(file_identity: dict) -> str:
    """The canonical `.npz`'s name: resources/datasets/file-<digest>.npz."""
    text = json.dumps(file_identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def canonical_name(data: dict) -> str:
    """The canonical `.npz` a data spec is prepared from: resources/datasets/<name>.npz."""
    if data["source"] != FILE_SOURCE:
        return data["source"]
    return f"file-{digest(data['file'])}"


def columns(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet file, or the array names of an NPZ, from its header."""
    path, kind = Path(path), file_format(path)
    if kind == "npz":
        with zipfile.ZipFile(path) as archive:
            return [n.removesuffix(".npy") for n in archive.namelist()]
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import pandas as pd

    return [str(c) for c in pd.read_csv(path, nrows=0, sep="\t" if _is_tsv(path) else ",").columns]


def _is_tsv(path: Path) -> bool:
    return Path(path).suffix.lower() == ".tsv"


def probe(ds: dict) -> tuple[int, int]:
    """(rows, features per row) of the training file, cheaply: an NPZ's array header, a Parquet
    file's metadata, a CSV's line count. For the memory estimate only (a lower bound)."""
    path, kind = Path(ds["path"]), file_format(ds["path"])
    if kind == "npz":
        features_member = "x.npy"  # read only: the header of the feature array
        with zipfile.ZipFile(path) as archive, archive.open(features_member) as fh:
            major, _ = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape = read(fh)[0]
        return int(shape[0]), int(np.prod(shape[1:], dtype=np.int64))
    names = columns(path)
    n_features = len(ds["features"]) if ds.get("features") else len(names) - len(_targets(ds))
    if kind == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows), n_features
    with open(path, "rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(lines - 1, 0), n_features


def check(name: str, ds: dict) -> tuple[list, str] | None:
    """What is wrong with a file dataset's keys and header, as (key path, expected), or None.

    Planning calls this before it hashes anything: a missing file, an unknown format, a target or
    feature column the file does not have, a key that does not apply to an NPZ.
    """
    where = ["datasets", name]
    if "path" not in ds:
        return [*where, "path"], "the path of the data file (CSV, Parquet or NPZ)"
    if ds.get("task") not in TASKS:
        return [*where, "task"], "classification or regression: what the target column holds"
    for key in ("path", "test_path"):
        if key not in ds:
            continue
        path = Path(ds[key])
        if not file_format(path):
            return [*where, key], f"a .csv, .tsv, .parquet (.pq) or .npz file, not {path.name!r}"
        if not path.is_file():
            expected = f"an existing file; {path} does not exist (relative paths start at "
            return [*where, key], expected + "the directory Snakemake runs in)"
        found = columns(path)
        if file_format(path) == "npz":
            if ds.get("target") is not None or ds.get("features") is not None:
                return [*where, "target"], "no target or features for an NPZ: it holds x and y"
            missing = [k for k in ("x", "y") if k not in found]
            if missing:
                return [*where, key], f"an NPZ holding arrays x and y; {path} holds {found}"
            continue
        if not _targets(ds):
            return [*where, "target"], "the name of the target column (or a list of them)"
        wanted = [*_targets(ds), *(ds.get("features") or [])]
        missing = [c for c in wanted if c not in found]
        if missing:
            column = "target" if missing[0] in _targets(ds) else "features"
            return [
                *where,
                column,
            ], f"columns of {path}; it has no column {missing[0]!r} (it has {found})"
    if "test_path" in ds and ds["split"]["test"] != "canonical":
        return [*where, "split", "test"], "canonical: with test_path, the test rows are that file's"
    return None


def _table(path: Path, kind: str):
    import pandas as pd

    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        # Only an empty cell is missing: "n/a" or "NULL" in a feature is a value to report.
        return pd.read_csv(
            path, sep="\t" if _is_tsv(path) else ",", keep_default_na=False, na_values=[""]
        )
    except (OSError, ValueError, ImportError) as exc:
        raise DatasetError(
            f"{path} could not be read as {kind} ({type(exc).__name__}: {exc})"
        ) from exc


def _numeric(frame, column: str, path: Path, dataset: str):
    """One column as float64; refuses the first value that is not a number or is missing."""
    import pandas as pd

    values = frame[column]
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        value = values.iloc[row]
        shown = "an empty cell" if pd.isna(value) else repr(getattr(value, "item", lambda: value)())
        raise DatasetError(
            f"Dataset {dataset!r} ({path}): column {column!r} holds {shown} at row "
            f"{row} (line {row + 2} of the file): expected a number in every row of a feature or "
            "regression target. Fix or drop that row, or leave the column out of `features`."
        )
    return numbers.to_numpy(dtype=np.float64)


def _tabular(path: Path, kind: str, fid: dict, dataset: str, task: str) -> tuple[dict, list]:
    frame = _table(path, kind)
    targets = fid["target"]
    for column in targets + (fid["features"] or []):
        if column not in frame.columns:
            raise DatasetError(f"Dataset {dataset!r} ({path}): no column {column!r}")
    if fid["features"] is None:  # every other numeric column
        import pandas as pd

        # A column of text (an id, a name) is left out; one that is mostly numbers and holds a
        # typo is a feature with a bad value, refused below.
        features = [
            str(c)
            for c in frame.columns
            if c not in targets and pd.to_numeric(frame[c], errors="coerce").notna().any()
        ]
        left_out = [str(c) for c in frame.columns if c not in targets and str(c) not in features]
        if left_out:
            print(f"{path}: non-numeric columns left out of the features: {left_out}")
    else:
        features = fid["features"]
    if not features:
        raise DatasetError(f"Dataset {dataset!r} ({path}): no numeric feature column")
    x = np.stack([_numeric(frame, c, path, dataset) for c in features], axis=1)
    if task == "regression":
        y = np.stack([_numeric(frame, c, path, dataset) for c in targets], axis=1)
    else:
        if len(targets) != 1:
            raise DatasetError(f"Dataset {dataset!r}: a classification has one target column")
        labels = frame[targets[0]]
        missing = labels.isna().to_numpy()
        if missing.any():
            row = int(np.argmax(missing))
            raise DatasetError(
                f"Dataset {dataset!r} ({path}): column {targets[0]!r} has no label at row {row} "
                f"(line {row + 2} of the file). Give every row its class, or drop the row."
            )
        y = labels.to_numpy()
    return {"x": x, "y": y}, features


def _arrays(path: Path, fid: dict, dataset: str, task: str) -> tuple[dict, list | None]:
    kind = fid["format"]
    if kind != "npz":
        return _tabular(path, kind, fid, dataset, task)
    found = load_npz(path)
    for key in ("x", "y"):
        if key not in found:
            raise DatasetError(f"Dataset {dataset!r} ({path}): expected arrays x and y")
    x, y = found["x"], found["y"]
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"Dataset {dataset!r} ({path}): x must be numeric, received {x.dtype}")
    if len(x) != len(y):
        raise DatasetError(
            f"Dataset {dataset!r} ({path}): x has {len(x)} rows and y {len(y)}: expected one "
            "target per row"
        )
    if task == "regression" and y.dtype.kind not in "biuf":
        raise DatasetError(f"Dataset {dataset!r} ({path}): a regression's y must be numeric")
    return {"x": x, "y": y}, None


def _classes(train_y: np.ndarray, test_y, path: Path, dataset: str) -> tuple[list, dict]:
    """Labels of any type -> 0..K-1 in sorted order; the class names the report shows."""
    values = np.unique(train_y.astype(str) if train_y.dtype.kind == "O" else train_y)
    if len(values) < 2:
        raise DatasetError(
            f"Dataset {dataset!r} ({path}): the target holds one class only ({values[0].item()!r}): "
            "expected at least two classes to classify"
        )
    index = {v.item() if hasattr(v, "item") else v: i for i, v in enumerate(values)}
    codes = {}
    for part, y in (("train", train_y), ("test", test_y)):
        if y is None:
            continue
        y = y.astype(str) if y.dtype.kind == "O" else y
        unknown = ~np.isin(y, values)
        if unknown.any():
            row = int(np.argmax(unknown))
            raise DatasetError(
                f"Dataset {dataset!r}: the test file holds class {y[row].item()!r} at row {row}, "
                "which the training file never has: expected the same classes in both"
            )
        codes[part] = np.searchsorted(values, y).astype(np.int64)
    return [str(v) for v in index], codes


def convert(fid: dict, paths: dict, task: str, dataset: str, out_npz: str | Path) -> dict:
    """Read a user's file (and its test file), check it and write the canonical `.npz`.

    `fid` is the file's identity (:func:`identity`), `paths` its `path` and `test_path`. The file
    must still have the bytes the plan hashed. Returns the names written (features, classes).
    """
    parts = {"train": Path(paths["path"])}
    if paths.get("test_path"):
        parts["test"] = Path(paths["test_path"])
    for part, path in parts.items():
        want = fid["sha256" if part == "train" else "test_sha256"]
        if sha256_file(path) != want:
            raise DatasetError(
                f"Dataset {dataset!r}: {path} changed after the workflow was planned (its "
                "SHA-256 differs): run snakemake again, which plans with the new file"
            )
    arrays, feature_names = {}, None
    for part, path in parts.items():
        found, feature_names = _arrays(path, fid, dataset, task)
        arrays[f"x_{part}"], arrays[f"y_{part}"] = found["x"], found["y"]
        if found["x"].dtype.kind == "f":
            check_finite({f"x_{part}": found["x"], "feature_names": feature_names}, dataset, path)
    if len(arrays["x_train"]) < 10:
        raise DatasetError(
            f"Dataset {dataset!r} ({parts['train']}): {len(arrays['x_train'])} rows; expected at "
            "least 10 to split into training, validation and test rows"
        )
    names = {"features": feature_names, "classes": None}
    if task == "classification":
        names["classes"], codes = _classes(
            arrays["y_train"], arrays.get("y_test"), parts["train"], dataset
        )
        arrays.update({f"y_{part}": codes[part] for part in codes})
    else:
        check_finite({k: v for k, v in arrays.items() if k[:2] == "y_"}, dataset, parts["train"])
    arrays["names"] = np.frombuffer(json.dumps(names).encode(), dtype=np.uint8)
    write_npz(arrays, Path(out_npz))
    return names
