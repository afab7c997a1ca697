"""The terminal as a first view of a study: `python -m hpstudy summary|status|diff`.

- `summary [STUDY]`: the verdict tables, from the files the report is made of
  (`results/studies/<study>/summary.csv`): per variant its mean ± sd over repeats, Δ against the
  reference with its 95 % CI, Holm-adjusted p, P(A>B) and the verdict.
- `status`: per study, how many runs are done, running (a backup or log written in the last
  ten minutes), interrupted (started, not finished) and left, read from `results/runs/`.
- `diff OLD.yaml NEW.yaml`: which experiments each config has that the other has not, how the
  specs of a study's variant differ between them, and, for the comparisons both make whose runs
  are all finished, whether the verdict changed (the same statistics as the report's).

Everything is read from the files; nothing trains and nothing is written.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from . import analysis, statistics
from .plan import RUN_FILES, Plan, trained_with
from .tasks import GREATER_IS_BETTER

#: A run whose backup or log changed this recently is counted as running.
RUNNING_SECONDS = 600


def table(rows: list[list[str]], header: list[str], indent: str = "  ") -> str:
    """Plain fixed-width columns (left-aligned), a header and a rule under it."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        indent + "  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines
    )


def number(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def spread(row: pd.Series, score: str) -> str:
    """`0.912 ± 0.011 (n=3)`, or what stands in for a score no run has (every run diverged)."""
    mean, sd = row[f"{score}_mean"], row[f"{score}_std"]
    if pd.isna(mean):
        diverged = int(row.get("diverged", 0) or 0)
        return f"no score ({diverged} of {row['runs']} diverged)" if diverged else "no score"
    return f"{number(mean)} ± {number(sd)} (n={row['runs']})"


def study_table(summary: pd.DataFrame, metric: str, prefix: str = "") -> str:
    """The rows of one study's summary.csv: validation (prefix "") or test ("test_")."""
    score = f"best_val_{metric}" if not prefix else f"test_{metric}"
    rows = []
    for _, row in summary.iterrows():
        ci = ""
        low, high = statistics.shown_interval(row.to_dict(), prefix)
        if low is not None and not math.isnan(low):
            ci = f"[{number(low, True)}, {number(high, True)}]"
        reference = bool(row["is_reference"])
        rows.append([
            str(row["variant"]) + (" (reference)" if reference else ""),
            spread(row, score),
            "" if reference else number(row.get(f"{prefix}delta_mean"), True),
            ci,
            "" if reference else number(row.get(f"{prefix}p_adjusted")),
            "" if reference else number(row.get(f"{prefix}prob_better")),
            "" if reference or pd.isna(row.get(f"{prefix}verdict")) else row[f"{prefix}verdict"],
        ])  # fmt: skip
    what = "best validation" if not prefix else "test"
    return table(rows, ["variant", f"{what} {metric}", "Δ", "95% CI (simultaneous)", "p (Holm)",
                        "P(A>B)", "verdict"])  # fmt: skip


def summary(root: str | Path = ".", study: str | None = None) -> str:
    """The verdict tables of every study in the last report's overview, or of one study."""
    root = Path(root)
    overview = root / "results" / "overview" / "effects.csv"
    if not overview.exists():
        return f"No results yet: {overview} is missing. Run `snakemake --cores all` first."
    effects = pd.read_csv(overview)
    studies = effects.drop_duplicates("slug")[["study", "slug", "title", "metric"]]
    if study is not None:
        studies = studies[(studies["study"] == study) | (studies["slug"] == study)]
        if studies.empty:
            names = ", ".join(effects["study"].drop_duplicates())
            return f"No study {study!r} in {overview}. Studies: {names}."
    parts = []
    for _, s in studies.iterrows():
        path = root / "results" / "studies" / s["slug"] / "summary.csv"
        if not path.exists():
            parts.append(f"{s['study']}: {path} is missing")
            continue
        frame = pd.read_csv(path)
        direction = "higher" if GREATER_IS_BETTER[s["metric"]] else "lower"
        parts.append(f"{s['study']}: {s['title']} ({s['metric']}, {direction} is better)")
        parts.append(study_table(frame, s["metric"]))
        if study is not None and f"test_{s['metric']}_mean" in frame:
            parts.append(study_table(frame, s["metric"], "test_"))
    parts.append(
        "Δ: variant minus reference, mean over repeats. 95% CI (simultaneous): Welch's interval "
        "(Nadeau-Bengio for folds) at level 1 - 0.05/m for the study's m comparisons, within the "
        "range Δ can take; it excludes 0 only beside a detected difference. p (Holm): adjusted "
        "over the study's comparisons, which the verdict uses. The report says how each number "
        "is made."
    )
    return "\n\n".join(parts)


def run_state(run_dir: Path, now: float) -> str:
    """done, running, interrupted or left, from the run's files."""
    if trained_with(run_dir) is not None:
        return "done"
    traces = [run_dir / "backup" / "state.npz", run_dir / "train.log",
              *run_dir.parent.glob("backup-*/state.npz"), *run_dir.parent.glob("train-*.log")]  # fmt: skip
    times = [p.stat().st_mtime for p in traces if p.exists()]
    if not times:
        return "left"
    return "running" if now - max(times) < RUNNING_SECONDS else "interrupted"


def status(plan: Plan, root: str | Path = ".", now: float | None = None) -> str:
    """Per study: runs done, running, interrupted and left; and the report's state."""
    root, now = Path(root), time.time() if now is None else now
    rows, totals = [], dict.fromkeys(("done", "running", "interrupted", "left"), 0)
    for study in plan.studies.values():
        counts = dict.fromkeys(totals, 0)
        for run in study.all_runs():
            counts[run_state(root / run.dir, now)] += 1
        for key, n in counts.items():
            totals[key] += n
        rows.append([study.name, study.kind, *(str(counts[k]) for k in totals),
                     "yes" if (root / study.dir / "summary.csv").exists() else ""])  # fmt: skip
    rows.append(["all", "", *(str(totals[k]) for k in totals), ""])
    report = root / "results" / "report.html"
    age = ""
    if report.exists():
        age = f"written {time.strftime('%Y-%m-%d %H:%M', time.localtime(report.stat().st_mtime))}"
    lines = [
        table(rows, ["study", "kind", "done", "running", "interrupted", "left", "tables"]),
        f"Report: {report} {age or 'not written yet'}",
    ]
    return "\n\n".join(lines)


def flat(spec: dict, prefix: str = "") -> dict:
    """A spec as dotted path -> value."""
    out = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, path + "."))
        else:
            out[path] = value
    return out


def spec_changes(old: dict, new: dict) -> list[str]:
    """`path: old -> new` for each dotted path whose value differs."""
    a, b = flat(old), flat(new)
    return [f"{p}: {a.get(p, '(absent)')} -> {b.get(p, '(absent)')}"
            for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]  # fmt: skip


def verdicts(plan: Plan, slug: str, root: Path) -> dict | None:
    """Variant -> verdict of a study from its finished runs, or None unless all are finished."""
    study = plan.studies[slug]
    if study.kind not in ("ofat", "grid", "combine"):
        return None
    if not all((root / run.dir / name).exists() for run in study.all_runs() for name in RUN_FILES):
        return None
    described = study.describe()
    for variant in described["variants"]:
        for run in variant["runs"]:
            run["dir"] = str(root / run["dir"])
    runs = analysis.runs_table(described, root / study.dir)
    frame = analysis.summary_table(runs, described)
    return dict(zip(frame["variant"], frame["verdict"].fillna("reference")))


def diff(old: Plan, new: Plan, root: str | Path = ".") -> str:
    """What changes between two configs: experiments, specs per variant, verdicts."""
    root = Path(root)
    only_old = sorted(set(old.experiments) - set(new.experiments))
    only_new = sorted(set(new.experiments) - set(old.experiments))
    parts = [
        f"Experiments: {len(old.experiments)} in OLD, {len(new.experiments)} in NEW; "
        f"{len(only_old)} only in OLD, {len(only_new)} only in NEW (trained anew: those not "
        "finished already)."
    ]
    by_name_old = {s.name: s for s in old.studies.values()}
    by_name_new = {s.name: s for s in new.studies.values()}
    for name in sorted(set(by_name_old) - set(by_name_new)):
        parts.append(f"Study {name}: only in OLD")
    for name in sorted(set(by_name_new) - set(by_name_old)):
        parts.append(f"Study {name}: only in NEW")
    for name in sorted(set(by_name_old) & set(by_name_new)):
        a, b = by_name_old[name], by_name_new[name]
        va = {v.label: v.experiment for v in a.variants}
        vb = {v.label: v.experiment for v in b.variants}
        lines = [f"- {label}: only in OLD" for label in va if label not in vb]
        lines += [f"- {label}: only in NEW" for label in vb if label not in va]
        for label in (label for label in va if label in vb and va[label] != vb[label]):
            changes = spec_changes(old.experiments[va[label]].spec, new.experiments[vb[label]].spec)
            lines.append(f"- {label}: {va[label]} -> {vb[label]}: " + "; ".join(changes))
        before, after = verdicts(old, a.slug, root), verdicts(new, b.slug, root)
        for label in (label for label in va if label in vb):
            if before is None or after is None:
                continue
            if before.get(label) != after.get(label):
                lines.append(f"- {label}: verdict {before.get(label)} -> {after.get(label)}")
        if before is None or after is None:
            lines.append("  (verdicts compared only when both configs' runs are all finished)")
        if lines:
            parts.append(f"Study {name}:\n" + "\n".join(lines))
        else:
            parts.append(f"Study {name}: the same experiments")
    return "\n".join(parts)
