"""Train the repeats of one experiment together (rule train_<R>_repeats). Devices first."""

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

from hpstudy import fused  # after devices.setup, which configures TensorFlow

seeds = list(snakemake.params.seeds)
outs = [
    {name: snakemake.output[name][k] for name in ("history", "timing", "metrics", "model")}
    for k in range(len(seeds))
]
fused.train_repeats(
    spec=spec,
    data_paths=list(snakemake.input.data),
    outs=outs,
    seeds=seeds,
    runs=[f"r{k}" for k in range(len(seeds))],
    experiment=snakemake.wildcards.exp,
    device=device,
    lr_suggestion=(list(snakemake.input.lr) or [None])[0],
)
