"""Train repeats of one experiment together (rules train_<R>_repeats, train_r<a>_..). Devices first."""

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

from pathlib import Path

from hpstudy import fused  # after devices.setup, which configures TensorFlow

seeds = list(snakemake.params.seeds)
outs = [
    {name: snakemake.output[name][k] for name in ("history", "timing", "metrics", "model")}
    for k in range(len(seeds))
]
runs = [Path(out["history"]).parent.name for out in outs]  # r0, r1, ... or r3, r4 when added
fused.train_repeats(
    spec=spec,
    data_paths=list(snakemake.input.data),
    outs=outs,
    seeds=seeds,
    runs=runs,
    experiment=snakemake.wildcards.exp,
    device=device,
    lr_suggestion=(list(snakemake.input.lr) or [None])[0],
)
