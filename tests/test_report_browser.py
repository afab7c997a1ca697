"""The report of a tiny real workflow run, read the way a user reads it: in headless Chromium.

One module-scoped run (two studies, repeats, a diverging variant, TensorBoard logs when the
package is installed) feeds every test here: the browser checks, the observations against the
files they cite, Snakemake's own report, and a presentation-only config change that must
retrain nothing. The screenshot lands in test-artifacts/report.png (git-ignored).
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from pathlib import Path

import browser
import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, cited_files, run_snakemake

ARTIFACTS = ROOT / "test-artifacts"
TENSORBOARD = importlib.util.find_spec("tensorboard") is not None

CONFIG = f"""\
title: Tiny report
datasets:
  d: {{source: digits, subsample: 240}}
baselines:
  b:
    dataset: d
    model: {{hidden: [16, 8]}}
    optimizer: {{name: sgd, learning_rate: 0.05, momentum: 0.5}}
    training: {{epochs: 6, batch_size: 64}}
studies:
  lr:
    kind: ofat
    baseline: b
    title: Learning rate
    repeats: 2
    factors: {{optimizer.learning_rate: [0.3, 1.0e+6]}}
  act:
    kind: ofat
    baseline: b
    title: Activation
    variants:
      - label: tanh (glorot_uniform)
        set: {{model.activation: tanh, model.initializer: glorot_uniform}}
logging: {{tensorboard: {str(TENSORBOARD).lower()}}}
"""

# Only presentation changes: the report's title, a study's title, which studies the report shows
# and the figures' format.
PRESENTATION = (
    CONFIG.replace("title: Tiny report", "title: Tiny report, renamed")
    .replace("title: Activation", "title: Activation functions")
    .replace("logging:", "report: {studies: [act], figure_format: png}\nlogging:")
)


def snakemake(workdir: Path, *args: str, config: str = "config.yaml") -> str:
    proc = run_snakemake(workdir, *args, config=config)
    return proc.stdout + proc.stderr


def planned(text: str, rule: str) -> int:
    """Jobs of `rule` in a dry run's job table (0 when it plans none)."""
    match = re.search(rf"^{rule}\s+(\d+)\s*$", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report")
    (workdir / "config.yaml").write_text(CONFIG)
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.mark.e2e
@pytest.mark.browser
def test_report_reads_cleanly_in_chromium(finished):
    binary = browser.find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    facts, errors = browser.inspect(finished / "results/report.html", shot, binary)
    assert errors == []
    assert facts["title"] == "Tiny report"
    # the overview chart, one figure per study and the lr study's response figure (three
    # learning rates), all decoded to a real size, all inline
    assert len(facts["images"]) == 4
    assert (finished / "results/studies/lr/response.svg").exists()
    for image in facts["images"]:
        assert image["width"] > 0 and image["height"] > 0, image
        assert image["scheme"] == "data", image
    assert {"overview", "study-lr", "study-act", "provenance"} <= set(facts["sections"])
    assert facts["brokenAnchors"] == []
    assert not [link for link in facts["links"] if re.match(r"(https?:)?//", link)]
    assert facts["scrollWidth"] <= 1366  # no sideways scrolling on a laptop screen
    assert facts["tableOverflow"] == 0  # nor inside a table
    assert min(facts["verdictWidths"]) >= 150  # a verdict column wide enough to read
    # a verdict for every variant against its baseline, as a reader sees it: lr (2 repeats per
    # variant) gets a test; act (1 run) gets none
    verdicts = facts["verdicts"]
    assert len(verdicts) == 3, verdicts
    assert any(v.startswith("single run") for v in verdicts), verdicts
    assert any(v.split(" (")[0].split(",")[0] in ("better", "worse", "no detectable difference")
               for v in verdicts), verdicts  # fmt: skip
    # "best" only for a variant detectably better: never for a single run
    summaries = [pd.read_csv(finished / f"results/studies/{s}/summary.csv") for s in ("lr", "act")]
    assert facts["bestBadges"] == sum(int((t["verdict"] == "better").any()) for t in summaries)
    assert shot.stat().st_size > 10_000


@pytest.mark.e2e
def test_report_content(finished):
    html = (finished / "results/report.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    # the diverging variant is marked in its table and explained in its observations
    assert "diverged 2/2" in html
    # every comparison with its uncertainty; the method is stated in the report
    summary = pd.read_csv(finished / "results/studies/lr/summary.csv")
    for column in ("delta_mean", "delta_ci_low", "delta_ci_high", "p_value", "p_adjusted",
                   "prob_better", "verdict", "test_delta_mean", "test_verdict"):  # fmt: skip
        assert column in summary, column
    assert "How the verdicts are made" in html and "Welch" in html and "Holm" in html
    assert re.search(r"learning_rate=1e\+06</strong>: diverged at epoch \d+", html)
    # provenance: training versions from the runs, the config as given, every resolved spec
    assert "2.21.0" in html and "3.15.1" in html  # TensorFlow and Keras, as the runs recorded
    assert "title: Tiny report" in html
    assert html.count("<summary><code>") == 4  # baseline, lr=0.3, lr=1e6, tanh


@pytest.mark.e2e
def test_observations_check_out_against_the_files_they_cite(finished):
    notes = pd.concat(
        pd.read_csv(finished / f"results/studies/{s}/observations.csv") for s in ("lr", "act")
    )
    assert len(notes)
    for rec in notes.to_dict("records"):
        cited = cited_files(rec["source"])
        assert cited
        for path in cited:
            assert (finished / path).exists(), path
    diverged = notes[(notes["rule"] == "divergence")]
    assert set(diverged["variant"]) == {"learning_rate=1e+06"}
    for rec in diverged.to_dict("records"):
        epoch = int(re.search(r"diverged at epoch (\d+)", rec["text"]).group(1))
        history = pd.read_csv(finished / rec["source"].split(":")[0])
        bad = ~np.isfinite(history["loss"]) | ~np.isfinite(history["val_loss"])
        assert history.loc[bad, "epoch"].iloc[0] == epoch


@pytest.mark.e2e
@pytest.mark.skipif(not TENSORBOARD, reason="the tensorboard package is not installed")
def test_tensorboard_logs_per_run(finished):
    runs = sorted((finished / "results/runs").glob("*/r*"))
    assert runs
    for run in runs:
        assert list((run / "tensorboard" / "train").glob("events.out.tfevents.*")), run


@pytest.mark.e2e
def test_snakemake_report(finished):
    out = finished / "results" / "snakemake-report.zip"
    snakemake(finished, "--report", str(out))
    archive = zipfile.ZipFile(out)
    names = [Path(n).name for n in archive.namelist()]
    # every study's figure and tables, and the overview, each with its caption
    for name, count in (("curves.svg", 2), ("observations.csv", 2), ("summary.csv", 2),
                        ("effects.svg", 1), ("effects.csv", 1), ("report.html", 1)):  # fmt: skip
        assert names.count(name) == count, name
    page = archive.read("snakemake-report/report.html").decode()
    assert "a dot marks each curve's lowest validation loss" in page
    assert "Observations on study" in page


@pytest.mark.e2e
def test_presentation_change_retrains_nothing(finished):
    # (Fails too if the training code changed since the run: experiment ids include its version.)
    assert planned(snakemake(finished, "-n"), "train") == 0
    (finished / "presentation.yaml").write_text(PRESENTATION)
    text = snakemake(finished, "-n", config="presentation.yaml")
    assert planned(text, "train") == 0
    assert planned(text, "report") == 1
    assert planned(text, "plot_study") == 1  # only the study shown, in the new format
