"""The notebook way, as a baseline: every run of a config trained in one Python loop of model.fit.

Same work as the workflow's training jobs: the same runs (the plan's experiments and seeds), the
same prepared data (the workflow's `results/data/*.npz`), the same models and optimizers
(`hpstudy.models`), the same epochs, batch size, shuffle and validation data. Like the seeds, it
keeps each history, evaluates on the test split and saves the model; it does not checkpoint.
It runs in one process with the backend's default thread pools, as a notebook would.

    python benchmarks/notebook_loop.py --config config/config.yaml --workdir <dir with results/data>
        [--backend tensorflow|jax] [--out <dir>]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> dict:
    started = time.time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the workflow's config file")
    ap.add_argument("--workdir", required=True, help="where the workflow wrote results/data")
    ap.add_argument(
        "--backend",
        choices=["tensorflow", "jax"],
        default=None,
        help="Keras backend (default: the config's keras_backend)",
    )
    ap.add_argument("--out", default=None, help="where to save histories and models")
    args = ap.parse_args(argv)

    from hpstudy.plan import load_plan  # no Keras here

    plan = load_plan([args.config])
    backend = args.backend or plan.config["keras_backend"]
    os.environ["KERAS_BACKEND"] = backend  # before Keras is imported, as in a notebook's first cell
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if plan.lr_ranges or any(run.fold is not None for run in plan.runs.values()):
        sys.exit("notebook_loop.py trains repeat runs only; this config has CV folds or lr_range")

    import keras
    import numpy as np

    from hpstudy import models, prepare

    workdir = Path(args.workdir)
    out = Path(args.out or workdir / "notebook")
    data_cache: dict = {}
    fits = []
    for run in plan.runs.values():
        exp = plan.experiments[run.experiment]
        spec = exp.spec
        name, _ = plan.preps[exp.prep_id]
        path = workdir / "results" / "data" / f"{name}-{exp.prep_id}.npz"
        if path not in data_cache:
            data_cache[path] = prepare.load(path)
        arrays, info = data_cache[path]
        task, training = spec["data"]["task"], spec["training"]
        n_outputs = info["n_classes"] if task == "classification" else info["n_outputs"]

        keras.utils.set_random_seed(run.seed)
        model = models.build_model(spec["model"], info["input_shape"], n_outputs, task)
        models.compile_model(model, spec, n_outputs)
        t0 = time.perf_counter()
        history = model.fit(
            arrays["x_train"],
            arrays["y_train"],
            batch_size=training["batch_size"],
            epochs=training["epochs"],
            validation_data=(arrays["x_val"], arrays["y_val"]),
            shuffle=training["shuffle"],
            verbose=0,
        )
        fit_seconds = time.perf_counter() - t0
        test = model.evaluate(
            arrays["x_test"],
            arrays["y_test"],
            batch_size=max(256, training["batch_size"]),
            verbose=0,
            return_dict=True,
        )
        run_dir = out / run.experiment / run.name
        run_dir.mkdir(parents=True, exist_ok=True)
        cols = list(history.history)
        rows = np.column_stack([history.history[c] for c in cols])
        np.savetxt(run_dir / "history.csv", rows, delimiter=",", header=",".join(cols), comments="")
        model.save(run_dir / "model.keras")
        fits.append({"run": run.key, "fit_seconds": round(fit_seconds, 3), "test": test})
    result = {
        "backend": backend,
        "runs": len(fits),
        "wall_seconds": round(time.time() - started, 3),
        "fit_seconds": round(sum(f["fit_seconds"] for f in fits), 3),
        "fits": fits,
    }
    (out / "notebook.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


if __name__ == "__main__":
    r = main()
    print(
        f"{r['runs']} runs on {r['backend']}: {r['wall_seconds']} s ({r['fit_seconds']} s in fit)"
    )
