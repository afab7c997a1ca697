"""What each experiment id stands for: its resolved spec and the study variants that use it.

Experiment folders are named by a hash (`results/runs/9d798315c3/`). The `catalog` job writes,
for a person and for the terminal views (`python -m hpstudy status`, the progress lines of the
logger plugin), `results/experiments.json` (id -> spec, dataset and uses) and, in each
experiment's folder, `experiment.json` with the same entry. The spec is fixed by the id; the
uses change when studies are renamed or regrouped, so the job reruns when they do (its params)
and trains nothing. No Keras, no pandas: planning and the plugin import this module.
"""

from __future__ import annotations

import json
from pathlib import Path

from .io import atomic_write_text

#: Where the catalog is written, relative to the working directory.
CATALOG = "results/experiments.json"


def build(plan) -> dict:
    """Experiment id -> {"spec", "dataset", "used_by": [{"study", "title", "variant", "runs"}]}.

    Every experiment a study or a range test uses, in the plan's order; `runs` are the run
    names the variant reads (r0, r1, ... or the folds of a cv study).
    """
    uses: dict = {}
    for study in plan.studies.values():
        for variant in study.variants:
            uses.setdefault(variant.experiment, []).append(
                {
                    "study": study.name,
                    "title": study.title,
                    "variant": variant.label,
                    "runs": [run.name for run in study.runs.get(variant.label, [])],
                }
            )
    return {
        exp: {
            "spec": plan.experiments[exp].spec,
            "dataset": plan.experiments[exp].dataset,
            "used_by": used,
        }  # fmt: skip
        for exp, used in uses.items()
    }


def write(catalog: dict, out: str | Path, runs_dir: str | Path = "results/runs") -> None:
    """The catalog to `out`, and each entry to `<runs_dir>/<id>/experiment.json` (atomically;
    a file whose content is already right is left alone, so its time stays that of the change)."""
    for exp, entry in catalog.items():
        path = Path(runs_dir) / exp / "experiment.json"
        text = json.dumps({"id": exp, **entry}, indent=2, sort_keys=True) + "\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
    atomic_write_text(out, json.dumps(catalog, indent=2, sort_keys=True) + "\n")


def read(root: str | Path = ".") -> dict:
    """The catalog under `root` (a working directory), or {} when none was written yet."""
    path = Path(root) / CATALOG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def describe(entry: dict | None, exp: str) -> str:
    """`study: variant` for each use of an experiment, or its id when the catalog lacks it."""
    if not entry or not entry.get("used_by"):
        return exp
    names = [f"{use['study']}: {use['variant']}" for use in entry["used_by"]]
    shown = ", ".join(names[:3])
    return shown + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
