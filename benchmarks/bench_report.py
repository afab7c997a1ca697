"""(e) Report: build time and file size for 100 experiments.

Reuses the report test's synthetic study set (`tests/test_report_size.py`: 10 ofat studies of 10
variants around one baseline, 101 experiments of 500 epochs, fake histories and metrics.json)
and its `build`, which calls the same functions as the workflow's aggregate, plot, overview and
report jobs. Timed in one process from the run files to `report.html`; generating the fake runs
is not timed.

    python benchmarks/bench_report.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, fmt, stats, table, write_section

sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import test_report_size as synthetic  # the report engineer's generator

    seconds, html_seconds, sizes = [], [], []
    build_report = synthetic.report.build_report

    def timed_build_report(*a, **kw):  # the report job alone, inside the whole chain
        t0 = time.perf_counter()
        build_report(*a, **kw)
        html_seconds.append(time.perf_counter() - t0)

    synthetic.report.build_report = timed_build_report
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="hpstudy-bench-report-") as tmp:
            root = Path(tmp)
            os.chdir(root)
            studies, specs = synthetic.synthetic_studies(root)
            t0 = time.perf_counter()
            html = synthetic.build(root, studies, specs)
            seconds.append(time.perf_counter() - t0)
            sizes.append(html.stat().st_size / 2**20)
    os.chdir(REPO)
    t, s = stats(seconds), stats(sizes)
    md = "\n\n".join(
        [
            "## (e) Report: 100 experiments",
            f"{len(specs)} synthetic experiments ({len(studies)} studies, {synthetic.EPOCHS} epochs "
            "each), from run files to `report.html`: tables, one figure per study, the overview and "
            "the HTML, in one process (the workflow runs the same functions as separate jobs).",
            table(
                ["whole chain", "of which the report job", "size", "< 15 s and < 5 MB?"],
                [
                    [
                        fmt(t),
                        fmt(stats(html_seconds)),
                        fmt(s, "MiB"),
                        "yes"
                        if t["max"] < 15 and s["max"] < 5
                        else ("median only" if t["median"] < 15 and s["max"] < 5 else "no"),
                    ]
                ],
            ),
        ]
    )
    write_section("report", md, {"seconds": seconds, "report_job": html_seconds, "mib": sizes})


if __name__ == "__main__":
    main()
