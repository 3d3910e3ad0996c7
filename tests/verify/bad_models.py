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


def linear_beside(weights, scale=1):
    """A factory that reads its sizes from the checkpoint it will load (given as ``weights``) and a spec var."""
    import torch

    state = torch.load(weights, weights_only=True)
    out, inp = state["weight"].shape
    assert scale == 3  # the spec's var, passed by name
    return torch.nn.Linear(inp, out)


def tiny_conv():
    """Conv -> ReLU -> Flatten -> Linear, small enough to export to ONNX in a test."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5))
