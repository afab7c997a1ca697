"""Seed 003's `build_model(n_hidden, n_neurons, learning_rate)` pattern, uncompiled: a grid over
n_hidden x n_neurons gets its main effects, interaction and ANOVA like any built-in key."""

import keras


def build_model(n_hidden=1, n_neurons=30, *, input_shape, n_outputs, task):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    for _ in range(n_hidden):
        x = keras.layers.Dense(n_neurons, activation="relu")(x)
    activation = "softmax" if task == "classification" else None
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation=activation)(x))
