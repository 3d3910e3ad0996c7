"""Deliberately wrong target models for the diagnosis tests."""

from mapspec.models.mobilefacenet import mobilefacenet


def mobilefacenet_pad2():
    m = mobilefacenet()
    m.conv_1.conv.padding = (2, 2)
    return m


def tiny_linear():
    """A model small enough for tests of the command line around verify."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def returns_a_list():
    return [1, 2]
