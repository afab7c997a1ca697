"""A small CNN for images (N, H, W) or (N, H, W, C): MNIST, Fashion-MNIST, CIFAR-10, and flat
rows of a square image's pixels (digits' 64, a CSV of MNIST's 784 columns).

Two hyperparameters a study can vary (`model.hyperparameters.filters`, `.dropout`); the input
shape and the number of classes come from the data. It returns logits (no softmax): the job
sees it and compiles it with `from_logits=True`. Conv2D layers are not stacked by the fused
engine, so the plan trains its repeats as separate runs and the report says so.
"""

import math

import keras


def image_shape(input_shape) -> tuple:
    """(H, W, C) of the input: images as they are, a flat row of H x H pixels as one channel."""
    if len(input_shape) == 3:
        return tuple(input_shape)
    if len(input_shape) == 2:
        return (*input_shape, 1)
    side = math.isqrt(input_shape[0])
    if side * side != input_shape[0]:
        raise ValueError(f"expected images or square rows of pixels, got rows of {input_shape[0]}")
    return (side, side, 1)


def build_model(filters=16, dropout=0.25, dense=64, *, input_shape, n_outputs):
    shape = image_shape(input_shape)
    model = keras.Sequential(
        [
            keras.Input(shape=tuple(input_shape)),
            keras.layers.Reshape(shape),
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(2 * filters, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(dense, activation="relu"),
            keras.layers.Dense(n_outputs),
        ]
    )
    return model
