"""Safe by construction: no config string reaches a shell, names become safe paths under
results/, the report escapes every user string, no pickle is ever loaded, models load in
safe mode. The hostile names run through the real workflow of test_robustness.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_robustness import HOSTILE_LABEL, HOSTILE_STUDY, HOSTILE_TITLE, hostile_workflow

from hpstudy.ids import slugify

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
CODE = [*sorted((ROOT / "src" / "hpstudy").glob("*.py")), *sorted((ROOT / "workflow" / "scripts").glob("*.py"))]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return hostile_workflow(tmp_path_factory)


def test_no_rule_runs_a_shell():
    """Every rule calls a Python script: no shell:, run: or shell() that a config string could reach."""
    rules = 0
    for path in RULE_FILES:
        text = path.read_text()
        assert not re.search(r"^\s*(shell|run|wrapper|notebook|cwl):", text, re.M), path
        assert "shell(" not in text, path
        for body in re.split(r"^rule \w+:", text, flags=re.M)[1:]:
            body = re.split(r"^\S", body, flags=re.M)[0]  # up to the next top-level statement
            if "input:" in body and "default_target" in body:
                continue  # rule all: a target list only
            assert re.search(r"^\s+script:", body, re.M), body
            rules += 1
    assert rules >= 6
    for path in CODE:
        text = path.read_text()
        assert "shell=True" not in text and "os.system(" not in text, path


@pytest.mark.e2e
def test_hostile_names_execute_nothing_and_stay_under_results(finished):
    assert not list(finished.rglob("pwned*")) and not (ROOT / "pwned").exists()
    made = sorted(p.name for p in finished.iterdir())
    assert made == [".snakemake", "config.yaml", "resources", "results"]
    (study,) = (finished / "results" / "studies").iterdir()
    assert re.fullmatch(r"[a-z0-9_-]+", study.name) and study.name == slugify(HOSTILE_STUDY)
    for path in (finished / "results").rglob("*"):
        rel = str(path.relative_to(finished / "results"))
        assert re.fullmatch(r"[A-Za-z0-9_./-]+", rel), rel
        assert ".." not in path.relative_to(finished).parts


@pytest.mark.e2e
def test_report_escapes_hostile_labels_and_titles(finished):
    html = (finished / "results" / "report.html").read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in html
    assert "$(touch pwned2)" in html  # shown as text, verbatim


def test_slugs_never_escape_results():
    taken: set = set()
    names = [HOSTILE_STUDY, HOSTILE_LABEL, HOSTILE_TITLE, "..", "../..", "/etc/passwd", ".", "",
             "a/../../b", "CON", "名前", "-", "x" * 300]  # fmt: skip
    slugs = [slugify(name, taken) for name in names]
    assert len(set(slugs)) == len(slugs)
    for slug in slugs:
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", slug), slug
        base = Path("/r/results/studies")
        assert (base / slug).resolve().parent == base


def test_np_load_never_allows_pickle(tmp_path):
    loads = 0
    for path in CODE:
        for line in path.read_text().splitlines():
            if "np.load(" in line:
                loads += 1
                assert "allow_pickle=False" in line, f"{path}: {line.strip()}"
            assert "allow_pickle=True" not in line, f"{path}: {line.strip()}"
    assert loads >= 2
    # A prepared-data file carrying a pickled object is refused, not unpickled.
    from hpstudy import prepare

    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array([{"x": 1}], dtype=object), x_train=np.zeros(2))
    with pytest.raises(RuntimeError, match="evil.npz"):
        prepare.load(evil)


def test_every_model_load_uses_safe_mode():
    loads = []
    for path in CODE:
        for line in path.read_text().splitlines():
            if re.search(r"load_model\(|models\.load_model|saving\.load_model", line):
                if "def load_model" not in line:
                    loads.append((path.name, line.strip()))
    assert loads, "hpstudy.training.load_model should exist"
    for name, line in loads:
        assert "safe_mode=True" in line or line.startswith("return load_model"), (name, line)


LOADER = """
import sys
from hpstudy import devices
devices.setup(threads=1)
import keras
from hpstudy import training
inputs = keras.Input((2,))
model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
model.save(sys.argv[1] + "/plain.keras")
assert training.load_model(sys.argv[1] + "/plain.keras").count_params() == 3
lam = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
lam.save(sys.argv[1] + "/lambda.keras")
try:
    training.load_model(sys.argv[1] + "/lambda.keras")
except ValueError as exc:
    print("refused:", str(exc).splitlines()[0])
"""


def test_the_model_loader_refuses_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused:" in proc.stdout and "safe_mode" in proc.stdout
