"""Fused experiments: which runs of different experiments train as the towers of one job.

Experiments that share the model's architecture, the data, the batch size, the epochs and the
optimizer, and differ only in values a tower can hold on its own, train together
(`fused.train_group`), each tower writing its own run's outputs. `fuse_key` says what must be
equal: the spec with those values taken out. The values a tower holds on its own:

- `training.seed` (each run's seed is its own anyway);
- `optimizer.learning_rate`, a number, with no schedule, no weight decay and no
  ReduceLROnPlateau (which all read one rate for every weight), for the optimizers whose
  registry entry says so (`components.Optimizer.tower_args`), and SGD's `momentum`;
- the built-in models' `activation` and initializers (each tower is built by its own spec and
  applies its own activation to its slice), `regularizer` (its L1/L2 strengths, and which
  layers it covers) and nonzero `dropout.rate` (where the Dropout layers are, and whether there are any, is the
  architecture, and stays in the key).

**Groups form from what needs training only**, so the promise that only changed experiments
recompute stays exact. A finished run keeps the job that trained it: its metrics.json names
its group's members, and the group's record (`results/groups/<group>/job.json`, written by the
job before it trains) holds that job's params and inputs, from which the plan rebuilds the same
rule, with the same params and inputs, declaring the finished runs only. So Snakemake sees
nothing changed for them, even when a neighbour's experiment changed and left the group (its
spec is in the record, not in today's config). The runs left to train are grouped afresh:
those of one `fuse_key` are packed, whole experiments at a time in the order of their ids, into
groups of at most `execution.max_towers` towers. A group of one experiment is that
experiment's fused repeats (`train_<R>_repeats`), a single run a `train` job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import components
from .ids import canonical_json, short_hash
from .io import atomic_write_text

#: Where a group's record, log, benchmark and backup live.
GROUPS_DIR = "results/groups"

#: The model kinds whose `regularizer` and `dropout` the fused engine stacks tower by tower.
BUILT_IN_MODELS = ("mlp", "wide_deep")


def fuse_key(spec: dict) -> str | None:
    """What experiments must share to train as towers of one job (canonical JSON), or None
    for an experiment that trains only with its own repeats (a range test's suggested
    learning rate is read by the job, so the plan cannot tell its rate)."""
    lr = spec["optimizer"].get("learning_rate")
    if isinstance(lr, str):
        return None
    masked = json.loads(canonical_json(spec))
    masked["training"].pop("seed", None)
    opt = masked["optimizer"]
    entry = components.OPTIMIZERS.get(opt["name"])
    own_rate = (
        entry is not None
        and "learning_rate" in entry.tower_args
        and lr is not None
        and not opt.get("schedule")
        and opt.get("weight_decay") is None
        and spec["training"].get("reduce_lr_on_plateau") is None
    )
    if own_rate:
        for key in entry.tower_args:
            opt.pop(key, None)
    model = masked["model"]
    if model.get("kind", "mlp") in BUILT_IN_MODELS:
        for key in ("activation", "initializer", "output_initializer", "regularizer"):
            model.pop(key, None)
        drop = model.get("dropout")
        if isinstance(drop, dict):  # rate 0 builds no Dropout layer: another architecture
            model["dropout"] = {"layers": drop.get("layers")} if drop.get("rate") else None
    return canonical_json(masked)


def group_name(members) -> str:
    """A group's name: `g` and a hash of its members ("<experiment>/<run>", in order)."""
    return "g" + short_hash(list(members), 9)


def group_dir(name: str) -> str:
    return f"{GROUPS_DIR}/{name}"


@dataclass(frozen=True)
class GroupJob:
    """One job training runs of several experiments; `outputs`: the members whose run files
    the rule declares (all for a new group; the finished ones for a kept group)."""

    name: str
    members: tuple
    params: str  # canonical JSON: {"members", "specs", "seeds"}
    data: tuple  # each member's prepared data
    code: tuple  # the user model files the specs name
    preps: dict  # prep id -> [dataset, data spec], for the prepared data's rule
    outputs: tuple
    new: bool
    towers: int

    @property
    def rule(self) -> str:
        return f"train_group_{self.name}"

    @property
    def record(self) -> str:
        return f"{group_dir(self.name)}/job.json"

    def to_record(self) -> dict:
        """What `results/groups/<name>/job.json` holds: enough to rebuild the same rule."""
        return {"members": list(self.members), "params": self.params, "data": list(self.data),
                "code": list(self.code), "preps": self.preps}  # fmt: skip


def kept_group(record: dict, finished: list) -> GroupJob:
    """The job a finished group was, from its record, declaring the `finished` members."""
    return GroupJob(
        name=group_name(record["members"]),
        members=tuple(record["members"]),
        params=record["params"],
        data=tuple(record["data"]),
        code=tuple(record["code"]),
        preps={k: list(v) for k, v in record["preps"].items()},
        outputs=tuple(m for m in record["members"] if m in finished),
        new=False,
        towers=len(record["members"]),
    )


def read_record(name: str, root: str | Path = ".") -> dict | None:
    """A group's job.json, or None when it is missing or unreadable."""
    try:
        record = json.loads((Path(root) / group_dir(name) / "job.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    keys = {"members", "params", "data", "code", "preps"}
    return record if isinstance(record, dict) and keys <= set(record) else None


def write_record(name: str, record: dict, root: str | Path = ".") -> None:
    """Write a group's job.json (atomically), before it trains."""
    path = Path(root) / group_dir(name) / "job.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def pack(left: dict, key_of: Callable[[str], str | None], max_towers: int) -> list[list[str]]:
    """The new groups: lists of experiment ids, two or more to a group, from `left` (experiment
    -> its runs to train) grouped by `key_of` and packed whole, in the order of their ids, into
    groups of at most `max_towers` runs. An experiment in no group keeps its own jobs."""
    buckets: dict = {}
    for exp in sorted(left):
        key = key_of(exp)
        if key is not None and left[exp]:
            buckets.setdefault(key, []).append(exp)
    groups = []
    for exps in buckets.values():
        current, size = [], 0
        for exp in exps:
            if current and size + len(left[exp]) > max_towers:
                groups.append(current)
                current, size = [], 0
            current.append(exp)
            size += len(left[exp])
        groups.append(current)
    return [g for g in groups if len(g) > 1]
