"""Train one run (rule train). Device and thread set-up happen before Keras is imported."""

import json

from hpstudy import devices
from hpstudy.io import redirect_output

redirect_output(snakemake.log[0])  # noqa: F821
spec = json.loads(snakemake.params.spec)  # noqa: F821
device = devices.setup(
    threads=snakemake.threads,  # noqa: F821
    backend=spec["keras_backend"],
    gpus=snakemake.resources.gpu,  # noqa: F821
)

from hpstudy import training  # noqa: E402  (after devices.setup, which configures TensorFlow)
from hpstudy.plan import parse_run  # noqa: E402

run = parse_run(snakemake.wildcards.run)  # noqa: F821  {"repeat": i} or {"fold": i, "folds": k}

training.train_run(
    spec=spec,
    data_path=snakemake.input.data,  # noqa: F821
    out=dict(snakemake.output.items()),  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    run=snakemake.wildcards.run,  # noqa: F821
    experiment=snakemake.wildcards.exp,  # noqa: F821
    device=device,
    fold=(run["fold"], run["folds"]) if "fold" in run else None,
    lr_suggestion=(list(snakemake.input.lr) or [None])[0],  # noqa: F821
    tensorboard=snakemake.params.tensorboard,  # noqa: F821
)
