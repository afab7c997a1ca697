"""The HTML report: one self-contained file (inline CSS and images, no network), every user
string escaped by Jinja2's autoescape."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import jinja2
import pandas as pd

from .analysis import metric_of
from .figures import colours
from .io import atomic_write_text

TEMPLATES = Path(__file__).parent / "templates"


def image_uri(path: str | Path) -> str:
    """A data: URI for an SVG or PNG file, so the report needs no file beside it."""
    path = Path(path)
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def fmt(value, digits: int = 4) -> str:
    """Numbers for tables: 4 significant digits, blanks for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def pm(mean, std, runs: int) -> str:
    if runs > 1 and std is not None and math.isfinite(std):
        return f"{fmt(mean)} ± {fmt(std, 2)}"
    return fmt(mean)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "snakemake", "scikit-learn", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(repo: str | Path = ".") -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def study_section(study: dict, summary_csv, runs_csv, figure) -> dict:
    """Everything the template shows for one study, with numbers already formatted."""
    metric = metric_of(study["task"])
    summary = pd.read_csv(summary_csv)
    runs = pd.read_csv(runs_csv)
    palette = colours(study)
    rows = []
    for rec in summary.to_dict("records"):
        n = int(rec["runs"])
        rows.append(
            {
                "label": rec["variant"],
                "colour": palette.get(rec["variant"], "#888"),
                "reference": bool(rec["is_reference"]),
                "best": bool(rec["is_best"]),
                "experiment": rec["experiment"],
                "cells": [fmt(rec.get(p)) for p in study["varied"]],
                "best_val": pm(rec[f"best_val_{metric}_mean"], rec[f"best_val_{metric}_std"], n),
                "best_epoch": fmt(rec["best_epoch_mean"], 3),
                "gap": fmt(rec["final_train_val_gap_mean"]),
                "test": pm(rec[f"test_{metric}_mean"], rec[f"test_{metric}_std"], n),
                "delta": ""
                if rec["is_reference"]
                else f"{rec['delta_vs_reference']:+.4g}"
                if math.isfinite(rec["delta_vs_reference"])
                else "–",
                "sec_per_epoch": fmt(rec["seconds_per_epoch"], 3),
                "params": fmt(int(rec["params"])),
                "diverged": int(rec["diverged"]),
                "runs": n,
            }
        )
    return {
        "study": study,
        "metric": metric,
        "rows": rows,
        "figure": image_uri(figure),
        "n_runs": len(runs),
        "diverged": runs[runs["status"] == "diverged"][
            ["variant", "run", "diverged_epoch"]
        ].to_dict("records"),
    }


def render(
    title: str,
    sections: list[dict],
    config_files: dict[str, str],
    experiments: dict[str, dict],
    compute_seconds: float,
    workdir: str | Path = ".",
) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template("report.html.j2")
    return template.render(
        title=title,
        sections=sections,
        config_files=config_files,
        experiments={k: json.dumps(v, indent=2, sort_keys=True) for k, v in experiments.items()},
        versions=versions(),
        commit=git_commit(workdir),
        host=platform.node(),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        compute_seconds=fmt(compute_seconds, 4),
    )


def build_report(params: dict, inputs: dict, output: str | Path) -> None:
    """Gather every study's tables and figure into `output` (written atomically).

    params: {"title", "studies": [study description], "config_files": {name: text},
    "experiments": {id: spec}}; inputs: {"summary": [...], "runs": [...], "figure": [...]},
    aligned with params["studies"].
    """
    sections = []
    wall: dict[tuple, float] = {}  # a run shared by several studies counts once
    for study, summary, runs, figure in zip(
        params["studies"], inputs["summary"], inputs["runs"], inputs["figure"]
    ):
        sections.append(study_section(study, summary, runs, figure))
        for rec in pd.read_csv(runs).to_dict("records"):
            wall[(rec["experiment"], rec["run"])] = float(rec["wall_seconds"])
    html = render(
        params["title"],
        sections,
        params["config_files"],
        params["experiments"],
        sum(wall.values()),
    )
    atomic_write_text(output, html)
