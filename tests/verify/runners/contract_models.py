"""Tiny model factories for the runner contract (named on the command line as file.py:function)."""


def torch_conv():
    """Conv(3->4, 3x3) -> ReLU -> Flatten -> Linear(4*6*6 -> 5): input (N, 3, 8, 8), output (N, 5)."""
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5))


def keras_conv():
    """The same net in Keras (channels last): input (N, 8, 8, 3), output (N, 5)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                             keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(5, name="fc")])
