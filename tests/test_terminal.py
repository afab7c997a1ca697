"""The terminal: the logger plugin's short output (snakemake_logger_plugin_hpstudy) and the
catalog of what each experiment id stands for (hpstudy.catalog)."""

from __future__ import annotations

import copy
import io
import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import helpers
import pandas as pd
import pytest
import yaml
from helpers import plan_of, run_snakemake
from snakemake_interface_logger_plugins.common import LogEvent

import snakemake_logger_plugin_hpstudy as plugin
from hpstudy import catalog


def test_one_line_for_a_missing_or_unreadable_file():
    trace = (
        'Traceback (most recent call last):\n\n  File "/x/cli.py", line 2168, in args_to_api\n'
        "    config_settings=ConfigSettings(\n\n"
        "FileNotFoundError: [Errno 2] No such file or directory: 'nope.yaml'\n"
    )
    line = plugin.one_line_error(trace)
    assert line.startswith("Error: nope.yaml: not found.") and "\n" not in line
    denied = trace.replace("FileNotFoundError: [Errno 2] No such file or directory",
                           "PermissionError: [Errno 13] Permission denied")  # fmt: skip
    assert "nope.yaml: cannot be read" in plugin.one_line_error(denied)
    # Anything else keeps its whole text: a job's error, a config error, a bare message.
    assert plugin.one_line_error("Error in rule train, jobid 3:\n  ...") is None
    assert plugin.one_line_error("FileNotFoundError: [Errno 2] No such file: 'x'") is None
    assert plugin.one_line_error("") is None


def test_small_formatters():
    assert plugin.clock(5) == "0:05" and plugin.clock(125) == "2:05"
    assert plugin.clock(3725) == "1:02:05"
    assert plugin.run_range(["r0", "r1", "r2"]) == "r0-r2"
    assert plugin.run_range(["r2", "r3"]) == "r2,r3"
    assert plugin.run_range(["f0of3", "f1of3", "f2of3"]) == "f0of3,f1of3,f2of3"
    outs = ["results/runs/e/r3/history.csv", "results/runs/e/r3/metrics.json",
            "results/runs/e/r4/metrics.json"]  # fmt: skip
    assert plugin.runs_of(outs) == ["r3", "r4"]


def record(event, msg="", level=logging.INFO, **fields) -> logging.LogRecord:
    rec = logging.LogRecord("snakemake", level, "x", 1, msg, None, None)
    rec.event = event
    rec.__dict__.update(fields)
    return rec


def handler(tmp_path, monkeypatch, dryrun=False) -> tuple:
    monkeypatch.chdir(tmp_path)
    settings = SimpleNamespace(quiet=set(), show_failed_logs=False, debug_dag=False,
                               verbose=False, dryrun=dryrun, printshellcmds=False, stdout=False,
                               nocolor=True)  # fmt: skip
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    return plugin.LogHandler(settings, None), out


def finished_run(root, exp, run, value, metric="accuracy"):
    path = root / "results" / "runs" / exp / run / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"primary_metric": metric, f"best_val_{metric}": value,
                                "status": "ok"}))  # fmt: skip
    return str(path.relative_to(root))


def test_a_training_job_is_one_line_with_its_names_time_and_scores(tmp_path, monkeypatch):
    h, out = handler(tmp_path, monkeypatch)
    outs = [finished_run(tmp_path, "abc123", f"r{k}", 0.9 + k / 100) for k in range(3)]
    (tmp_path / "results" / "experiments.json").write_text(json.dumps(
        {"abc123": {"used_by": [{"study": "lr", "variant": "learning_rate=0.1", "runs": []}]}}
    ))  # fmt: skip
    h.emit(record(None, "Building DAG of jobs..."))
    h.emit(record(LogEvent.RUN_INFO, "Job stats: ...", stats={"train_3_repeats": 2,
                                                             "report": 1, "total": 3}))  # fmt: skip
    for jobid in (1, 2):
        h.emit(record(LogEvent.JOB_INFO, jobid=jobid, rule_name="train_3_repeats",
                      wildcards={"exp": "abc123"}, output=outs))  # fmt: skip
    h.emit(record(LogEvent.JOB_FINISHED, job_id=1))
    h.emit(record(LogEvent.PROGRESS, None, done=1, total=3))
    h.emit(record(LogEvent.JOB_INFO, jobid=3, rule_name="report", wildcards={},
                  output=["results/report.html"]))  # fmt: skip
    h.emit(record(LogEvent.JOB_FINISHED, job_id=3))
    h.emit(record(LogEvent.PROGRESS, None, done=2, total=3))  # not after a training: no line
    lines = out.getvalue().splitlines()
    assert lines[0] == "hpstudy: 2 training jobs, 3 jobs in all"
    assert lines[1].startswith("trained lr: learning_rate=0.1 [r0-r2]  3 runs in ")
    assert lines[1].endswith("best val accuracy 0.9 0.91 0.92")
    assert lines[2].startswith("  1/3 jobs, 1 of 2 trainings, 0:00 elapsed, about ")
    assert lines[2].endswith(" left")
    assert lines[3] == "report: results/report.html"
    assert len(lines) == 4  # no "Building DAG", no job blocks, no "N of M steps"


def test_a_group_of_experiments_is_one_line_naming_the_first_ones(tmp_path, monkeypatch):
    h, out = handler(tmp_path, monkeypatch)
    exps = [f"e{k}" for k in range(5)]
    outs = [finished_run(tmp_path, e, f"r{r}", 0.5 + k / 10 + r / 100)
            for k, e in enumerate(exps) for r in range(2)]  # fmt: skip
    (tmp_path / "results" / "experiments.json").write_text(json.dumps({
        e: {"used_by": [{"study": "lr", "variant": f"v{k}", "runs": []}]} for k, e in enumerate(exps)
    }))  # fmt: skip
    h.emit(record(LogEvent.RUN_INFO, "Job stats: ...", stats={"train_group_g1": 1, "total": 1}))
    h.emit(record(LogEvent.JOB_INFO, jobid=1, rule_name="train_group_g1", wildcards={},
                  output=outs))  # fmt: skip
    h.emit(record(LogEvent.JOB_FINISHED, job_id=1))
    line = out.getvalue().splitlines()[1]
    assert line.startswith("trained 5 experiments together (lr: v0; lr: v1; lr: v2; +2 more)"
                           "  10 runs in ")  # fmt: skip
    assert line.endswith("best val accuracy 0.5 0.51 0.6 0.61 0.7 0.71 0.8 0.81 0.9 (+1 more)")


def test_errors_warnings_and_a_dry_run_are_printed_as_snakemake_prints_them(tmp_path, monkeypatch):
    h, out = handler(tmp_path, monkeypatch)
    h.emit(record(None, "Config file x.yaml: expected a mapping", level=logging.ERROR))
    h.emit(record(None, "Job 3 submitted with SLURM jobid 17 (log: x)."))
    assert out.getvalue().splitlines() == [
        "Config file x.yaml: expected a mapping",
        "Job 3 submitted with SLURM jobid 17 (log: x).",
    ]
    h, out = handler(tmp_path, monkeypatch, dryrun=True)
    h.emit(record(None, "Building DAG of jobs..."))
    assert out.getvalue() == "Building DAG of jobs...\n"


def test_the_catalog_names_each_experiment_by_its_uses(tiny_config, tmp_path):
    plan = plan_of(dict(tiny_config, repeats=2))
    built = catalog.build(plan)
    assert set(built) == set(plan.experiments)
    labels = {u["variant"] for entry in built.values() for u in entry["used_by"]}
    assert labels == {"baseline", "learning_rate=0.1"}
    assert all(u["runs"] == ["r0", "r1"] for e in built.values() for u in e["used_by"])
    catalog.write(built, tmp_path / "results" / "experiments.json", tmp_path / "results" / "runs")
    assert catalog.read(tmp_path) == json.loads(json.dumps(built))
    exp = next(iter(built))
    one = json.loads((tmp_path / "results" / "runs" / exp / "experiment.json").read_text())
    assert one["id"] == exp and one["spec"] == plan.experiments[exp].spec
    assert catalog.describe(built[exp], exp).startswith("lr: ")
    assert catalog.describe(None, exp) == exp


@pytest.mark.e2e
def test_e2e_the_terminal_of_a_run(tmp_path, tiny_config):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config))
    # A first dry run (no catalog yet): Snakemake's job blocks, each training job's names below.
    # The two experiments differ in their learning rate only: one job trains both (groups).
    dry = run_snakemake(tmp_path, "-n")
    blocks = dry.stdout + dry.stderr
    (trains,) = [line for line in blocks.splitlines() if line.startswith("    trains: ")]
    assert "rule train_group_" in blocks and "2 experiments together (" in trains
    assert "lr: baseline" in trains and "lr: learning_rate=0.1" in trains
    done = run_snakemake(tmp_path, "--cores", "2")
    text = done.stdout + done.stderr
    assert "hpstudy: 1 training job, " in text
    (trained,) = [line for line in text.splitlines() if line.startswith("trained ")]
    assert trained.startswith("trained 2 experiments together (") and "  2 runs in " in trained
    alone = dict(tiny_config, execution={"fuse_experiments": False})  # one job per experiment
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "config.yaml").write_text(yaml.safe_dump(alone))
    dry = run_snakemake(tmp_path / "alone", "-n")
    blocks = dry.stdout + dry.stderr
    assert "rule train:" in blocks and "    trains: lr: baseline [r0]" in blocks
    assert "    trains: lr: learning_rate=0.1 [r0]" in blocks
    assert "report: results/report.html" in text
    assert "Select jobs to execute" not in text and "steps (" not in text
    assert len(text.splitlines()) < 12
    entries = catalog.read(tmp_path)
    assert len(entries) == 2
    missing = run_snakemake(tmp_path, "-n", config="nope.yaml", check=False)
    assert missing.returncode != 0
    text = missing.stdout + missing.stderr  # a dry run prints to stdout, as Snakemake's does
    errors = [line for line in text.splitlines() if "nope.yaml" in line]
    assert len(errors) == 1 and "not found" in errors[0] and "Traceback" not in text


def hpstudy(root, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hpstudy", *args, "--directory", str(root)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout


@pytest.mark.e2e
def test_e2e_summary_status_and_diff_answer_from_a_finished_run(tmp_path, tiny_config):
    cfg = dict(tiny_config, repeats=2)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    status = hpstudy(tmp_path, "status", str(tmp_path / "config.yaml"))
    assert [line.split()[:6] for line in status.splitlines()[2:4]] == [
        ["lr", "ofat", "0", "0", "0", "4"],
        ["all", "0", "0", "0", "4"],
    ]
    run_snakemake(tmp_path, "--cores", "2")
    status = hpstudy(tmp_path, "status", str(tmp_path / "config.yaml"))
    assert status.splitlines()[2].split() == ["lr", "ofat", "4", "0", "0", "0", "yes"]
    summary = hpstudy(tmp_path, "summary")
    table = pd.read_csv(tmp_path / "results" / "studies" / "lr" / "summary.csv")
    row = table[~table["is_reference"]].iloc[0]
    line = next(x for x in summary.splitlines() if x.strip().startswith("learning_rate=0.1"))
    assert f"{row['delta_mean']:+.3g}" in line and row["verdict"] in line
    assert f"[{row['delta_ci_low']:+.3g}, {row['delta_ci_high']:+.3g}]" in line
    assert "baseline (reference)" in summary and "p (Holm)" in summary
    assert "test accuracy" in hpstudy(tmp_path, "summary", "lr")  # one study: its test table too
    # A second config: the baseline trains 3 epochs. diff names the spec change and, both
    # configs' runs finished, whether each verdict changed.
    new = copy.deepcopy(cfg)
    new["baselines"]["b"]["training"]["epochs"] = 3
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new))
    run_snakemake(tmp_path, "--cores", "2", config="new.yaml")
    out = hpstudy(tmp_path, "diff", str(tmp_path / "config.yaml"), str(tmp_path / "new.yaml"))
    assert "2 only in OLD, 2 only in NEW" in out
    assert "- baseline: " in out and "training.epochs: 2 -> 3" in out
    assert "verdicts compared only" not in out


def test_the_readmes_first_study_is_a_valid_complete_config(tmp_path):
    """The config the README opens with plans as it says: 1 study, 4 experiments, 12 runs."""
    text = (helpers.ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Your first study", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_study.yaml").write_text(block)
    out = hpstudy(tmp_path, "status", str(tmp_path / "my_study.yaml"))
    assert out.splitlines()[2].split()[:6] == ["learning_rate", "ofat", "0", "0", "0", "12"]
    plan = helpers.plan_of(yaml.safe_load(block))
    assert (len(plan.studies), len(plan.experiments), len(plan.runs)) == (1, 4, 12)
