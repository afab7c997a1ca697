"""Train one run (rule train). Device and thread set-up happen before Keras is imported."""

import json

from hpstudy import devices
from hpstudy.io import redirect_output, stop_on_sigterm
from hpstudy.usermodel import register

redirect_output(snakemake.log[0])
stop_on_sigterm()  # a cluster's time limit or scancel: stop at once, keep the last backup
spec = json.loads(snakemake.params.spec)
register(snakemake.input.code)  # a user model's files (kind python), by their SHA-256
device = devices.setup(
    threads=snakemake.threads,
    backend=spec["keras_backend"],
    gpus=snakemake.resources.gpu,
)

from hpstudy import training  # after devices.setup, which configures TensorFlow
from hpstudy.ids import parse_run

run = parse_run(snakemake.wildcards.run)

training.train_run(
    spec=spec,
    data_path=snakemake.input.data,
    out=dict(snakemake.output.items()),
    seed=snakemake.params.seed,
    run=snakemake.wildcards.run,
    experiment=snakemake.wildcards.exp,
    device=device,
    fold=(run["fold"], run["folds"]) if "fold" in run else None,
    lr_suggestion=(list(snakemake.input.lr) or [None])[0],
    tensorboard=snakemake.params.tensorboard,
)
