"""Seed 000's `get_model(lambda_l2, learning_rate=0.001)`: a compiled MLP with an L2 penalty.

The notebook's exact pattern: the function takes the penalty and the learning rate and returns
a compiled model, so its optimizer (Adam), loss and metrics stand and the config sets none.
A study over `model.hyperparameters.lambda_l2` compares penalties as the notebook does.
"""

import keras


def get_model(lambda_l2, learning_rate=0.001, *, input_shape, n_outputs):
    penalty = keras.regularizers.L2(lambda_l2) if lambda_l2 else None
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu", kernel_regularizer=penalty),
            keras.layers.Dense(100, activation="relu", kernel_regularizer=penalty),
            keras.layers.Dense(n_outputs, activation="softmax", kernel_regularizer=penalty),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
