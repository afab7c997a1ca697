"""A user's own model: `model: {kind: python, file, function, hyperparameters, files}`.

The config names a Python file and a function in it (`build_model` unless `function` says
otherwise) that returns a Keras model, compiled or not. Planning never runs that file and never
imports Keras: it reads the file's bytes (their SHA-256 enters the experiment id, with those of
the `files` it imports) and parses its source (`ast`) for what the checks need: the function's
parameters, whether it compiles a model, and which Keras layers it names (the plan-time answer
to "can the fused engine stack it?"). The training job then imports the file, calls the
function with the hyperparameters as keyword arguments (and `input_shape`, `n_outputs`, `task`
if the function names them), and checks the model before epoch 1 (`models.check_user_model`).

A model file is code: the training job runs it with the user's rights, as `python file.py`
would. Only use model files you trust (README, Security).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

#: Arguments the job passes when the function's signature names them (never hyperparameters).
INJECTED = ("input_shape", "n_outputs", "task")
DEFAULT_FUNCTION = "build_model"
#: The Keras layers whose towers the fused engine stacks (`stacked.StackedModel`).
STACKABLE_LAYERS = {"Dense", "Dropout", "Flatten", "Input", "InputLayer"}

_HASHES: dict[tuple, str] = {}
#: Where each planned file is, by SHA-256: the training job's inputs (the paths are not hashed).
PATHS: dict[str, str] = {}


class ModelFileError(ValueError):
    """A model file that cannot serve: missing, not Python, or without the function."""


def sha256(path: str | Path) -> str:
    """The file's SHA-256, computed once per (path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _HASHES[key]


@dataclass(frozen=True)
class FileFacts:
    """What the source of a model file says, read without running it."""

    parameters: tuple  # the function's parameter names, in order
    required: tuple  # those without a default
    var_keyword: bool  # it takes **kwargs
    compiles: bool  # the file (or a listed file) calls `.compile(`
    layers: frozenset  # Keras layer classes it names (keras.layers.X, layers.X, imported X)
    unstackable: str | None  # why the fused engine cannot stack it, or None


_FACTS: dict[tuple, FileFacts] = {}


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ModelFileError(f"{path} is not valid Python: {exc.msg} (line {exc.lineno})") from None


def _layer_names(tree: ast.Module) -> set:
    """Capitalised names used as `<...>.layers.X` or `layers.X`, or imported from keras.layers."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr[:1].isupper():
            value = node.value
            if (isinstance(value, ast.Attribute) and value.attr == "layers") or (
                isinstance(value, ast.Name) and value.id == "layers"
            ):
                names.add(node.attr)
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("layers"):
            names.update(alias.name for alias in node.names if alias.name[:1].isupper())
    return names


def _compiles(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compile"
        for node in ast.walk(tree)
    )


def inspect_file(path: str | Path, function: str, extra: tuple = ()) -> FileFacts:
    """The facts of `function` in the model file `path` (and of the helper files `extra`)."""
    path = Path(path)
    key = (sha256(path), function, tuple(sha256(p) for p in extra))
    if key in _FACTS:
        return _FACTS[key]
    tree = _parse(path)
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
    ]
    if not found:
        defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        raise ModelFileError(
            f"{path} defines no top-level function {function!r} (it defines: "
            f"{', '.join(defined) or 'none'})"
        )
    args = found[-1].args
    positional = [*args.posonlyargs, *args.args]
    defaults = len(args.defaults)
    required = [a.arg for a in positional[: len(positional) - defaults]]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    trees = [tree, *(_parse(Path(p)) for p in extra)]
    layers = frozenset().union(*map(_layer_names, trees))
    compiles = any(map(_compiles, trees))
    odd = sorted(layers - STACKABLE_LAYERS)
    unstackable = None
    if compiles:
        unstackable = (
            f"{path.name} compiles its own model (its loss and optimizer stand), and the fused "
            "engine trains the task's loss with the spec's optimizer"
        )
    elif odd:
        unstackable = (
            f"{path.name} builds {', '.join(odd)} layers, and the fused engine stacks Dense, "
            "Dropout and Flatten layers only"
        )
    facts = FileFacts(
        parameters=tuple(a.arg for a in [*positional, *args.kwonlyargs]),
        required=tuple(required),
        var_keyword=args.kwarg is not None,
        compiles=compiles,
        layers=layers,
        unstackable=unstackable,
    )
    _FACTS[key] = facts
    return facts


def identity(model: dict) -> dict:
    """The spec's model section for a user model: the files by their SHA-256, not their paths.

    Records each file's path in :data:`PATHS`. `model` is the config's (paths) or a spec's
    (already an identity: returned as it is).
    """
    if isinstance(model.get("file"), dict):
        return model
    file_sha = sha256(model["file"])
    PATHS[file_sha] = str(model["file"])
    files = []
    for extra in model.get("files") or []:
        files.append(sha256(extra))
        PATHS[files[-1]] = str(extra)
    return {
        "kind": "python",
        "file": {"sha256": file_sha},
        "function": model.get("function") or DEFAULT_FUNCTION,
        "hyperparameters": dict(model.get("hyperparameters") or {}),
        **({"files": [{"sha256": s} for s in files]} if files else {}),
    }


def register(paths) -> None:
    """Record where a training job's model files are (its inputs), by their SHA-256."""
    for path in paths:
        PATHS[sha256(path)] = str(path)


def file_paths(model: dict) -> list[str]:
    """The planned paths of a user model's file and helper files (the training job's inputs)."""
    shas = [model["file"]["sha256"], *(f["sha256"] for f in model.get("files", []))]
    return [PATHS[s] for s in shas]


def facts_of(model: dict) -> FileFacts:
    """The facts of a planned user model (its spec section), from its planned files."""
    main, *extra = file_paths(model)
    return inspect_file(main, model["function"], tuple(extra))


def check_hyperparameters(model: dict) -> tuple[str, str] | None:
    """(hyperparameter or "", what is wrong) if the function cannot take the hyperparameters."""
    facts = facts_of(model)
    given = model["hyperparameters"]
    for name in given:
        if name in INJECTED:
            return name, (
                f"a hyperparameter other than {', '.join(INJECTED)}: the job passes those "
                "itself, from the data"
            )
        if name not in facts.parameters and not facts.var_keyword:
            return name, (
                f"a parameter of {model['function']}() in {file_paths(model)[0]} (it takes: "
                f"{', '.join(facts.parameters) or 'none'})"
            )
    missing = [p for p in facts.required if p not in given and p not in INJECTED]
    if missing:
        return "", (
            f"a value in model.hyperparameters for each parameter of {model['function']}() "
            f"without a default (missing: {', '.join(missing)})"
        )
    return None


def load_function(model: dict, paths: list[str] = ()):
    """Import the model file whose bytes are the spec's (`register`ed, or planned in this
    process), and return its function. `paths`: the job's model files, for the message.

    The file's folder goes first on sys.path, so that it imports the helper files beside it.
    A file whose bytes changed since planning is refused (rerun Snakemake to plan it anew).
    """
    wanted = model["file"]["sha256"]
    if wanted not in PATHS:
        raise ModelFileError(
            f"None of the model files {', '.join(map(str, paths)) or '(none)'} has the SHA-256 "
            f"the plan recorded ({wanted[:12]}...): a file changed after planning. Run Snakemake "
            "again: it plans the new version as a new experiment."
        )
    path = Path(PATHS[wanted]).resolve()
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    name = f"hpstudy_user_model_{wanted[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    function = getattr(module, model["function"], None)
    if not callable(function):
        raise ModelFileError(f"{path} has no function {model['function']!r}")
    return function
