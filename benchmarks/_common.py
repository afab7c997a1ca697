"""Helpers shared by the benchmark scripts: timing, statistics, machine facts, result files.

Each benchmark writes its section to `benchmarks/out/<name>.md` (and the raw numbers to
`<name>.json`); `benchmarks/run.py` assembles them with the machine's facts into RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
PYTHON = sys.executable


def run_timed(cmd: list[str], cwd=None, env=None, log: Path | None = None) -> float:
    """Run `cmd` to completion and return its wall time in seconds; fail loudly if it fails."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    out = open(log, "w") if log else subprocess.DEVNULL
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()
    seconds = time.perf_counter() - start
    if proc.returncode:
        where = f"; see {log}" if log else ""
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}{where}")
    return seconds


def stats(values: list[float]) -> dict:
    """min / median / max and the number of samples."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def fmt(s: dict, unit: str = "s", digits: int = 2) -> str:
    """`median (min–max, n=3)` for a table cell."""
    sep = "" if unit in ("×", "%") else " "
    d = digits
    return f"{s['median']:.{d}f}{sep}{unit} ({s['min']:.{d}f}–{s['max']:.{d}f}, n={s['n']})"


def ratio_stats(num: list[float], den: list[float]) -> dict:
    """Ratios of paired samples (measured in the same round), as stats."""
    return stats([a / b for a, b in zip(num, den)])


def load() -> float:
    return os.getloadavg()[0]


def machine_facts() -> dict:
    """What the numbers were measured on."""
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for dist in ("snakemake", "keras", "tensorflow-cpu", "tensorflow", "jax", "jaxlib", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


def write_section(name: str, markdown: str, raw: dict) -> None:
    """Save one benchmark's section (markdown) and raw numbers for run.py to assemble."""
    OUT.mkdir(parents=True, exist_ok=True)
    raw = {
        **raw,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_after": round(load(), 2),
    }
    (OUT / f"{name}.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    (OUT / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown, flush=True)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
