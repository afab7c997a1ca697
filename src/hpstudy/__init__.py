"""hpstudy: reproducible hyperparameter studies of Keras models, as a Snakemake workflow.

One module per stage, imports flowing one way (the README's code map says which does what):
io, ids, tasks < datasets, devices < config < plan < prepare < models < training, and
lr_range < analysis, cv, observations < figures < report. Only `models` and `training` import
Keras; `python -m hpstudy check CONFIG.yaml` checks a config as the workflow would.
"""

__version__ = "0.1.0"

# Part of every experiment id. Bump it when a change to the training code should retrain
# finished runs; leave it alone for changes that do not alter results (see README).
TRAINING_VERSION = 1
