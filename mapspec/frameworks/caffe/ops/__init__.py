"""The Caffe layer type -> torch kernel table used by :class:`mapspec.frameworks.caffe.executor.CaffeExecutor`.

Every kernel is a pure function ``kernel(layer, bottoms, blobs) -> list of tops``: ``layer``
is the layer's ``LayerParameter`` (from :mod:`mapspec.frameworks.caffe.schema`, Caffe's defaults
filled in), ``bottoms`` its input tensors in order, ``blobs`` its parameter tensors
(``layer[0]``, ``layer[1]``, ...).  Tensors are float32 torch CPU tensors.  Kernels raise
:class:`LayerError` for anything wrong with the layer; the executor adds the layer's name.
"""

from __future__ import annotations

from . import activation, conv, norm, pool, tensor
from .common import LayerError, Unsupported
from .dense_block import FACTOR_MODES, dense_block

KERNELS = {
    "Convolution": conv.convolution,
    "Deconvolution": conv.deconvolution,
    "InnerProduct": conv.inner_product,
    "Embed": conv.embed,
    "BatchNorm": norm.batch_norm,
    "Scale": norm.scale,
    "Bias": norm.bias,
    "LRN": norm.lrn,
    "Pooling": pool.pooling,
    "ReLU": activation.relu,
    "PReLU": activation.prelu,
    "Sigmoid": activation.sigmoid,
    "TanH": activation.tanh,
    "AbsVal": activation.absval,
    "BNLL": activation.bnll,
    "ELU": activation.elu,
    "Power": activation.power,
    "Exp": activation.exp,
    "Log": activation.log,
    "Threshold": activation.threshold,
    "Clip": activation.clip,
    "Eltwise": tensor.eltwise,
    "Concat": tensor.concat,
    "Slice": tensor.slice_,
    "Split": tensor.split,
    "Flatten": tensor.flatten,
    "Reshape": tensor.reshape,
    "Crop": tensor.crop,
    "Dropout": tensor.dropout,
    "Softmax": tensor.softmax,
    "Silence": tensor.silence,
    "DenseBlock": dense_block,
}

# Layer types whose tops are the net's inputs (fed by ``run``), not computed.
INPUT_TYPES = frozenset({"Input"})

__all__ = ["KERNELS", "INPUT_TYPES", "LayerError", "Unsupported", "FACTOR_MODES"]
