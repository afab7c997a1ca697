"""Static safety checks over the package, the workflow's scripts and its rules (for test_safety.py).

`unsafe_calls(paths)` reads every file through its syntax tree, not line by line, so a call
after a `return`, an aliased import, `shell = True` with spaces or an argument on another line
are all seen. Snakefiles and `.smk` files are first compiled to Python by Snakemake's own parser,
so rules are checked as Snakemake reads them: a generated rule (`rule:` in a loop, named by
`name:`) and a `checkpoint` are rules like any other.
"""

from __future__ import annotations

import ast
import types
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# Calls that hand a string to a shell.
SHELL_CALLS = {
    "os.system",
    "os.popen",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "asyncio.create_subprocess_shell",
    "shell",  # Snakemake's shell(), available in every Snakefile
    "snakemake.shell",
    "snakemake.shell.shell",
}
# Calls that unpickle (run code from) their input.
PICKLE_CALLS = {
    f"{module}.{name}"
    for module in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
    for name in ("load", "loads", "Unpickler")
} | {"joblib.load", "pandas.read_pickle", "marshal.load", "marshal.loads", "shelve.open"}
UNSAFE_NAMES = {"enable_unsafe_deserialization"}
# The one restricted unpickler: (file name, class name).
RESTRICTED_UNPICKLER = ("readers.py", "_NumpyOnlyUnpickler")
# hpstudy's own model loader, which passes safe_mode=True itself (checked as any other call).
WRAPPER = "hpstudy.training.load_model"
# Snakemake directives that run something other than a script.
FORBIDDEN_DIRECTIVES = {"shellcmd", "wrapper", "notebook", "cwl", "template_engine"}


def unsafe_calls(paths: Iterable[Path], seen: Counter | None = None) -> list[str]:
    """One line per unsafe construct in `paths` (.py files, Snakefiles and .smk files).

    `seen` counts what was checked (e.g. "load_model", "np.load", "rule", "rule select_cv"),
    so a test can tell that the checks looked at something.
    """
    seen = Counter() if seen is None else seen
    findings: list[str] = []
    for path in paths:
        path = Path(path)
        if path.suffix == ".py":
            tree, lines = ast.parse(path.read_text(encoding="utf-8"), str(path)), None
        else:
            code, lines = compile_rules(path)
            tree = ast.parse(code, str(path))
        checker = _Checker(path, lines, seen)
        checker.visit_tree(tree)
        if path.suffix != ".py":
            checker.check_rules(tree)
        findings += checker.findings
    return findings


def compile_rules(path: Path) -> tuple[str, dict[int, int]]:
    """A Snakefile compiled to Python by Snakemake's parser, and its line map (Python -> file)."""
    from snakemake import parser

    class Source:
        def get_path_or_uri(self, secret_free: bool = True) -> str:
            return str(path)

    workflow = types.SimpleNamespace(
        sourcecache=types.SimpleNamespace(open=lambda _: open(path, encoding="utf-8"))
    )
    linemap: dict[int, int] = {}
    code, _ = parser.parse(Source(), workflow, linemap)
    return code, linemap


class _Checker:
    def __init__(self, path: Path, lines: dict[int, int] | None, seen: Counter) -> None:
        self.path, self.lines, self.seen = path, lines, seen
        self.findings: list[str] = []
        self.names: dict[str, str] = {}  # local name -> what it was imported as
        self.defined: set[str] = set()  # functions defined at the top of the module

    def flag(self, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", 0)
        if self.lines is not None:
            line = self.lines.get(line, line)
        self.findings.append(f"{self.path}:{line}: {message}")

    # ------------------------------------------------------------------ names

    def collect_names(self, tree: ast.AST) -> None:
        package = "hpstudy" if self.path.parent.name == "hpstudy" else ""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    self.names[alias.asname or top] = alias.name if alias.asname else top
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # from .training import x / from . import training
                    module = ".".join(p for p in (package, module) if p)
                for alias in node.names:
                    self.names[alias.asname or alias.name] = f"{module}.{alias.name}".lstrip(".")
        for node in getattr(tree, "body", []):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.defined.add(node.name)

    def dotted(self, node: ast.AST) -> str | None:
        """`np.load` -> "numpy.load", `lm` (from keras.saving import load_model as lm) -> ..."""
        if isinstance(node, ast.Name):
            if node.id in self.defined and node.id not in self.names:
                module = "hpstudy." + self.path.stem if self.path.parent.name == "hpstudy" else ""
                return f"{module}.{node.id}".lstrip(".")
            return self.names.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else f"?.{node.attr}"
        return None

    # ------------------------------------------------------------------ Python

    def visit_tree(self, tree: ast.AST) -> None:
        self.collect_names(tree)
        called = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called.add(id(node.func))
                self.check_call(node)
            elif isinstance(node, ast.ClassDef):
                self.check_class(node)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name in UNSAFE_NAMES:
                        self.flag(node, f"imports {alias.name}")
        for node in ast.walk(tree):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if not isinstance(node, (ast.Attribute, ast.Name)) or name is None:
                continue
            if name in UNSAFE_NAMES and id(node) not in called:
                self.flag(node, f"refers to {name}")
            elif name.endswith("load_model") and id(node) not in called:
                if self.dotted(node) != WRAPPER:
                    self.flag(node, f"refers to {name} without calling it (so unchecked)")

    def check_call(self, call: ast.Call) -> None:
        name = self.dotted(call.func) or ""
        last = name.rsplit(".", 1)[-1]
        keywords = {k.arg: k.value for k in call.keywords}
        text = ast.unparse(call)[:120]
        for arg, value in keywords.items():
            if arg == "shell" and not (isinstance(value, ast.Constant) and not value.value):
                self.flag(call, f"passes shell={ast.unparse(value)}: {text}")
        if name in SHELL_CALLS:
            self.flag(call, f"runs a shell ({name}): {text}")
        if name in PICKLE_CALLS:
            self.flag(
                call, f"unpickles with {name} (only datasets' restricted unpickler may): {text}"
            )
        if last in UNSAFE_NAMES:
            self.flag(call, f"calls {last}: {text}")
        if name == "getattr" and len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
            attribute = str(call.args[1].value)
            if attribute in UNSAFE_NAMES or attribute.endswith("load_model"):
                self.flag(call, f"reaches {attribute} through getattr: {text}")
        if name in ("numpy.load", "np.load"):
            self.seen["np.load"] += 1
            value = keywords.get("allow_pickle")
            if not (isinstance(value, ast.Constant) and value.value is False):
                self.flag(call, f"calls numpy.load without allow_pickle=False: {text}")
        if last.endswith("load_model"):
            self.seen["load_model"] += 1
            value = keywords.get("safe_mode", ...)
            if None in keywords:
                self.flag(call, f"passes **kwargs to {last}, which could set safe_mode: {text}")
            elif value is ...:
                if name != WRAPPER:
                    self.flag(call, f"calls {name} without safe_mode=True: {text}")
            elif not (isinstance(value, ast.Constant) and value.value is True):
                self.flag(call, f"calls {name} with safe_mode={ast.unparse(value)}: {text}")

    def check_class(self, node: ast.ClassDef) -> None:
        bases = {self.dotted(base) for base in node.bases}
        if not bases & {"pickle.Unpickler", "_pickle.Unpickler"}:
            return
        if (self.path.name, node.name) != RESTRICTED_UNPICKLER:
            self.flag(node, f"defines an unpickler, {node.name}, besides {RESTRICTED_UNPICKLER}")
            return
        methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        if "find_class" not in methods:
            self.flag(node, f"{node.name} does not restrict find_class")
        self.seen["restricted unpickler"] += 1

    # ------------------------------------------------------------------ rules

    def check_rules(self, tree: ast.AST) -> None:
        """Every rule (and checkpoint) calls a script, or runs nothing (a target list)."""
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            directives = {}
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and self.dotted(target.value) == "workflow":
                    directives[target.attr] = decorator
            if "rule" not in directives:
                continue
            rule = directives["rule"]
            settings = {k.arg: k.value for k in rule.keywords}
            name = ast.literal_eval(settings["name"]) if "name" in settings else None
            if name is None and "name" in directives:  # a generated rule: `name: f"..."`
                name = _template(directives["name"].args[0])
            checkpoint = "checkpoint" in settings and ast.literal_eval(settings["checkpoint"])
            kind = "checkpoint" if checkpoint else "rule"
            self.seen["rule"] += 1
            self.seen[f"{kind} {name}"] += 1
            for directive in sorted(FORBIDDEN_DIRECTIVES & set(directives)):
                shown = "shell" if directive == "shellcmd" else directive
                self.flag(rule, f"{kind} {name} has a {shown}: directive")
            body = node.body
            calls_script = (
                "script" in directives
                and len(body) == 1
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Call)
                and self.dotted(body[0].value.func) == "script"
            )
            runs_nothing = "norun" in directives and all(isinstance(s, ast.Pass) for s in body)
            if not (calls_script or runs_nothing or FORBIDDEN_DIRECTIVES & set(directives)):
                self.flag(rule, f"{kind} {name} has a run: block (code instead of a script:)")


def _template(node: ast.AST) -> str:
    """A rule name as written: "download_{_source}" for f"download_{_source}"."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            str(v.value) if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
            for v in node.values
        )
    return ast.unparse(node)
