"""The report stays one small, self-contained file: 100 experiments of 500 epochs under 5 MB.

A synthetic study set (fake histories and metrics.json files, shaped like the training job's) goes
through the same functions as the workflow's aggregate_study, plot_study, overview and report jobs.
The measured size is written to test-artifacts/report-size.txt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hpstudy import analysis, figures, observations, report

EPOCHS = 500
STUDIES = 10
VARIANTS = 10  # per study, besides the shared baseline: 1 + 10 × 10 = 101 experiments
LIMIT = 5 * 1024 * 1024
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def fake_history(rng, speed: float, noise: float, overfit: float, diverge_at: int | None):
    """Loss decaying at `speed`, validation noise `noise`, rising by `overfit` after epoch 150."""
    epochs = np.arange(1, EPOCHS + 1)
    train = 0.05 + 2.2 * np.exp(-epochs / speed) * (1 + rng.normal(0, 0.01, EPOCHS))
    val = (0.3 + 2.0 * np.exp(-epochs / speed)) * (
        1 + overfit * np.clip(epochs - 150, 0, None) / 350
    )
    val = val * (1 + rng.normal(0, noise, EPOCHS))
    if diverge_at:
        train, val = train[:diverge_at], val[:diverge_at]
        train[-1] = val[-1] = np.nan
        epochs = epochs[:diverge_at]
    return pd.DataFrame(
        {
            "epoch": epochs,
            "loss": train,
            "accuracy": 1 - train / 2.5,
            "val_loss": val,
            "val_accuracy": 1 - val / 2.5,
            "learning_rate": 0.01,
        }
    )


def write_run(run_dir: Path, history: pd.DataFrame, exp: str, seed: int) -> None:
    run_dir.mkdir(parents=True)
    history.to_csv(run_dir / "history.csv", index=False)
    finite = history[np.isfinite(history["val_loss"])]
    best = finite.loc[finite["val_loss"].idxmin()]
    last = finite.iloc[-1]
    diverged = len(finite) < len(history)
    metrics = {
        "experiment": exp,
        "run": "r0",
        "seed": seed,
        "status": "diverged" if diverged else "ok",
        "diverged_epoch": int(history["epoch"].iloc[-1]) if diverged else None,
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "best_val_loss": float(best["val_loss"]),
        "best_val_accuracy": float(finite["val_accuracy"].max()),
        "final_val_accuracy": float(last["val_accuracy"]),
        "final_train_val_gap": float(last["val_loss"] - last["loss"]),
        "test_loss": float(last["val_loss"]),
        "test_accuracy": float(last["val_accuracy"]),
        "params": 8042,
        "timing": {"wall_seconds": 61.5, "fit_seconds": 60.0, "seconds_per_epoch": 0.12},
        "host": {
            "host": "node1",
            "device": "CPU",
            "python": "3.11.7",
            "tensorflow": "2.21.0",
            "keras": "3.15.1",
            "keras_backend": "tensorflow",
        },  # fmt: skip
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def synthetic_studies(root: Path) -> tuple[list[dict], dict]:
    """STUDIES ofat studies around one baseline, their runs written under `root`/results/runs."""
    rng = np.random.default_rng(0)
    specs, studies = {}, []

    def experiment(i: int, **kw) -> dict:
        exp = f"{i:010x}"
        spec = {"model": {"hidden": [32, 16, 64]}, "optimizer": {"learning_rate": 0.01}, **kw}
        specs[exp] = spec
        run_dir = f"results/runs/{exp}/r0"
        if not (root / run_dir).exists():
            write_run(root / run_dir, fake_history(rng, **kw), exp, seed=i)
        return {"experiment": exp, "runs": [{"run": "r0", "repeat": 0, "seed": i, "dir": run_dir}]}

    base = dict(speed=40.0, noise=0.01, overfit=0.2, diverge_at=None)
    for s in range(STUDIES):
        path = f"factor.p{s}"
        variants = [
            {
                "label": "baseline",
                "is_reference": True,
                "values": {path: 1},
                **experiment(0, **base),
            }
        ]
        for v in range(VARIANTS):
            kw = dict(speed=15.0 + 9 * v, noise=0.005 * (1 + v % 4), overfit=0.1 * (v % 3),
                      diverge_at=3 + s if v == 9 and s % 3 == 0 else None)  # fmt: skip
            variants.append(
                {
                    "label": f"p{s}={v}",
                    "is_reference": False,
                    "values": {path: v},
                    **experiment(1 + s * VARIANTS + v, **kw),
                }  # fmt: skip
            )
        studies.append(
            {
                "name": f"study{s}",
                "slug": f"study{s}",
                "kind": "ofat",
                "title": f"Factor {s}",
                "description": "",
                "baseline": "main",
                "task": "classification",
                "varied": [path],
                "variants": variants,
            }  # fmt: skip
        )
    return studies, specs


def build(root: Path, studies: list[dict], specs: dict) -> Path:
    """What the workflow's study, overview and report jobs do, through the same functions."""
    inputs = {"summary": [], "runs": [], "figure": [], "observations": []}
    for study in studies:
        out = root / "results" / "studies" / study["slug"]
        out.mkdir(parents=True)
        runs = analysis.runs_table(study, out)
        files = {
            "runs": (out / "runs.csv", runs),
            "summary": (out / "summary.csv", analysis.summary_table(runs, study)),
            "observations": (out / "observations.csv", observations.study_observations(study)),
        }
        for key, (path, table) in files.items():
            table.to_csv(path, index=False)
            inputs[key].append(str(path))
        histories = {
            v["label"]: [pd.read_csv(Path(r["dir"]) / "history.csv") for r in v["runs"]]
            for v in study["variants"]
        }
        figures.plot_study(study, histories, out / "curves.svg")
        inputs["figure"].append(str(out / "curves.svg"))
    effects = analysis.effects_table(studies, [pd.read_csv(p) for p in inputs["summary"]])
    figures.plot_overview(studies, effects, root / "results" / "overview" / "effects.svg")
    inputs["overview"] = str(root / "results" / "overview" / "effects.svg")
    params = {
        "title": "100 synthetic experiments",
        "studies": studies,
        "config_files": {"config/config.yaml": "title: 100 synthetic experiments\n"},
        "experiments": specs,
    }
    html = root / "results" / "report.html"
    report.build_report(params, inputs, html)
    return html


EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//""", re.I
)


def test_report_of_100_experiments_is_small_and_self_contained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    studies, specs = synthetic_studies(tmp_path)
    assert len(specs) == 101
    html = build(tmp_path, studies, specs)
    size = html.stat().st_size
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report-size.txt").write_text(
        f"{size} bytes ({size / 2**20:.2f} MiB) for {len(specs)} experiments, "
        f"{len(studies)} studies, {EPOCHS} epochs\n"
    )
    print(f"report of {len(specs)} experiments: {size / 2**20:.2f} MiB")
    assert size < LIMIT, f"{size / 2**20:.2f} MiB"

    text = html.read_text()
    assert not EXTERNAL.search(text), EXTERNAL.search(text).group()
    assert "http://" not in text and "https://" not in text
    assert len(re.findall(r'<img src="data:image/svg\+xml,', text)) == len(studies) + 1
    for study in studies:
        assert f'id="study-{study["slug"]}"' in text
    # the diverged variants are reported, with the epoch from their history
    assert "diverged at epoch 3 (last finite val loss" in text
    assert "diverged 1/1" in text
