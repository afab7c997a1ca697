"""Seeds added, not retrained: raising `repeats` trains only the new repeats, fused or not, and
lowering it trains nothing (Plan.fused_jobs, plan.trained_with, the fused rules of train.smk).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from helpers import plan_of, planned_jobs, run_snakemake

from hpstudy.ids import fused_label, fused_rule_name
from hpstudy.plan import RUN_FILES, trained_with

TRAINING = {"train", "lr_range"}


def is_training(rule: str) -> bool:
    return rule in TRAINING or rule.startswith("train_")


def finished(run_dir, metrics: dict) -> None:
    run_dir.mkdir(parents=True)
    for name in RUN_FILES:
        (run_dir / name).write_text("x")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_labels_and_rule_names():
    assert fused_label(["r0", "r1", "r2"]) == "3-repeats"
    assert fused_rule_name(("r0", "r1")) == "train_2_repeats"  # the names of before
    assert fused_label(("r2", "r3")) == "r2-r3"
    assert fused_rule_name(("r2", "r3")) == "train_r2_r3"
    assert fused_label(("r1", "r2")) == "r1-r2"  # not from r0: not "2-repeats"


def test_trained_with_reads_the_finished_runs(tmp_path):
    finished(tmp_path / "a" / "r1", {"fused": {"stacked": True, "runs": ["r0", "r1"]}})
    assert trained_with(tmp_path / "a" / "r1") == ("r0", "r1")
    finished(tmp_path / "b" / "r3", {"fused": {"stacked": False, "why": "x", "runs": ["r3", "r4"]}})
    assert trained_with(tmp_path / "b" / "r3") == ("r3", "r4")
    # Written before jobs recorded their runs: a fused job's timing says how many towers.
    finished(tmp_path / "c" / "r2", {"timing": {"fused_repeats": 3}})
    assert trained_with(tmp_path / "c" / "r2") == ("r0", "r1", "r2")
    finished(tmp_path / "d" / "r4", {"timing": {"seconds": 1.0}})
    assert trained_with(tmp_path / "d" / "r4") == ("r4",)  # trained alone
    (tmp_path / "d" / "r4" / "model.keras").unlink()
    assert trained_with(tmp_path / "d" / "r4") is None  # not finished
    (tmp_path / "e").mkdir()
    assert trained_with(tmp_path / "e" / "r0") is None
    finished(tmp_path / "f" / "r0", {})
    (tmp_path / "f" / "r0" / "metrics.json").write_text("{trunc")
    assert trained_with(tmp_path / "f" / "r0") is None


@pytest.fixture
def plan4(tiny_config):
    """Each experiment's own repeats (fused experiments: tests/test_groups.py)."""
    return plan_of(dict(tiny_config, repeats=4, execution={"fuse_experiments": False}))


def jobs_of(plan, record: dict) -> dict:
    """Plan.fused_jobs when the finished runs are `record`: run name -> its job's runs."""
    return plan.fused_jobs(lambda exp, run: record.get(run))


def test_nothing_finished_is_one_job_of_all_repeats(plan4):
    jobs = jobs_of(plan4, {})
    assert set(jobs) == set(plan4.experiments)
    assert all(v == [("r0", "r1", "r2", "r3")] for v in jobs.values())


def test_finished_runs_keep_their_jobs_and_the_rest_forms_one(plan4):
    first = ("r0", "r1")
    jobs = jobs_of(plan4, {"r0": first, "r1": first})
    assert all(v == [first, ("r2", "r3")] for v in jobs.values())
    # Trained alone (fusing was off, or one repeat was added): they stay `train` jobs.
    jobs = jobs_of(plan4, {"r0": ("r0",), "r1": ("r1",)})
    assert all(v == [("r2", "r3")] for v in jobs.values())
    # One left is a `train` job; nothing left, no new job.
    three = ("r0", "r1", "r2")
    assert all(v == [three] for v in jobs_of(plan4, dict.fromkeys(three, three)).values())
    four = ("r0", "r1", "r2", "r3")
    assert all(v == [four] for v in jobs_of(plan4, dict.fromkeys(four, four)).values())


def test_lowering_repeats_keeps_the_larger_job(plan4, tiny_config):
    """3 -> 2: r0 and r1 still come from the job of r0..r2 (its outputs, params, inputs)."""
    plan2 = plan_of(dict(tiny_config, repeats=2, execution={"fuse_experiments": False}))
    three = ("r0", "r1", "r2")
    jobs = jobs_of(plan2, dict.fromkeys(three, three))
    assert all(v == [three] for v in jobs.values())


def test_lowering_to_one_repeat_keeps_the_fused_job_too(tiny_config):
    one = plan_of(dict(tiny_config, repeats=1, execution={"fuse_experiments": False}))
    two = ("r0", "r1")
    assert all(v == [two] for v in jobs_of(one, dict.fromkeys(two, two)).values())
    assert jobs_of(one, {}) == {}  # nothing finished: one repeat is a `train` job


def test_a_job_with_a_run_missing_is_trained_again_whole(plan4):
    """r1 deleted from the job of r0, r1: the job that writes r1 writes r0 too."""
    jobs = jobs_of(plan4, {"r0": ("r0", "r1")})
    assert all(v == [("r0", "r1", "r2", "r3")] for v in jobs.values())


def test_kept_jobs_plan_the_own_splits_of_repeats_beyond_the_config(tiny_config):
    cfg = dict(tiny_config, repeats=2, repeats_vary=["init_and_order", "split"])
    plan = plan_of(cfg)
    before = set(plan.preps)
    three = ("r0", "r1", "r2")
    plan.fused_jobs(lambda exp, run: three if run in three else None)
    assert len(set(plan.preps) - before) == 1  # r2's own split (the experiments share the data)
    assert set(plan.preps) == set(plan_of(dict(cfg, repeats=3)).preps)


def digests(root) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "results" / "runs").glob("*/r*/*"))
        if p.is_file()
    }


def set_repeats(root, cfg: dict, repeats: int) -> dict:
    (root / "config.yaml").write_text(yaml.safe_dump(dict(cfg, repeats=repeats)))
    dry = planned_jobs(run_snakemake(root, "-n"))
    return {rule: n for rule, n in dry.items() if is_training(rule)}


@pytest.mark.e2e
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_e2e_raising_repeats_trains_only_the_new_ones_and_lowering_nothing(
    tmp_path, tiny_config, fuse
):
    # Each experiment's own repeats (fused experiments: tests/test_groups.py does the same).
    cfg = dict(tiny_config, execution={"fuse_repeats": fuse, "fuse_experiments": False})
    n = len(plan_of(cfg).experiments)
    assert set_repeats(tmp_path, cfg, 2) == ({"train_2_repeats": n} if fuse else {"train": 2 * n})
    run_snakemake(tmp_path, "--cores", "2")
    first = digests(tmp_path)
    assert set_repeats(tmp_path, cfg, 4) == ({"train_r2_r3": n} if fuse else {"train": 2 * n})
    run_snakemake(tmp_path, "--cores", "2")
    after = digests(tmp_path)
    assert {k: after[k] for k in first} == first  # r0 and r1 were not trained again
    assert len(after) == 2 * len(first)
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("results/runs/*/r3/metrics.json")]
    assert len(runs) == n
    if fuse:
        assert all(m["fused"]["runs"] == ["r2", "r3"] for m in runs)
    # Lower: nothing trains, the studies read r0..r2. Back up: still nothing. One more: one job.
    assert set_repeats(tmp_path, cfg, 3) == {}
    run_snakemake(tmp_path, "--cores", "2")
    table = (tmp_path / "results" / "studies" / "lr" / "runs.csv").read_text()
    assert table.count("r3") == 0 and table.count(",r2,") == n
    assert set_repeats(tmp_path, cfg, 4) == {}
    assert set_repeats(tmp_path, cfg, 1) == {}
    assert set_repeats(tmp_path, cfg, 5) == {"train": n}
    assert digests(tmp_path) == after  # the dry runs changed nothing
