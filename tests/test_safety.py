"""Safe by construction: no config string reaches a shell, names become safe paths under
results/, the report escapes every user string, nothing is unpickled except the CIFAR-10
batches (through datasets' restricted unpickler, which rebuilds numeric arrays only), models
load in safe mode. The source checks (safety_checks.py) read syntax trees, and are shown to fail
on a copy of the package with each unsafe line planted. The hostile names run through the real
workflow of test_robustness.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safety_checks import unsafe_calls
from test_robustness import HOSTILE_LABEL, HOSTILE_STUDY, HOSTILE_TITLE, hostile_workflow

from hpstudy.ids import slugify

ROOT = Path(__file__).resolve().parents[1]


def checked_files(root: Path) -> list[Path]:
    """The rules (Snakefile, workflow/rules/*.smk) and the code (src/hpstudy, workflow/scripts)."""
    return [
        root / "Snakefile",
        *sorted((root / "workflow" / "rules").glob("*.smk")),
        *sorted((root / "src" / "hpstudy").rglob("*.py")),
        *sorted((root / "workflow" / "scripts").glob("*.py")),
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return hostile_workflow(tmp_path_factory)


def test_the_source_has_no_unsafe_call():
    """No shell (in a rule or a call), no unpickling but the restricted unpickler's, np.load
    without pickles, every Keras model loaded in safe mode: over every file, not a sample."""
    seen: Counter = Counter()
    assert unsafe_calls(checked_files(ROOT), seen) == []
    # The checks looked at what they are about (so a renamed file cannot make them vacuous).
    assert seen["rule"] >= 12 and seen["rule all"] == 1
    assert seen["checkpoint select_cv"] == 1  # a checkpoint is a rule
    assert seen["rule download_{_source}"] == 1  # the rules generated per download source
    assert seen["np.load"] >= 2 and seen["load_model"] >= 1
    assert seen["restricted unpickler"] == 1


def _copy(tmp_path: Path) -> Path:
    """The package, the scripts and the rules, copied as they are laid out in the repository."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "src" / "hpstudy", copy / "src" / "hpstudy")
    shutil.copytree(ROOT / "workflow" / "scripts", copy / "workflow" / "scripts")
    shutil.copytree(ROOT / "workflow" / "rules", copy / "workflow" / "rules")
    shutil.copy(ROOT / "Snakefile", copy / "Snakefile")
    return copy


APPENDED = "\n\ndef _planted(path, cmd):\n    {}\n"
# (file, what is planted, a phrase the finding must contain). Python lines go into a function
# appended to the file; for rules the text is a replacement ("old" -> "new").
PLANTS = {
    "load_model after a return": (
        "src/hpstudy/training.py",
        APPENDED.format("x = path\n    return x\n    load_model(path, safe_mode=False)"),
        "with safe_mode=False",
    ),
    "aliased load_model": (
        "src/hpstudy/report.py",
        "\nfrom keras.saving import load_model as lm\n" + APPENDED.format("return lm(path)"),
        "calls keras.saving.load_model without safe_mode=True",
    ),
    "aliased module": (
        "src/hpstudy/figures.py",
        "\nimport keras.saving as ks\n" + APPENDED.format("return ks.load_model(path)"),
        "without safe_mode=True",
    ),
    "load_model on two lines": (
        "workflow/scripts/report.py",
        "\nimport keras\n" + APPENDED.format("keras.models.load_model(\n        path,\n    )"),
        "without safe_mode=True",
    ),
    "safe_mode from **kwargs": (
        "src/hpstudy/analysis.py",
        "\nimport keras\n"
        + APPENDED.format("keras.saving.load_model(path, **{'safe_mode': False})"),
        "passes **kwargs",
    ),
    "enable_unsafe_deserialization": (
        "src/hpstudy/figures.py",
        "\nimport keras\n" + APPENDED.format("keras.config.enable_unsafe_deserialization()"),
        "calls enable_unsafe_deserialization",
    ),
    "shell = True with spaces": (
        "src/hpstudy/devices.py",
        APPENDED.format("subprocess.run(cmd, shell = True)"),
        "passes shell=True",
    ),
    "os.system": (
        "workflow/scripts/train.py",
        "\nimport os\n" + APPENDED.format("os.system(cmd)"),
        "runs a shell (os.system)",
    ),
    "pickle through an alias": (
        "src/hpstudy/analysis.py",
        "\nimport pickle as pk\n" + APPENDED.format("return pk.loads(path.read_bytes())"),
        "unpickles with pickle.loads",
    ),
    "a second unpickler": (
        "src/hpstudy/prepare.py",
        "\nimport pickle\n\n\nclass Loader(pickle.Unpickler):\n    pass\n",
        "defines an unpickler, Loader",
    ),
    "np.load with pickles": (
        "src/hpstudy/prepare.py",
        APPENDED.format("return np.load(path, allow_pickle=True)"),
        "numpy.load without allow_pickle=False",
    ),
    "np.load without allow_pickle": (
        "workflow/scripts/aggregate_study.py",
        "\nimport numpy\n" + APPENDED.format("return numpy.load(path)"),
        "numpy.load without allow_pickle=False",
    ),
    "a generated download rule with shell:": (
        "workflow/rules/data.smk",
        (
            'script:\n            "../scripts/download_dataset.py"',
            'shell:\n            "curl -o {output} {params.source}"',
        ),
        "rule download_{_source} has a shell: directive",
    ),
    "a checkpoint with run:": (
        "workflow/rules/cv.smk",
        ('script:\n        "../scripts/select_cv.py"', "run:\n        print(input)"),
        "checkpoint select_cv has a run: block",
    ),
    "shell() in a handler": (
        "Snakefile",
        ("rule all:", 'onsuccess:\n    shell("echo {config}")\n\n\nrule all:'),
        "runs a shell (shell)",
    ),
}


@pytest.mark.parametrize("plant", PLANTS)
def test_the_checks_find_each_planted_unsafe_line(tmp_path, plant):
    copy = _copy(tmp_path)
    assert unsafe_calls(checked_files(copy)) == []  # the copy is as clean as the repository
    relative, text, phrase = PLANTS[plant]
    path = copy / relative
    source = path.read_text()
    if isinstance(text, tuple):
        old, new = text
        assert source.count(old) == 1, (relative, old)
        path.write_text(source.replace(old, new))
    else:
        path.write_text(source + text)
    findings = unsafe_calls(checked_files(copy))
    assert findings, f"{plant}: nothing found"
    assert all(finding.startswith(f"{path}:") for finding in findings), findings
    assert any(phrase in finding for finding in findings), findings


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


def test_a_prepared_file_with_a_pickled_object_is_refused(tmp_path):
    """What the np.load check protects, at run time: a pickled object is refused, not loaded."""
    from hpstudy import prepare

    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array([{"x": 1}], dtype=object), x_train=np.zeros(2))
    with pytest.raises(RuntimeError, match="evil.npz"):
        prepare.load(evil)


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


@pytest.mark.e2e
def test_the_model_loader_refuses_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused:" in proc.stdout and "safe_mode" in proc.stdout


def test_the_readme_says_what_is_trusted():
    """A config can run code (YTE), so the README must say it is trusted like the workflow."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    assert "A config file is code" in section and "`__use_yte__: true`" in section
    guarded, not_guarded = section.split("What it does not guard against:")
    for promise in ("GPU lock directory", "SHA-256 and size", "deadline", "https",
                    "restricted unpickler", "`shell:` or `run:`", "synced"):  # fmt: skip
        assert promise in guarded, promise
    for limit in ("malicious config file", "malicious Python environment", "root"):
        assert limit in not_guarded, limit
