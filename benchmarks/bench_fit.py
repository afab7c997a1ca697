"""(c) Training loop: seconds per epoch in our training job against a bare `model.fit`, and levers.

(c) Seed 003's MNIST MLP (784-300-100-10, SGD lr 0.01), batch 32 and 256, on synthetic data of
    MNIST's shape (28x28 float inputs, 10 classes; 20,000 training and 5,000 validation rows).
    "ours" is `hpstudy.training.train_run` (our input pipeline, the epoch-end Recorder and backup);
    "bare" is the same model and compile given numpy arrays in one `model.fit(..., verbose=0)`.
    Both run in a fresh process with the same thread settings (`devices.setup`), side by side in
    each round. Seconds per epoch: the median epoch, epoch end to epoch end, without the first.
Levers: the default config's `main` experiment on digits (small epochs, where fixed per-epoch
    costs decide), each lever switched on its own against ours as shipped.

    python benchmarks/bench_fit.py [--rounds 3] [--epochs 4] [--backends tensorflow,jax]
    python benchmarks/bench_fit.py --levers [--rounds 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import PYTHON, REPO, fmt, load, ratio_stats, stats, table, write_section

MNIST_MLP = {
    "data": {"task": "classification"},
    "model": {
        "kind": "mlp",
        "hidden": [300, 100],
        "activation": "relu",
        "initializer": "glorot_uniform",
        "output_initializer": "glorot_uniform",
        "regularizer": {"l1": 0.0, "l2": 0.0, "layers": "hidden", "bias": False},
        "dropout": {"rate": 0.0, "layers": "all"},
    },
    "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "training": {
        "epochs": 4,
        "batch_size": 32,
        "shuffle": True,
        "seed": 42,
        "steps_per_execution": 1,
    },
}


def synthetic_mnist(path: Path) -> None:
    """Random 28x28 inputs and labels in MNIST's shapes and dtypes, saved like a prepared .npz."""
    import numpy as np

    from hpstudy import prepare

    rng = np.random.default_rng(0)
    rows = {"train": 20000, "val": 5000, "test": 1000}
    arrays = {}
    for part, n in rows.items():
        arrays[f"x_{part}"] = rng.normal(size=(n, 28, 28)).astype(np.float32)
        arrays[f"y_{part}"] = rng.integers(0, 10, n).astype(np.int64)
    info = {
        "data": {"task": "classification"},
        "rows": rows,
        "input_shape": [28, 28],
        "n_classes": 10,
    }
    prepare.save(arrays, path, info)


def digits_main(workdir: Path) -> tuple[dict, Path]:
    """The default config's `main` experiment spec, and digits prepared the workflow's way."""
    from hpstudy import datasets, prepare
    from hpstudy.plan import load_plan

    plan = load_plan([REPO / "config" / "config.yaml"])
    study = next(s for s in plan.studies.values() if s.baseline == "main")
    spec = plan.experiments[next(v.experiment for v in study.variants if v.is_reference)].spec
    canonical = datasets.convert("digits", None, workdir / "digits-canonical.npz")
    arrays = prepare.prepare(datasets.load_npz(canonical), spec["data"])
    path = workdir / "digits.npz"
    prepare.save(arrays, path, prepare.describe(arrays, spec["data"]))
    return spec, path


def child(settings: dict) -> dict:
    """One measurement, in this (fresh) process."""
    from hpstudy import devices

    devices.setup(threads=settings["threads"], backend=settings["backend"])
    import keras

    from hpstudy import models, prepare, training

    spec = json.loads(json.dumps(settings["spec"]))
    spec["training"].update(settings.get("training", {}))
    lever = settings.get("lever")
    if settings["mode"] == "ours":
        if lever == "no_backup":  # benchmark only: the epoch-end backup switched off
            training.Checkpoint.on_epoch_end = lambda self, epoch, logs=None: None
        if lever == "keras_pipeline":  # benchmark only: Keras' own numpy input path
            training.fit_data = lambda model, arrays, tr, seed, initial_epoch: {
                "x": arrays["x_train"],
                "y": arrays["y_train"],
                "batch_size": tr["batch_size"],
                "shuffle": tr["shuffle"],
                "validation_data": (arrays["x_val"], arrays["y_val"]),
            }
        with tempfile.TemporaryDirectory() as tmp:
            out = {k: f"{tmp}/{k}" for k in ("history", "timing", "metrics")}
            out["model"] = f"{tmp}/model.keras"
            metrics = training.train_run(spec, settings["data"], out, 42, "r0", "bench")
            seconds = [
                float(line.split(",")[1]) for line in Path(out["timing"]).read_text().split()[1:]
            ]  # noqa: E501
        startup = metrics["timing"]["startup_seconds"]
    else:
        arrays, info = prepare.load(settings["data"])
        task = spec["data"]["task"]
        keras.utils.set_random_seed(42)
        model = models.build_model(spec["model"], info["input_shape"], info["n_classes"], task)
        head = models.task_head(task, info["n_classes"])
        model.compile(
            optimizer=models.build_optimizer(spec["optimizer"]),
            loss=head["loss"],
            metrics=head["metrics"],
            steps_per_execution=spec["training"]["steps_per_execution"],
            jit_compile=True if lever == "jit_compile" else "auto",
        )
        ends = []

        class EpochClock(keras.callbacks.Callback):  # epoch end to epoch end, like our Recorder
            def on_train_begin(self, logs=None):
                ends.append(time.perf_counter())

            def on_epoch_end(self, epoch, logs=None):
                ends.append(time.perf_counter())

        tr = spec["training"]
        val = None if lever == "no_validation" else (arrays["x_val"], arrays["y_val"])
        model.fit(
            arrays["x_train"],
            arrays["y_train"],
            batch_size=tr["batch_size"],
            epochs=tr["epochs"],
            validation_data=val,
            shuffle=tr["shuffle"],
            verbose=2 if lever == "verbose2" else 0,
            callbacks=[EpochClock()],
        )
        seconds = [b - a for a, b in zip(ends, ends[1:])]
        startup = None
    return {
        "per_epoch": statistics.median(seconds[1:]),
        "first_epoch": seconds[0],
        "startup": startup,
    }


def measure(settings: dict) -> dict:
    proc = subprocess.run(
        [PYTHON, __file__, "--child", json.dumps(settings)], capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(f"child failed: {settings}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit_vs_bare(args, tmp: Path) -> None:
    data = tmp / "mnist-shaped.npz"
    synthetic_mnist(data)
    rows, raw = [], {}
    for backend in args.backends.split(","):
        for batch in (32, 256):
            spec = json.loads(json.dumps(MNIST_MLP))
            spec["training"].update(epochs=args.epochs, batch_size=batch)
            ours, bare = [], []
            for _ in range(args.rounds):
                common = {
                    "backend": backend,
                    "threads": args.threads,
                    "spec": spec,
                    "data": str(data),
                }
                ours.append(measure({**common, "mode": "ours"})["per_epoch"])
                bare.append(measure({**common, "mode": "bare"})["per_epoch"])
            ratio = ratio_stats(ours, bare)
            raw[f"{backend}-{batch}"] = {"ours": ours, "bare": bare}
            rows.append(
                [
                    backend,
                    batch,
                    fmt(stats(ours), "s", 3),
                    fmt(stats(bare), "s", 3),
                    fmt(ratio, "×"),
                    "yes"
                    if ratio["max"] <= 1.05
                    else ("median only" if ratio["median"] <= 1.05 else "no"),
                ]
            )
            print(rows[-1], flush=True)
    md = "\n\n".join(
        [
            "## (c) Training loop: our training job against a bare `model.fit`",
            "784-300-100-10 MLP (seed 003), SGD, synthetic data of MNIST's shape (20,000 training and "
            f"5,000 validation rows), {args.epochs} epochs, {args.threads} thread(s) per process as a "
            "training job gets; seconds per epoch = median epoch (epoch end to epoch end) without the "
            "first, which compiles. Ours includes the epoch-end history and backup.",
            table(
                ["backend", "batch", "ours s/epoch", "bare fit s/epoch", "ours / bare", "≤ 1.05×?"],
                rows,
            ),
        ]
    )
    write_section("fit", md, {"epochs": args.epochs, "rounds": args.rounds, "raw": raw})


LEVERS = [
    # (label, backend, mode, lever, training overrides, threads)
    ("ours as shipped (tf.data pipeline, history, backup)", "tensorflow", "ours", None, {}, 1),
    ("ours, backup switched off", "tensorflow", "ours", "no_backup", {}, 1),
    ("ours with Keras' numpy input path", "tensorflow", "ours", "keras_pipeline", {}, 1),
    (
        "ours, steps_per_execution 5 (one call per epoch)",
        "tensorflow",
        "ours",
        None,
        {"steps_per_execution": 5},
        1,
    ),
    ("ours, 2 threads", "tensorflow", "ours", None, {}, 2),
    ("bare fit (numpy arrays)", "tensorflow", "bare", None, {}, 1),
    ("bare fit, jit_compile=True", "tensorflow", "bare", "jit_compile", {}, 1),
    ("bare fit, steps_per_execution 5", "tensorflow", "bare", None, {"steps_per_execution": 5}, 1),
    ("bare fit without validation", "tensorflow", "bare", "no_validation", {}, 1),
    ("bare fit, verbose=2 (Keras' log line per epoch)", "tensorflow", "bare", "verbose2", {}, 1),
    ("ours on JAX", "jax", "ours", None, {}, 1),
    ("ours on JAX, backup switched off", "jax", "ours", "no_backup", {}, 1),
    ("bare fit on JAX", "jax", "bare", None, {}, 1),
    ("bare fit on JAX, verbose=2", "jax", "bare", "verbose2", {}, 1),
]


def levers(args, tmp: Path) -> None:
    spec, data = digits_main(tmp)
    spec["training"]["epochs"] = args.epochs
    results = {label: [] for label, *_ in LEVERS}
    firsts = {label: [] for label, *_ in LEVERS}
    for _ in range(args.rounds):
        for label, backend, mode, lever, training, threads in LEVERS:
            got = measure(
                {
                    "backend": backend,
                    "threads": threads,
                    "spec": spec,
                    "data": str(data),
                    "mode": mode,
                    "lever": lever,
                    "training": training,
                }
            )
            results[label].append(got["per_epoch"])
            firsts[label].append(got["first_epoch"])
    ref = results[LEVERS[0][0]]
    rows = [
        [
            label,
            fmt(stats(v), "s", 4),
            fmt(ratio_stats(v, ref), "×"),
            fmt(stats(firsts[label]), "s", 2),
        ]
        for label, v in results.items()
    ]
    md = "\n\n".join(
        [
            "## Levers, one at a time (digits, the default config's `main` experiment)",
            f"[32, 16, 64, 32, 16, 64] MLP, batch 256 (5 steps per epoch), {args.epochs} epochs; "
            "per-epoch time as in (c); ratio against ours as shipped, in the same round.",
            table(["variant", "s/epoch", "vs ours as shipped", "first epoch (compile)"], rows),
        ]
    )
    write_section(
        "levers",
        md,
        {"epochs": args.epochs, "rounds": args.rounds, "raw": results, "first": firsts},
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default="tensorflow,jax")
    ap.add_argument("--levers", action="store_true")
    args = ap.parse_args()
    print(f"load {load():.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hpstudy-bench-fit-") as tmp:
        if args.levers:
            args.epochs = args.epochs or 30
            levers(args, Path(tmp))
        else:
            args.epochs = args.epochs or 4
            fit_vs_bare(args, Path(tmp))


if __name__ == "__main__":
    main()
