"""Train a search trial's run r0 up to a successive-halving rung (rule train_rung), keeping its
epoch backup for the next rung. Devices are set up before Keras is imported."""

import json

from hpstudy import devices
from hpstudy.io import redirect_output, stop_on_sigterm
from hpstudy.usermodel import register

redirect_output(snakemake.log[0])
stop_on_sigterm()  # a cluster's time limit or scancel: stop at once, keep the last backup
spec = json.loads(snakemake.params.spec)
register(snakemake.input.code)  # a user model's files (kind python), by their SHA-256
device = devices.setup(
    threads=snakemake.threads, backend=spec["keras_backend"], gpus=snakemake.resources.gpu
)

from hpstudy import training  # after devices.setup, which configures TensorFlow

record = training.train_rung(
    spec=spec,
    data_path=snakemake.input.data,
    out=snakemake.output[0],
    seed=snakemake.params.seed,
    experiment=snakemake.wildcards.exp,
    epochs=int(snakemake.wildcards.epochs),
    device=device,
    lr_suggestion=(list(snakemake.input.lr) or [None])[0],
)
print(json.dumps({k: v for k, v in record.items() if k != "rows"}, indent=2))
