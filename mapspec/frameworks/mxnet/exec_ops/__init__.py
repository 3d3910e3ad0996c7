"""The MXNet op -> torch kernel table used by :class:`mapspec.frameworks.mxnet.executor.MXNetExecutor`."""

from __future__ import annotations

import torch

from . import nn, tensor
from .nn import Unsupported

KERNELS = {
    "Convolution": nn.convolution,
    "Deconvolution": nn.deconvolution,
    "FullyConnected": nn.fully_connected,
    "BatchNorm": nn.batch_norm,
    "LeakyReLU": nn.leaky_relu,
    "Activation": nn.activation,
    "Pooling": nn.pooling,
    "L2Normalization": nn.l2_normalization,
    "Embedding": nn.embedding,
    "Flatten": tensor.flatten,
    "Dropout": tensor.identity,
    "Concat": tensor.concat,
    "Reshape": tensor.reshape,
    "SoftmaxOutput": tensor.softmax_output,
    "softmax": tensor.softmax,
    "SoftmaxActivation": tensor.softmax_activation,
    "clip": tensor.clip,
    "add_n": tensor.add_n,
    "ElementWiseSum": tensor.add_n,
    "relu": tensor.unary(torch.relu),
    "sigmoid": tensor.unary(torch.sigmoid),
    "tanh": tensor.unary(torch.tanh),
}
for _op in ("identity", "_copy", "BlockGrad", "stop_gradient"):
    KERNELS[_op] = tensor.identity
for _kind, _ops in {
    "add": ("elemwise_add", "_Plus", "_plus", "_add", "broadcast_add", "broadcast_plus"),
    "sub": ("elemwise_sub", "_Minus", "_minus", "_sub", "broadcast_sub", "broadcast_minus"),
    "mul": ("elemwise_mul", "_Mul", "_mul", "broadcast_mul"),
    "div": ("elemwise_div", "_Div", "_div", "broadcast_div"),
    "maximum": ("_Maximum", "_maximum", "broadcast_maximum"),
    "minimum": ("_Minimum", "_minimum", "broadcast_minimum"),
}.items():
    for _op in _ops:
        KERNELS[_op] = tensor.binary(_kind)
for _kind, _ops in {
    "plus": ("_plus_scalar", "_PlusScalar"), "minus": ("_minus_scalar", "_MinusScalar"),
    "rminus": ("_rminus_scalar", "_RMinusScalar"), "mul": ("_mul_scalar", "_MulScalar"),
    "div": ("_div_scalar", "_DivScalar"), "rdiv": ("_rdiv_scalar", "_RDivScalar"),
    "maximum": ("_maximum_scalar", "_MaximumScalar"), "minimum": ("_minimum_scalar", "_MinimumScalar"),
}.items():
    for _op in _ops:
        KERNELS[_op] = tensor.scalar(_kind)

__all__ = ["KERNELS", "Unsupported"]
