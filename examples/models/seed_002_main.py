"""Seed 002's `MLP_main` as a user model: the built-in `mlp` of config/seed_002.yaml's `main`.

Written the way a course notebook writes it, it builds, layer for layer and in the same order,
the model the built-in spec builds (Input, Flatten, Dense he_normal + relu for each hidden size,
Dense softmax glorot_uniform), so trained with the same seed it gives the same history.csv bytes
(tests/test_usermodel.py). Uncompiled: the config's optimizer compiles it.
"""

import keras


def build_model(hidden=(32, 16, 64, 32, 16, 64), activation="relu", *, input_shape, n_outputs):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    for units in hidden:
        x = keras.layers.Dense(units, activation=activation, kernel_initializer="he_normal")(x)
    outputs = keras.layers.Dense(n_outputs, activation="softmax")(x)
    return keras.Model(inputs, outputs)
