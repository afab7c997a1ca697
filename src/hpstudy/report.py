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
from urllib.parse import quote

import jinja2
import pandas as pd

from . import grid, search, statistics
from .figures import colours
from .io import atomic_write_text
from .observations import RULES
from .stages import StudyInfo
from .tasks import GREATER_IS_BETTER, metric_of

TEMPLATES = Path(__file__).parent / "templates"


def image_uri(path: str | Path) -> str:
    """A data: URI for an SVG or PNG file, so the report needs no file beside it.

    SVG is percent-encoded rather than base64: a few escapes cost less than base64's third.
    Colons are escaped too, so not even the SVG namespace reads as a URL in the HTML.
    """
    path = Path(path)
    if path.suffix == ".svg":
        return "data:image/svg+xml," + quote(
            path.read_text(encoding="utf-8"), safe=" =/;,.-_()!*+@~?[]{}$"
        )
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def fmt(value, digits: int = 4) -> str:
    """Numbers for tables: `digits` significant digits (no exponent below a million), a dash
    for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if 10**digits <= abs(value) < 1e6:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def pm(mean, std, runs: int) -> str:
    if runs > 1 and std is not None and math.isfinite(std):
        return f"{fmt(mean)} ± {fmt(std, 2)}"
    return fmt(mean)


PACKAGES = ("tensorflow", "keras", "snakemake", "scikit-learn", "numpy", "pandas", "matplotlib")


def versions() -> dict:
    """Versions installed where the report is built, read without importing TensorFlow."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        for dist in (pkg, f"{pkg}-cpu") if pkg == "tensorflow" else (pkg,):
            try:
                out[pkg] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def distinct(values: pd.Series) -> str:
    """'3.11.7', or '2.21.0 (20 runs), 2.20.0 (3 runs)' when the runs disagree."""
    counts = values.dropna().astype(str).value_counts()
    if counts.empty:
        return "–"
    if len(counts) == 1:
        return counts.index[0]
    return ", ".join(f"{v} ({n} runs)" for v, n in counts.items())


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


VERDICT_CLASS = {"better": "better", "worse": "worse"}


def _delta(rec: dict, prefix: str = "") -> str:
    """Δ vs the reference with its simultaneous 95% CI, e.g. "+0.012 [+0.004, +0.020]"."""
    delta = rec.get(f"{prefix}delta_mean")
    if rec["is_reference"] or delta is None or not math.isfinite(delta):
        if not rec["is_reference"] and rec.get("diverged") and not prefix:
            return "no score (diverged)"
        return ""
    low, high = statistics.shown_interval(rec, prefix)
    if low is None or not math.isfinite(low):
        return f"{delta:+.3g}"
    return f"{delta:+.3g} [{low:+.3g}, {high:+.3g}]"


def _prob(rec: dict, prefix: str = "") -> str:
    """P(a run of the variant beats a run of the baseline), with its bootstrap CI."""
    p = rec.get(f"{prefix}prob_better")
    if rec["is_reference"] or p is None or not math.isfinite(p):
        return ""
    low, high = rec.get(f"{prefix}prob_better_ci_low"), rec.get(f"{prefix}prob_better_ci_high")
    if low is not None and math.isfinite(low):
        return f"{p:.2f} [{low:.2f}, {high:.2f}]"
    n, m = rec.get(f"{prefix}n_variant"), rec.get(f"{prefix}n_baseline")
    if n is not None and m is not None and math.isfinite(n) and math.isfinite(m) and n * m > 1:
        pairs = int(n) * int(m)  # no interval: every resample agrees; say what the runs show
        return f"{p:.2f} ({p * pairs:g} of {pairs} pairs)"
    return f"{p:.2f}"


def _verdict(rec: dict, prefix: str = "") -> str:
    """The verdict, with the repeats per side a no-detectable-difference would need."""
    verdict = rec.get(f"{prefix}verdict")
    if rec["is_reference"] or not isinstance(verdict, str):
        return ""
    need = rec.get(f"{prefix}seeds_needed")
    if verdict == "no detectable difference" and need is not None and math.isfinite(need):
        at_most = "≥ " if need >= 10000 else ""
        verdict += f" (≈ {at_most}{int(need)} repeats per side would detect this Δ)"
    p = rec.get(f"{prefix}p_adjusted")
    if p is not None and math.isfinite(p):
        verdict += f", p_adj = {p:.2g}"
    return verdict


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def mark_changed(rows: list[dict], varied: list) -> None:
    """Give each row `changed`: the (path, value) it sets apart from the reference's (all of
    them for the reference), for the one-cell view of a study with many varied keys."""
    reference = next((r["cells"] for r in rows if r["reference"]), None)
    for r in rows:
        r["changed"] = [
            (path, cell)
            for path, cell, ref in zip(varied, r["cells"], reference or r["cells"])
            if r["reference"] or reference is None or cell != ref
        ]


def study_row(rec: dict, study: StudyInfo, metric: str, palette: dict) -> dict:
    """One variant's row of a study table (a summary.csv record), formatted for the template."""
    n = int(rec["runs"])
    verdict = rec.get("verdict") if isinstance(rec.get("verdict"), str) else ""
    return {
        "label": rec["variant"],
        "colour": palette.get(rec["variant"], "#888"),
        "reference": bool(rec["is_reference"]),
        "best": bool(rec["is_best"]),
        "experiment": rec["experiment"],
        "cells": [fmt(rec.get(p)) for p in study["varied"]],
        "best_val": pm(rec[f"best_val_{metric}_mean"], rec[f"best_val_{metric}_std"], n),
        "best_epoch": fmt(rec["best_epoch_mean"], 3),
        "gap": fmt(rec["final_train_val_gap_mean"], 3),
        "test": pm(rec[f"test_{metric}_mean"], rec[f"test_{metric}_std"], n),
        "delta": _delta(rec),
        "prob": _prob(rec),
        "verdict": _verdict(rec),
        "verdict_class": VERDICT_CLASS.get(verdict, ""),
        "detectable": verdict in VERDICT_CLASS,
        "test_delta": _delta(rec, "test_"),
        "test_verdict": _verdict(rec, "test_"),
        "test_verdict_class": VERDICT_CLASS.get(rec.get("test_verdict"), ""),
        "score": _finite(rec.get("delta_vs_reference")) if not rec["is_reference"] else None,
        "sec_per_epoch": fmt(rec["seconds_per_epoch"], 2),
        "params": f"{int(rec['params']):,}",
        "diverged": int(rec["diverged"]),
        "runs": n,
    }


def study_section(study: StudyInfo, summary_csv, runs_csv, figure, observations_csv=None) -> dict:
    """Everything the template shows for one study, with numbers already formatted."""
    metric = metric_of(study["task"])
    summary = pd.read_csv(summary_csv)
    runs = pd.read_csv(runs_csv)
    palette = colours(study)
    rows = [study_row(rec, study, metric, palette) for rec in summary.to_dict("records")]
    mark_changed(rows, study["varied"])
    notes = []
    if observations_csv is not None:
        for rec in pd.read_csv(observations_csv, keep_default_na=False).to_dict("records"):
            rec["colour"] = palette.get(rec["variant"], "#888")
            notes.append(rec)
    classes = next(
        (c for c in runs.get("classes", pd.Series(dtype=object)) if isinstance(c, str)), ""
    )
    return {
        "study": study,
        "metric": metric,
        "classes": classes.split("; ") if classes else [],
        "better": "higher" if GREATER_IS_BETTER[metric] else "lower",
        "rows": rows,
        "figure": image_uri(figure),
        "n_runs": len(runs),
        "runs": runs,
        "observations": notes,
        "has_observations": observations_csv is not None,
        "combine": None,  # add_combine_views
        "diverged": runs[runs["status"] == "diverged"][
            ["variant", "run", "diverged_epoch"]
        ].to_dict("records"),
    }


def add_combine_views(sections: list[dict], tables: list) -> None:
    """Give each combine study's section its `combine` view, from its additivity.csv."""
    by_slug = {Path(path).parent.name: Path(path) for path in tables}
    for section in sections:
        path = by_slug.get(section["study"]["slug"])
        if section["study"]["kind"] == "combine" and path is not None:
            section["combine"] = combine_view(section["study"], pd.read_csv(path))


def combine_view(study: StudyInfo, table: pd.DataFrame) -> dict:
    """A combine study's winners and whether their gains add up (its additivity.csv), formatted."""
    winners = [
        {"study": w["study"], "variant": w["variant"]}
        for w in (study.get("combination") or {}).get("winners", [])
    ]
    records = table.to_dict("records")
    found = next((r for r in records if r["comparison"] == "additivity"), None)
    if found is None:
        return {"winners": winners, "additivity": None}
    test = found if math.isfinite(found["estimate"]) else {}

    def ci(low, high):
        return f"[{low:+.3g}, {high:+.3g}]" if low is not None and math.isfinite(low) else ""

    against = [
        {"winner": a["winner"], "verdict": _verdict({**a, "is_reference": False}),
         "delta": _delta({**a, "is_reference": False})}
        for a in records if a["comparison"] == "combined vs winner"
    ]  # fmt: skip
    return {
        "winners": winners,
        "additivity": {
            "combined": f"{found['combined_delta']:+.3g}",
            "sum": f"{found['sum_of_gains']:+.3g}",
            "contrast": f"{test['estimate']:+.3g}" if test else "",
            "ci": ci(test.get("ci_low"), test.get("ci_high")),
            "p": f"{test['p_value']:.2g}" if test else "",
            "verdict": found["verdict"],
            "adds_up": found["verdict"].startswith("the gains add up"),
        },
        "against": against,
    }


def overview_rows(sections: list[dict]) -> list[dict]:
    """One row per study: the baseline's score, how many variants differ detectably, the best.

    The best is the variant marked best (verdict `better`, best mean among those); the worst is
    the variant detectably worse with the worst mean, or one whose every run diverged.
    """
    out = []
    for s in sections:
        rows = s["rows"]
        ref = next((r for r in rows if r["reference"]), None)
        others = [r for r in rows if not r["reference"]]
        worse = [r for r in others if r["verdict_class"] == "worse" and r["score"] is not None]
        worse.sort(key=lambda r: r["score"], reverse=s["better"] == "lower")
        worse += [r for r in others if r["score"] is None and r["delta"]]  # diverged: no score
        compared = [r for r in others if r["verdict"]]
        out.append(
            {
                "slug": s["study"]["slug"],
                "title": s["study"]["title"],
                "metric": s["metric"],
                "better": s["better"],
                "reference": ref,
                "best": next((r for r in rows if r["best"]), None),
                "worst": worse[0] if worse else None,
                "detectable": sum(r["detectable"] for r in compared),
                "compared": len(compared),
                "single": sum(r["verdict"] == "single run" for r in compared),
                "variants": len(rows),
                "runs": s["n_runs"],
                "diverged": sum(r["diverged"] for r in rows),
                "observations": len(s["observations"]),
            }
        )
    return out


def add_responses(sections: list[dict], figures: list) -> None:
    """Give each study with a response figure (results/studies/<slug>/response.<fmt>) its image."""
    by_slug = {Path(path).parent.name: path for path in figures}
    for section in sections:
        path = by_slug.get(section["study"]["slug"])
        section["response"] = image_uri(path) if path else None


def state_once(sections: list[dict]) -> None:
    """An observation about the same runs (same experiment, rule and sentence: a baseline shared
    by several studies) is stated in the first study that makes it; the later ones point to it
    (`stated_in`: that study's slug and title)."""
    seen: dict = {}
    for section in sections:
        experiment = {row["label"]: row["experiment"] for row in section["rows"]}
        for note in section["observations"]:
            exp = experiment.get(note["variant"])
            if exp is None:
                continue
            key = (exp, note["rule"], note["text"])
            if key in seen:
                note["stated_in"] = seen[key]
            else:
                seen[key] = {"slug": section["study"]["slug"], "title": section["study"]["title"]}
        merged: list = []  # one pointer per variant and study: "the same gap and speed as in ..."
        for note in section["observations"]:
            last = merged[-1] if merged else None
            if (note.get("stated_in") and last and last.get("stated_in") == note["stated_in"]
                    and last["variant"] == note["variant"]):  # fmt: skip
                last["rules"].append(note["rule"])
                continue
            merged.append({**note, "rules": [note["rule"]]} if note.get("stated_in") else note)
        section["observations"] = merged


def run_table(sections: list[dict]) -> tuple[list[dict], float]:
    """Every run once (a run shared by several studies counts once), and the total wall time."""
    seen: dict[tuple, dict] = {}
    for s in sections:
        for rec in s["runs"].to_dict("records"):
            key = (rec["experiment"], rec["run"])
            if key in seen:
                seen[key]["studies"].append(s["study"]["title"])
                continue
            seen[key] = {
                "experiment": rec["experiment"],
                "run": rec["run"],
                "variant": rec["variant"],
                "studies": [s["study"]["title"]],
                "host": rec.get("host") or "–",
                "device": rec.get("device") or "–",
                "status": rec["status"],
                "stopped": _finite(rec.get("stopped_epoch")),
                "epochs": fmt(rec["epochs_run"]),
                "wall": float(rec["wall_seconds"]),
                "sec_per_epoch": fmt(rec["seconds_per_epoch"], 3),
            }
    runs = sorted(seen.values(), key=lambda r: (r["experiment"], r["run"]))
    return runs, sum(r["wall"] for r in runs)


def training_versions(sections: list[dict]) -> dict:
    """Versions recorded by the training jobs themselves (metrics.json `host`), per package."""
    frames = [s["runs"] for s in sections if len(s["runs"])]
    if not frames:
        return {}
    runs = pd.concat(frames).drop_duplicates(["experiment", "run"])
    return {
        col: distinct(runs[col])
        for col in ("python", "tensorflow", "keras", "keras_backend")
        if col in runs
    }


def duration(seconds: float) -> str:
    """1 h 02 min, 3 min 05 s, 12.3 s."""
    if not math.isfinite(seconds):
        return "–"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


def render(
    title: str,
    sections: list[dict],
    config_files: dict[str, str],
    experiments: dict[str, dict],
    workdir: str | Path = ".",
    overview_figure: str | None = None,
    **extra,
) -> str:
    """The report's HTML. `extra` goes to the template as is (for the CV and LR range views)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template("report.html.j2")
    runs, compute = run_table(sections)
    extra.setdefault("lr_ranges", [])
    return template.render(
        title=title,
        sections=sections,
        overview=overview_rows(sections),
        overview_figure=overview_figure,
        rules=RULES,
        method=statistics.describe_method(),
        config_files=config_files,
        experiments={k: json.dumps(v, indent=2, sort_keys=True) for k, v in experiments.items()},
        versions=versions(),
        training_versions=training_versions(sections),
        commit=git_commit(workdir),
        host=platform.node(),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=runs,
        compute=duration(compute),
        duration=duration,
        **extra,
    )


def build_report(params: dict, inputs: dict, output: str | Path) -> None:
    """Gather every study's tables, figure and observations into `output` (written atomically).

    params: {"title", "studies": [study description], "config_files": {name: text},
    "experiments": {id: spec}}; inputs: {"summary": [...], "runs": [...], "figure": [...],
    "observations": [...]} aligned with params["studies"], and "overview" (the effects figure).
    """
    observations = inputs.get("observations") or [None] * len(params["studies"])
    sections = [
        study_section(study, summary, runs, figure, notes)
        for study, summary, runs, figure, notes in zip(
            params["studies"], inputs["summary"], inputs["runs"], inputs["figure"], observations
        )
    ]
    state_once(sections)
    add_responses(sections, inputs.get("response", []))
    add_cv_views(sections, inputs.get("cv_ranking", []))
    add_combine_views(sections, inputs.get("additivity", []))
    add_grid_views(
        sections, params.get("grids", {}), inputs.get("anova", []), inputs.get("grid_figure", [])
    )
    add_search_views(sections, inputs)
    overview = inputs.get("overview")
    html = render(
        params["title"],
        sections,
        params["config_files"],
        params["experiments"],
        overview_figure=image_uri(overview) if overview else None,
        lr_ranges=lr_range_views(params.get("lr_ranges", []), inputs),
        not_fused=params.get("not_fused", {}),
    )
    atomic_write_text(output, html)


# Cross-validation and learning-rate range test views (templates _cv.html.j2, _lr_range.html.j2)


def add_cv_views(sections: list[dict], rankings: list) -> None:
    """Give each cv study's section its `cv` view, from its cv_ranking.csv and runs.csv."""
    by_slug = {Path(path).parent.name: Path(path) for path in rankings}
    for section in sections:
        path = by_slug.get(section["study"]["slug"])
        if path is not None:
            section["cv"] = cv_view(section["study"], path, path.parent / "runs.csv")


def cv_view(study: StudyInfo, ranking_csv, runs_csv) -> dict:
    """The ranked candidates (mean ± std and every fold's score) and the refit's test result."""
    metric = metric_of(study["task"])
    k = int(study["cv"])
    rows = [
        {
            "rank": int(rec["rank"]),
            "label": rec["candidate"],
            "experiment": rec["experiment"],
            "cells": [fmt(rec.get(p)) for p in study["varied"]],
            "score": pm(rec[f"val_{metric}_mean"], rec[f"val_{metric}_std"], k),
            "folds": [fmt(rec[f"fold_{i}_val_{metric}"]) for i in range(k)],
            "diverged": int(rec["diverged_folds"]),
            "winner": bool(rec["is_winner"]),
            "vs_winner": rec.get("vs_winner") if isinstance(rec.get("vs_winner"), str) else "",
            "vs_winner_p": fmt(rec.get("vs_winner_p_adjusted"), 2),
        }
        for rec in pd.read_csv(ranking_csv).to_dict("records")
    ]
    runs = pd.read_csv(runs_csv)
    refit = runs[runs["is_refit"].astype(bool)].to_dict("records")
    tied = [r["label"] for r in rows if r["vs_winner"] == "tied with the winner"]
    view = {"metric": metric, "k": k, "rows": rows, "refit": None, "tied": tied}
    if refit:
        rec = refit[0]
        view["refit"] = {
            "label": rec["variant"],
            "experiment": rec["experiment"],
            "run": rec["run"],
            "status": rec["status"],
            "final_val": fmt(rec.get(f"final_val_{metric}")),
            "test": fmt(rec.get(f"test_{metric}")),
            "test_loss": fmt(rec.get("test_loss")),
        }
    return view


def add_grid_views(sections: list[dict], grids: dict, anovas: list, figures: list) -> None:
    """Give each section of a study with a grid its `grid` view (template _grid.html.j2), from
    its grid's factors (`grids`: slug -> factors), its anova.csv and its grid figure."""
    tables = {Path(path).parent.name: Path(path) for path in anovas}
    drawn = {Path(path).parent.name: Path(path) for path in figures}
    for section in sections:
        slug = section["study"]["slug"]
        if grids.get(slug) and slug in tables and slug in drawn:
            section["grid"] = grid_view(section["study"], grids[slug], tables[slug], drawn[slug])


def grid_view(study: StudyInfo, factors: list, anova_csv, figure) -> dict:
    """The grid figure inlined, the ANOVA rows formatted (none when the grid is not full
    factorial, or has nothing to measure the noise by), the note saying how and why."""
    table = pd.read_csv(anova_csv)
    notes = [n for n in table["note"].dropna().astype(str) if n]
    rows = [
        {
            "term": rec["term"],
            "kind": rec["kind"],
            "df": fmt(int(rec["df"])),
            "sum_sq": fmt(rec["sum_sq"], 3),
            "mean_sq": fmt(rec["sum_sq"] / rec["df"], 3)
            if rec["df"] > 0 and rec["kind"] != "total"
            else "–",
            "F": fmt(rec["F"], 3),
            "p": _p_value(rec["p_value"]),
            "eta_sq": f"{100 * rec['eta_sq']:.1f} %" if math.isfinite(rec["eta_sq"]) else "–",
        }
        for rec in table.to_dict("records")
        if isinstance(rec["term"], str)
    ]
    return {
        "figure": image_uri(figure),
        "factors": factors,
        "label": grid.score_label(study),
        "rows": rows,
        "note": notes[0] if notes else "",
        "method": grid.describe_method(),
        "cv": study["kind"] == "cv",
    }


def add_search_views(sections: list[dict], inputs: dict) -> None:
    """Give each search study's section its `search` view, from its trials.csv, importance.csv
    and search figure (inputs search_trials, search_importance, search_figure, in the order of
    the search studies shown)."""
    shown = [s for s in sections if s["study"]["kind"] == "search"]
    files = zip(
        inputs.get("search_trials", []),
        inputs.get("search_importance", []),
        inputs.get("search_figure", []),
    )
    for section, (trials, importance, figure) in zip(shown, files):
        section["search"] = search_view(section, trials, importance, figure)


def search_view(section: dict, trials_csv, importance_csv, figure) -> dict:
    """A search study's view: its request, the re-tested trials (search score against their
    fresh runs), the winner (only one detectably better than the reference on those runs), the
    winner's settings as YAML, the importances and the figure."""
    study, runs = section["study"], section["runs"]
    info, metric = study["search"], section["metric"]
    higher = GREATER_IS_BETTER[metric]
    table = pd.read_csv(trials_csv)
    rows = {r["label"]: r for r in section["rows"]}
    retested = []
    for t in info["retested"]:
        label = search.trial_label(t["trial"])
        fresh = pd.to_numeric(runs[runs["variant"] == label][f"best_val_{metric}"], "coerce")
        over = search.overstatement(t["search_score"], fresh.tolist(), higher)
        row = rows.get(label, {})
        retested.append({
            "label": label,
            "trial": t["trial"],
            "params": [(k, fmt(v) if not isinstance(v, list) else json.dumps(v))
                       for k, v in t["params"].items()],
            "search_score": fmt(t["search_score"]),
            "fresh": row.get("best_val", "–"),
            "runs": over["runs"],
            "overstated": fmt(over["overstated"], 3),
            "overstated_ci": (f"{fmt(over['ci_low'], 3)} to {fmt(over['ci_high'], 3)}"
                              if over["ci_low"] is not None else "–"),
            "delta": row.get("delta", "–"),
            "verdict": row.get("verdict", "–"),
            "verdict_class": row.get("verdict_class", ""),
            "best": bool(row.get("best")),
            "yaml": search.settings_yaml(t["params"], t["trial"], study["name"]),
        })  # fmt: skip
    winner = next((r for r in retested if r["best"]), None)
    found = pd.read_csv(importance_csv)
    importance = [
        {"parameter": r["parameter"], "importance": fmt(r["importance"], 2),
         "ci": f"{fmt(r['ci_low'], 2)} to {fmt(r['ci_high'], 2)}"}
        for r in found.to_dict("records") if isinstance(r["parameter"], str)
    ]  # fmt: skip
    note = next((r["note"] for r in found.to_dict("records") if isinstance(r["note"], str)), None)
    request = info["request"]
    return {
        "sampler": request["sampler"],
        "seed": request["seed"],
        "trials": len(table),
        "rounds": len(info["rounds"]),
        "diverged": int((~table["status"].isin(["ok", "pruned"])).sum()),
        "pruned": int((table["status"] == "pruned").sum()),
        "halving": request.get("halving"),
        "retested": retested,
        "winner": winner,
        "best_retested": retested[0] if retested else None,
        "fresh_runs": retested[0]["runs"] if retested else 0,
        "importance": importance,
        "importance_note": note,
        "bootstrap": search.IMPORTANCE_BOOTSTRAP,
        "level": int(search.IMPORTANCE_LEVEL * 100),
        "figure": image_uri(figure),
        "space": [{"key": k, "range": _space_range(v)} for k, v in request["space"]],
    }


def _space_range(entry: dict) -> str:
    if "choices" in entry:
        text = "one of " + ", ".join(json.dumps(c) for c in entry["choices"])
    else:
        text = f"{fmt(entry['low'])} to {fmt(entry['high'])}" + (
            " (log)" if entry.get("log") else ""
        )
    if entry.get("when"):
        text += "; only where " + ", ".join(f"{k} = {v}" for k, v in entry["when"].items())
    return text


def _p_value(p) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def lr_range_views(tests: list[dict], inputs: dict) -> list[dict]:
    """One view per lr_range study: its figure inlined, the suggestion, and who uses it."""
    views = []
    for test, suggestion, figure in zip(
        tests, inputs.get("lr_range_suggestion", []), inputs.get("lr_range_figure", [])
    ):
        s = json.loads(Path(suggestion).read_text(encoding="utf-8"))
        rule = "steepest descent of the smoothed loss"
        if s["rule"] == "min_loss_over_10" or s["fallback"]:
            rule = "lr at the minimum of the smoothed loss / 10"
            rule += " (fallback: no descent before the minimum)" if s["fallback"] else ""
        views.append(
            {
                "study": test,
                "figure": image_uri(figure),
                "suggested": fmt(s["suggested_lr"], 3),
                "rule": rule,
                "steepest": fmt(s["steepest_lr"], 3),
                "min_loss_lr": fmt(s["min_loss_lr"], 3),
                "range": f"{fmt(s['min_lr'], 3)} to {fmt(s['max_lr'], 3)}",
                "iterations": f"{s['iterations_run']} of {s['iterations_planned']}",
                "stopped": s["stop_reason"] or "no: every planned batch ran",
                "batch_size": s["batch_size"],
                "used_by": test["used_by"],
                "spec": json.dumps(test["spec"], indent=2, sort_keys=True),
            }
        )
    return views
