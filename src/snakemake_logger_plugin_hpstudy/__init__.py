"""Snakemake's terminal output for hpstudy: one line per finished training, a progress line.

Selected by the workflow profile (`logger: hpstudy` in profiles/default/config.yaml), or with
`--logger hpstudy`; `--workflow-profile none` or `--verbose` gives Snakemake's own output back.
A logger plugin is Snakemake's maintained way to shape its output (snakemake-interface-logger-
plugins): records arrive with their event (JOB_INFO when a job starts, JOB_FINISHED, PROGRESS,
RUN_INFO with the job counts), and nothing of Snakemake's own text is parsed.

What it prints, in a real run (a dry run prints what Snakemake prints, with a `trains: study:
variant [runs]` line under each training job's block):

    hpstudy: 12 runs to train in 4 jobs, 19 jobs in all
    trained lr: learning_rate=0.1 [r0-r2]  3 runs in 14.2 s  best val accuracy 0.912 0.905 0.921
      4/19 jobs, 1 of 4 trainings, 0:15 elapsed, about 0:45 left
    report: results/report.html

The time left is the trainings still to run times the mean wall time of those finished so far,
divided by how many ran at once: an estimate that improves as jobs finish. Errors, warnings and
the executor's own messages (a SLURM job id) are printed as Snakemake prints them; an error
that is only a missing or unreadable file (a --configfile that is not there) is one line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

#: The most scores one "trained" line shows.
SHOWN_SCORES = 9
#: Rules whose jobs train (the fused ones are train_<R>_repeats and train_r3_r4).
TRAINING = re.compile(r"^(train|train_\w+|lr_range)$")
#: A search trial's rung record (rule train_rung).
RUNG = re.compile(r"/rung-e\d+\.json$")
#: Snakemake's routine lines, which the progress line replaces.
ROUTINE = re.compile(
    r"^(Building DAG of jobs|Using shell:|Provided cores|Rules claiming more threads|"
    r"Select jobs to execute|Execute \d+ jobs|Job stats:|Assuming unrestricted shared|"
    r"Using workflow specific profile|host: |Provided resources|Singularity containers: ignored|"
    r"Conda environments: ignored|Complete log\(s\)|Removing temporary output)"
)
#: The last line of a traceback whose whole story is a file that is not there or not readable.
FILE_ERROR = re.compile(
    r"^(FileNotFoundError|PermissionError|IsADirectoryError): \[Errno \d+\] ([^:]+): '(.+)'$"
)


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    """No settings: the plugin has no options of its own."""


@dataclass
class Job:
    rule: str
    wildcards: dict
    output: list
    started: float


def one_line_error(text: str) -> str | None:
    """`text` as one line when it is a traceback ending in a missing or unreadable file."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    match = FILE_ERROR.match(lines[-1]) if lines else None
    if not match or not any(line.startswith("Traceback") or "File " in line for line in lines):
        return None
    what = {"FileNotFoundError": "not found", "PermissionError": "cannot be read (permission)",
            "IsADirectoryError": "is a directory, not a file"}[match[1]]  # fmt: skip
    return f"Error: {match[3]}: {what}. Check the path (a --configfile is read from where you run)."


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:{'02' if hours else ''}}:{rest % 60:02}"


def results_of(outputs: list) -> list:
    """The results a training job writes: each run's metrics.json, or a search trial's rung
    record (rung-e<epochs>.json, rule train_rung)."""
    return [Path(p) for p in outputs if str(p).endswith("metrics.json") or RUNG.search(str(p))]


def runs_of(outputs: list) -> list:
    """The run names (r0, f1of5, ...) whose results a training job writes, in order."""
    return [p.parent.name for p in results_of(outputs)]


def run_range(runs: list) -> str:
    if len(runs) > 2 and all(r.startswith("r") and r[1:].isdigit() for r in runs):
        numbers = [int(r[1:]) for r in runs]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return f"r{numbers[0]}-r{numbers[-1]}"
    return ",".join(runs)


def scores(outputs: list) -> str:
    """`best val accuracy 0.912 0.905` from the metrics.json files a training job wrote."""
    values, name = [], None
    for path in results_of(outputs):
        try:
            metrics = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        name = metrics.get("primary_metric")
        value = metrics.get(f"best_val_{name}")
        status = metrics.get("status", "ok")
        values.append(f"{value:.4g}" if isinstance(value, float) and status == "ok" else status)
    if len(values) > SHOWN_SCORES:  # a group of many towers: the first ones and how many more
        values = [*values[:SHOWN_SCORES], f"(+{len(values) - SHOWN_SCORES} more)"]
    return f"best val {name} {' '.join(values)}" if name and values else ""


def experiments_of(outputs: list) -> list:
    """The experiment ids whose runs a training job writes, in order, each once."""
    return list(dict.fromkeys(p.parent.parent.name for p in results_of(outputs)))


def variant_label(exp: str, catalog: dict, most: int = 2) -> str:
    """`study: variant` of an experiment (the first `most` that use it), else its id."""
    entry = catalog.get(exp)
    if not (entry and entry.get("used_by")):
        return exp
    names = [f"{u['study']}: {u['variant']}" for u in entry["used_by"]]
    return ", ".join(names[:most]) + (f" (+{len(names) - most})" if len(names) > most else "")


def describe(job: Job, catalog: dict) -> str:
    """`study: variant [r0-r2]`, from the catalog the `catalog` job writes (else the id); for a
    group of experiments (train_group_<name>), how many and the first of them."""
    exps = experiments_of(job.output)
    if len(exps) > 1:
        shown = "; ".join(variant_label(e, catalog, most=1) for e in exps[:3])
        more = f"; +{len(exps) - 3} more" if len(exps) > 3 else ""
        return f"{len(exps)} experiments together ({shown}{more})"
    exp = job.wildcards.get("exp") or job.wildcards.get("lrr", "") or (exps or [""])[0]
    label = variant_label(exp, catalog) if exp else job.rule
    runs = runs_of(job.output) or [job.wildcards.get("run", "")]
    rung = (
        f" to epoch {job.wildcards['epochs']} (a search rung)" if "epochs" in job.wildcards else ""
    )
    return (f"{label} [{run_range([r for r in runs if r])}]" if any(runs) else label) + rung


class LogHandler(LogHandlerBase):
    """The records Snakemake logs, printed short (see the module's docstring)."""

    def __post_init__(self) -> None:
        quiet = self.common_settings.quiet
        self.default = DefaultFormatter(quiet, self.common_settings.show_failed_logs)
        self.filter_ = DefaultFilter(
            quiet, self.common_settings.debug_dag, self.common_settings.verbose,
            self.common_settings.dryrun, self.common_settings.printshellcmds,
        )  # fmt: skip
        self.stream = sys.stdout if self.common_settings.stdout else sys.stderr
        self.passthrough = bool(self.common_settings.dryrun or self.common_settings.verbose)
        # Snakemake's own stream handler, for what is printed as Snakemake prints it.
        self.snakemake = ColorizingTextHandler(
            nocolor=self.common_settings.nocolor, stream=self.stream
        )
        self.snakemake.setFormatter(self.default)
        self.jobs: dict = {}
        self.started = time.time()
        self.training_total = 0
        self.training_done = 0
        self.training_seconds = 0.0
        self.peak_parallel = 1
        self.catalog: dict | None = None
        self.total = 0
        self.configfiles: list = []  # from WORKFLOW_STARTED, to plan the names if need be
        self.show_progress = False  # after a training job, and at the end

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def write(self, text: str) -> None:
        if text:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self.filter_.filter(record):
                return
            short = (
                one_line_error(self.default.format(record))
                if record.levelno >= logging.ERROR
                else None
            )
            if short:
                self.write(short)
            elif self.passthrough:
                self.snakemake.emit(record)
                self.name_job(record)
            else:
                self.show(record)
        except Exception:  # noqa: BLE001 - a display problem must never stop the workflow
            self.handleError(record)

    def name_job(self, record: logging.LogRecord) -> None:
        """Below a training job's block (a dry run, --verbose): the study variants it trains."""
        event = getattr(record, "event", None)
        if event == LogEvent.WORKFLOW_STARTED:
            self.configfiles = [str(f) for f in getattr(record, "configfiles", None) or []]
        if event != LogEvent.JOB_INFO or not TRAINING.match(getattr(record, "rule_name", "")):
            return
        if not self.catalog:
            self.catalog = read_catalog() or planned_catalog(self.configfiles)
        job = Job(record.rule_name, dict(record.wildcards or {}), list(record.output or []), 0.0)
        if any(
            self.catalog.get(e) for e in [job.wildcards.get("exp"), *experiments_of(job.output)]
        ):
            self.write(f"    trains: {describe(job, self.catalog)}")

    def show(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == LogEvent.RUN_INFO:
            self.run_info(getattr(record, "stats", {}) or {})
        elif event == LogEvent.JOB_INFO:
            self.jobs[record.jobid] = Job(
                record.rule_name, dict(record.wildcards or {}), list(record.output or []),
                time.time(),
            )  # fmt: skip
            running = sum(1 for j in self.jobs.values() if TRAINING.match(j.rule))
            self.peak_parallel = max(self.peak_parallel, running)
        elif event == LogEvent.JOB_FINISHED:
            self.job_finished(self.jobs.pop(record.job_id, None))
        elif event == LogEvent.PROGRESS:
            self.progress(record.done, record.total)
        elif event == LogEvent.WORKFLOW_STARTED:
            self.configfiles = [str(f) for f in getattr(record, "configfiles", None) or []]
        elif event in (LogEvent.SHELLCMD, LogEvent.RESOURCES_INFO, LogEvent.JOB_STARTED):
            return
        elif record.levelno >= logging.WARNING or event is not None:
            self.snakemake.emit(record)
        else:
            text = str(record.getMessage() if record.msg is not None else "")
            if text and not ROUTINE.match(text.strip()):
                self.write(text)

    def run_info(self, stats: dict) -> None:
        counts = {rule: int(n) for rule, n in stats.items() if rule != "total"}
        self.training_total = sum(n for rule, n in counts.items() if TRAINING.match(rule))
        total = sum(counts.values())
        self.total = total
        trainings = (
            f"{self.training_total} training job{'s' if self.training_total > 1 else ''}"
            if self.training_total
            else "nothing to train"
        )
        self.write(f"hpstudy: {trainings}, {total} jobs in all")

    def job_finished(self, job: Job | None) -> None:
        if job is None:
            return
        seconds = time.time() - job.started
        self.show_progress = bool(TRAINING.match(job.rule))
        if TRAINING.match(job.rule):
            if not self.catalog:  # the catalog job runs first; if it has not, plan the names
                self.catalog = read_catalog() or planned_catalog(self.configfiles)
            self.training_done += 1
            self.training_seconds += seconds
            runs = runs_of(job.output)
            count = f"{len(runs)} runs" if len(runs) > 1 else "1 run"
            self.write(
                f"trained {describe(job, self.catalog)}  {count} in {seconds:.1f} s  "
                f"{scores(job.output)}".rstrip()
            )
        elif job.rule == "report":
            self.write(f"report: {job.output[0] if job.output else 'results/report.html'}")
        elif job.rule == "catalog":
            self.catalog = read_catalog()

    def progress(self, done: int, total: int) -> None:
        elapsed = time.time() - self.started
        line = f"  {done}/{total} jobs"
        if self.training_total:
            line += f", {self.training_done} of {self.training_total} trainings"
        line += f", {clock(elapsed)} elapsed"
        left = self.training_total - self.training_done
        if self.training_done and left > 0:
            per_job = self.training_seconds / self.training_done
            line += f", about {clock(left * per_job / self.peak_parallel)} left"
        if self.show_progress or (done == total and self.training_total):
            self.write(line)
        self.show_progress = False


def planned_catalog(configfiles: list) -> dict:
    """The catalog of the config files as hpstudy plans them (before the catalog job has run:
    a first dry run); {} when they cannot be planned here."""
    if not configfiles:
        return {}
    try:
        from hpstudy import catalog
        from hpstudy.plan import load_plan

        return catalog.build(load_plan(configfiles))
    except Exception:  # noqa: BLE001 - names are a courtesy; Snakemake reports config errors
        return {}


def read_catalog() -> dict:
    """results/experiments.json of the working directory ({} until the catalog job wrote it)."""
    try:
        return json.loads(Path("results/experiments.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
