"""hpstudy: reproducible hyperparameter studies of Keras models, as a Snakemake workflow.

One module per stage: config, plan, datasets, prepare, models, training, devices, analysis,
figures, report. Only `models` and `training` import Keras.
"""

__version__ = "0.1.0"

# Part of every experiment id. Bump it when a change to the training code should retrain
# finished runs; leave it alone for changes that do not alter results (see README).
TRAINING_VERSION = 1
