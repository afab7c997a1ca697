"""Train runs of several experiments together (rules train_group_<name>). Devices first."""

import json

from hpstudy import devices
from hpstudy.io import redirect_output, stop_on_sigterm
from hpstudy.usermodel import register

redirect_output(snakemake.log[0])
stop_on_sigterm()  # a cluster's time limit or scancel: stop at once, keep the last backup
job = json.loads(snakemake.params.job)
register(snakemake.input.code)  # a user model's files (kind python), by their SHA-256
device = devices.setup(
    threads=snakemake.threads,
    backend=job["specs"][0]["keras_backend"],
    gpus=snakemake.resources.gpu,
)

from hpstudy import fused, groups  # after devices.setup, which configures TensorFlow

# The group's record first: a run it finishes is kept by the plan through it.
groups.write_record(snakemake.params.name, json.loads(snakemake.params.record))
members = job["members"]
outs = [
    {name: snakemake.output[name][k] for name in ("history", "timing", "metrics", "model")}
    for k in range(len(members))
]
fused.train_group(
    specs=job["specs"],
    data_paths=list(snakemake.input.data),
    outs=outs,
    seeds=job["seeds"],
    members=members,
    group=snakemake.params.name,
    backup=f"{groups.group_dir(snakemake.params.name)}/backup",
    device=device,
)
