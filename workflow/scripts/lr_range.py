"""Run one learning-rate range test (rule lr_range). Devices are set up before Keras is imported."""

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

result = training.train_range_test(
    spec=spec,
    data_path=snakemake.input.data,
    out=dict(snakemake.output.items()),
    experiment=snakemake.wildcards.lrr,
    device=device,
)
print(json.dumps(result, indent=2))
