"""Fused experiments: experiments that differ only in values a tower holds on its own (learning
rate, SGD momentum, L1/L2 strengths and where they apply, Dropout rates, seeds) train as the
towers of one job, and each tower gives the numbers of its run trained alone to within 1e-5
relative (TensorFlow, CPU), as an experiment's fused repeats do (tests/test_fused.py)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import yaml
from helpers import TINY_CONFIG, plan_of, planned_jobs, prepared_digits, run_snakemake
from test_fused import alone, close_results, outs

from hpstudy import components, fused, groups, stacked, training
from hpstudy.ids import derive_seed


def experiments(variants: list[dict], epochs=10, optimizer=None, **model) -> list:
    """The plan's experiments of a baseline (hidden [24, 12], `model`) and of each variant
    (a dict of `set:` keys), in the variants' order, the baseline first."""
    cfg = copy.deepcopy(TINY_CONFIG)
    base = cfg["baselines"]["b"]
    base["training"]["epochs"] = epochs
    base["model"] = {"hidden": [24, 12], **model}
    base["optimizer"] = optimizer or {"name": "sgd", "learning_rate": 0.05, "momentum": 0.5}
    cfg["studies"] = {"s": {"kind": "ofat", "baseline": "b",
                            "variants": [{"label": f"v{i}", "set": v}
                                         for i, v in enumerate(variants)]}}  # fmt: skip
    plan = plan_of(cfg)
    study = plan.studies["s"]
    return [plan.experiments[v.experiment] for v in study.variants]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    exp = experiments([{"optimizer.learning_rate": 0.01}])[0]
    return prepared_digits(tmp_path_factory.mktemp("group-data"), exp.spec["data"])


def group(exps, data, root, repeats=2):
    """Train `repeats` runs of every experiment of `exps` as one group job; their folders."""
    members, specs, seeds, dirs = [], [], [], []
    for exp in exps:
        for k in range(repeats):
            members.append(f"{exp.id}/r{k}")
            specs.append(exp.spec)
            seeds.append(derive_seed(exp.spec["training"]["seed"], "repeat", k))
            dirs.append(root / exp.id / f"r{k}")
    fused.train_group(specs, [data] * len(specs), [outs(d) for d in dirs], seeds, members,
                      "g0", root / "backup")  # fmt: skip
    return list(zip(members, specs, seeds, dirs))


def check_alone(towers, data, tmp_path, rtol=1e-5):
    """Each tower against its run alone: 1e-5 relative, or 1e-6 absolute for a value near 0
    (`final_train_val_gap` is a difference of two losses of about 1: float32 noise in them is
    about 1e-7 absolute, which is large relative to a gap of 1e-4)."""
    for member, spec, seed, directory in towers:
        exp_id, run = member.split("/")
        exp = type("E", (), {"spec": spec, "id": exp_id})
        ref = alone(exp, seed, data, tmp_path / "alone" / exp_id / run, run)
        assert close_results(ref, directory, rtol, atol=1e-6), member


def test_learning_rate_momentum_and_seed_towers_equal_their_runs_alone(data, tmp_path):
    exps = experiments([
        {"optimizer.learning_rate": 0.01},
        {"optimizer.momentum": 0.0},
        {"optimizer.momentum": 0.9, "optimizer.learning_rate": 0.02},
        {"training.seed": 7},
    ])  # fmt: skip
    towers = group(exps, data, tmp_path / "g")
    check_alone(towers, data, tmp_path)
    metrics = json.loads((towers[2][3] / "metrics.json").read_text())
    assert metrics["fused"]["group"] == "g0" and len(metrics["fused"]["members"]) == 10
    assert metrics["fused"]["runs"] == ["r0", "r1"] and metrics["timing"]["fused_repeats"] == 10
    assert metrics["experiment"] == exps[1].id
    assert not (tmp_path / "g" / "backup").exists()


def test_penalty_and_dropout_towers_equal_their_runs_alone(data, tmp_path):
    exps = experiments(
        [
            {"model.regularizer": {"l1": 0.0, "l2": 0.01, "layers": "all", "bias": False}},
            {"model.regularizer": {"l1": 0.001, "l2": 0.02, "layers": "output", "bias": True}},
            {"model.dropout.rate": 0.4},
        ],
        dropout={"rate": 0.2},
    )
    check_alone(group(exps, data, tmp_path / "g"), data, tmp_path)


def test_activation_and_initializer_towers_equal_their_runs_alone(data, tmp_path):
    exps = experiments([
        {"model.activation": "tanh", "model.initializer": "glorot_uniform"},
        {"model.activation": "linear"},
    ])  # fmt: skip
    check_alone(group(exps, data, tmp_path / "g"), data, tmp_path)


OWN_RATE = sorted(
    name
    for name, entry in components.OPTIMIZERS.items()
    if "learning_rate" in entry.tower_args and name != "sgd"
)


@pytest.mark.parametrize("name", OWN_RATE)
def test_towers_with_their_own_learning_rates_equal_their_runs_alone(name, data, tmp_path):
    """Every optimizer the registry lets towers hold their own rate in (`tower_args`)."""
    exps = experiments([{"optimizer.learning_rate": 0.001}, {"optimizer.learning_rate": 0.03}],
                       epochs=6, optimizer={"name": name, "learning_rate": 0.005})  # fmt: skip
    check_alone(group(exps, data, tmp_path / "g", repeats=1), data, tmp_path)


def test_the_registry_lets_towers_hold_their_rate_in_the_usual_optimizers():
    assert OWN_RATE == ["adagrad", "adam", "adamax", "nadam", "rmsprop"]


def test_towers_of_different_architectures_are_refused(data):
    """Different widths cannot be stacked; the group then trains its runs one by one."""
    a, b = experiments([{"model.hidden": [24]}], epochs=1)
    inputs = [training.load_inputs(a.spec["data"], data, None)] * 2
    with pytest.raises(stacked.Unstackable, match="different"):
        fused.build_stacked([a.spec, b.spec], inputs, [1, 2])


# Planning: which runs train together, and a finished run keeps its job ----------------------


def study_config(**execution) -> dict:
    """The tiny digits baseline (sgd), three repeats, and an ofat study of learning rates,
    momenta, an L2 penalty, a Dropout rate, a wider layer and a range test's suggestion."""
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["repeats"] = 3
    cfg["execution"] = execution
    cfg["baselines"]["b"]["optimizer"]["momentum"] = 0.5
    cfg["studies"] = {
        "s": {"kind": "ofat", "baseline": "b", "factors": {
            "optimizer.learning_rate": [0.01, 0.1],
            "optimizer.momentum": [0.0],
            "model.regularizer.l2": [0.01],
            "model.activation": ["tanh"],
            "model.hidden": [[16]],  # another architecture: not with the others
        }},
        "d": {"kind": "ofat", "baseline": "b", "factors": {"model.dropout.rate": [0.2, 0.4]}},
    }  # fmt: skip
    return cfg


def exp_of(plan, study: str, label_part: str) -> str:
    return next(v.experiment for v in plan.studies[study].variants if label_part in v.label)


def test_experiments_that_differ_in_tower_values_form_one_group_and_the_others_do_not():
    plan = plan_of(study_config())
    jobs, made = plan.training_jobs(lambda exp, run: None)
    by_size = sorted(made, key=lambda g: -g.towers)
    # b, lr x2, momentum 0, l2, tanh (3 runs each); dropout 0.2 and 0.4
    assert [g.towers for g in by_size] == [18, 6]
    big = {m.split("/")[0] for m in by_size[0].members}
    assert exp_of(plan, "s", "hidden") not in big
    assert jobs == {exp_of(plan, "s", "hidden"): [("r0", "r1", "r2")]}  # its own repeats
    assert all(g.new and g.outputs == g.members for g in made)
    assert json.loads(by_size[0].params)["seeds"][:3] == [
        plan.find_run(by_size[0].members[0].split("/")[0], f"r{k}").seed for k in range(3)
    ]


def test_groups_hold_at_most_max_towers_whole_experiments():
    plan = plan_of(study_config(max_towers=7))
    _, made = plan.training_jobs(lambda exp, run: None)
    assert sorted(g.towers for g in made) == [6, 6, 6, 6]  # 6 x 3 runs: 2 + 2 + 2; 2 x 3
    for g in made:
        exps = [m.split("/")[0] for m in g.members]
        assert all(exps.count(e) == 3 for e in exps)  # an experiment is never split


def test_switched_off_every_experiment_trains_its_own_repeats():
    plan = plan_of(study_config(fuse_experiments=False))
    jobs, made = plan.training_jobs(lambda exp, run: None)
    assert made == [] and len(jobs) == len(plan.experiments) == 9


def finish(made, plan) -> tuple[dict, dict]:
    """Every run of `made` finished by its group: (run -> its members, name -> record)."""
    done = {m: tuple(g.members) for g in made for m in g.members}
    for exp, jobs in plan.training_jobs(lambda e, r: None)[0].items():
        for runs in jobs:
            done.update({f"{exp}/{r}": runs for r in runs})
    return done, {g.name: g.to_record() for g in made}


def test_a_changed_experiment_trains_alone_and_its_former_group_stays_as_it_was():
    cfg = study_config()
    plan = plan_of(cfg)
    _, made = plan.training_jobs(lambda exp, run: None)
    done, records = finish(made, plan)
    again = plan_of(cfg)
    jobs, kept = again.training_jobs(lambda e, r: done.get(f"{e}/{r}"), records.get)
    assert jobs == {} or all(  # nothing left to train: only the jobs that trained them
        all(done.get(f"{e}/{r}") == runs for r in runs) for e, js in jobs.items() for runs in js
    )
    assert sorted((g.name, g.params) for g in kept) == sorted((g.name, g.params) for g in made)
    assert not any(g.new for g in kept)
    # One value changes: momentum 0 becomes 0.9. Its new experiment trains, alone (its own
    # three repeats); the group that trained the old one keeps its params and inputs.
    cfg["studies"]["s"]["factors"]["optimizer.momentum"] = [0.9]
    changed = plan_of(cfg)
    old, new = exp_of(plan, "s", "momentum"), exp_of(changed, "s", "momentum")
    jobs, kept = changed.training_jobs(lambda e, r: done.get(f"{e}/{r}"), records.get)
    assert [g for g in kept if g.new] == []
    assert {g.params for g in kept} == {g.params for g in made}
    assert {g.data for g in kept} == {g.data for g in made}
    assert new not in {m.split("/")[0] for g in kept for m in g.members}
    assert any(m.startswith(old) for g in kept for m in g.outputs)  # its files, still its
    left = {e: js for e, js in jobs.items() if any(done.get(f"{e}/{r}") != rs
                                                     for rs in js for r in rs)}  # fmt: skip
    assert left == {new: [("r0", "r1", "r2")]}


def test_a_run_whose_group_record_is_gone_trains_again():
    plan = plan_of(study_config())
    _, made = plan.training_jobs(lambda exp, run: None)
    done, _ = finish(made, plan)
    _, again = plan.training_jobs(lambda e, r: done.get(f"{e}/{r}"), lambda name: None)
    assert sorted(g.towers for g in again) == sorted(g.towers for g in made)
    assert all(g.new for g in again)


def test_a_fuse_key_leaves_out_exactly_the_values_a_tower_holds():
    plan = plan_of(study_config())
    key = {e: groups.fuse_key(x.spec) for e, x in plan.experiments.items()}
    base = key[exp_of(plan, "s", "learning_rate=0.01")]
    assert key[exp_of(plan, "s", "momentum")] == key[exp_of(plan, "s", "l2")] == base
    assert key[exp_of(plan, "s", "activation")] == base
    assert key[exp_of(plan, "s", "hidden")] != base
    assert key[exp_of(plan, "d", "0.2")] == key[exp_of(plan, "d", "0.4")] != base
    spec = copy.deepcopy(plan.experiments[exp_of(plan, "s", "momentum")].spec)
    spec["optimizer"]["learning_rate"] = "lr_range:b@0123456789"
    assert groups.fuse_key(spec) is None  # a suggested rate: only its own repeats
    spec["optimizer"]["learning_rate"] = 0.3
    spec["optimizer"]["schedule"] = {"kind": "exponential_decay"}
    assert groups.fuse_key(spec) != base  # a schedule reads one rate: the rate is in the key


def digests(root) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "results" / "runs").glob("*/r*/*"))
        if p.is_file()
    }


def dry_training(root, cfg: dict) -> dict:
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = planned_jobs(run_snakemake(root, "-n"))
    return {rule: n for rule, n in dry.items() if rule.startswith(("train", "lr_range"))}


@pytest.mark.e2e
def test_e2e_one_changed_value_trains_only_its_experiment_and_nothing_trains_twice(tmp_path):
    cfg = study_config()
    cfg["repeats"] = 2
    del cfg["studies"]["d"], cfg["studies"]["s"]["factors"]["model.hidden"]
    del cfg["studies"]["s"]["factors"]["model.activation"]
    plan = plan_of(cfg)
    (name,) = [g.name for g in plan.training_jobs(lambda e, r: None)[1]]
    assert dry_training(tmp_path, cfg) == {f"train_group_{name}": 1}  # 5 experiments, 1 job
    run_snakemake(tmp_path, "--cores", "2")
    first = digests(tmp_path)
    record = json.loads((tmp_path / "results" / "groups" / name / "job.json").read_text())
    assert len(record["members"]) == 10
    metrics = json.loads(next(tmp_path.glob("results/runs/*/r1/metrics.json")).read_text())
    assert metrics["fused"]["group"] == name and len(metrics["fused"]["members"]) == 10
    assert dry_training(tmp_path, cfg) == {}
    # One value changes: exactly its experiment's runs train, as that experiment's own job.
    cfg["studies"]["s"]["factors"]["optimizer.momentum"] = [0.9]
    assert dry_training(tmp_path, cfg) == {"train_2_repeats": 1}
    run_snakemake(tmp_path, "--cores", "2")
    after = digests(tmp_path)
    assert {k: after[k] for k in first} == first  # the former neighbours were not retrained
    assert len(after) == len(first) + 2 * 4
    # One more repeat for all: the five new r2 form one new group; nothing else trains.
    cfg["repeats"] = 3
    (rule,) = dry_training(tmp_path, cfg)
    assert rule.startswith("train_group_") and rule != f"train_group_{name}"
    run_snakemake(tmp_path, "--cores", "2")
    assert {k: v for k, v in digests(tmp_path).items() if k in after} == after
    assert dry_training(tmp_path, cfg) == {}
