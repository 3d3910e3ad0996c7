"""Structural layers: Eltwise, Concat, Slice, Split, Flatten, Reshape, Crop, Dropout, Softmax, Silence.

Semantics from Caffe's layer sources: Eltwise needs equal shapes (no broadcasting), SUM
takes one coefficient per bottom or none, PROD takes none; Concat/Slice use ``axis`` or
the legacy ``concat_dim``/``slice_dim`` (not both); Slice without ``slice_point`` splits
evenly; Reshape's 0 copies an input dimension and one -1 is inferred; Flatten and Reshape
refuse in-place use; Dropout is the identity at TEST.
"""

from __future__ import annotations

import torch

from ..geometry import canonical_axis, concat_shape, count, eltwise_check, reshape_shape, slice_sizes
from .common import LayerError, need_blobs, need_bottoms

PROD, SUM, MAX = 0, 1, 2  # EltwiseParameter.EltwiseOp


def eltwise(layer, bottoms, blobs):
    """Element-wise SUM (with coefficients), PROD or MAX of two or more equal-shape bottoms."""
    need_bottoms(bottoms, 2, -1)
    need_blobs(blobs, 0, "Eltwise has no parameters")
    p = layer.eltwise_param
    eltwise_check(p, [tuple(t.shape) for t in bottoms])
    coeff = list(p.coeff)
    if p.operation == PROD:
        y = bottoms[0] * bottoms[1]
        for t in bottoms[2:]:
            y = y * t
        return [y]
    if p.operation == SUM:
        if not coeff:
            y = bottoms[0] + bottoms[1]
            for t in bottoms[2:]:
                y = y + t
            return [y]
        c = [torch.tensor(v, dtype=torch.float32) for v in coeff]
        y = c[0] * bottoms[0]
        for ci, t in zip(c[1:], bottoms[1:]):
            y = y + ci * t
        return [y]
    if p.operation == MAX:
        y = torch.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
        for t in bottoms[2:]:
            y = torch.where(t > y, t, y)
        return [y]
    raise LayerError(f"unknown Eltwise operation {p.operation}")


def concat(layer, bottoms, blobs):
    """Join the bottoms along ``axis`` (default 1, the channels)."""
    need_bottoms(bottoms, 1, -1)
    need_blobs(blobs, 0, "Concat has no parameters")
    a, _ = concat_shape(layer.concat_param, [tuple(t.shape) for t in bottoms])
    return [torch.cat(list(bottoms), dim=a) if len(bottoms) > 1 else bottoms[0]]


def slice_(layer, bottoms, blobs):
    """Cut bottom 0 along ``axis`` at ``slice_point``s (or into equal parts), one part per top."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "Slice has no parameters")
    x = bottoms[0]
    a, sizes = slice_sizes(layer, tuple(int(d) for d in x.shape))
    return list(torch.split(x, sizes, dim=a))


def split(layer, bottoms, blobs):
    """The same blob under every top name."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "Split has no parameters")
    return [bottoms[0]] * len(layer.top)


def _not_in_place(layer, what: str) -> None:
    if layer.top and layer.bottom and layer.top[0] == layer.bottom[0]:
        raise LayerError(f"{what} layer does not allow in-place computation")


def flatten(layer, bottoms, blobs):
    """Merge axes ``axis`` .. ``end_axis`` into one."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "Flatten has no parameters")
    _not_in_place(layer, "Flatten")
    x = bottoms[0]
    p = layer.flatten_param
    start = canonical_axis(p.axis, x.dim(), "flatten_param.axis")
    end = canonical_axis(p.end_axis, x.dim(), "flatten_param.end_axis")
    shape = tuple(x.shape[:start]) + (count(x.shape, start, end + 1),) + tuple(x.shape[end + 1:])
    return [x.reshape(shape)]


def reshape(layer, bottoms, blobs):
    """View the input with the shape from ``reshape_param`` (0 copies a dim, -1 is inferred)."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "Reshape has no parameters")
    _not_in_place(layer, "Reshape")
    x = bottoms[0]
    return [x.reshape(reshape_shape(tuple(int(d) for d in x.shape), layer.reshape_param))]


def crop(layer, bottoms, blobs):
    """Bottom 0 cut to bottom 1's shape on axes ``axis``.. at ``offset`` (one value or one per axis)."""
    need_bottoms(bottoms, 2)
    need_blobs(blobs, 0, "Crop has no parameters")
    x, ref = bottoms
    p = layer.crop_param
    start = canonical_axis(p.axis, x.dim(), "crop_param.axis")
    offsets = [int(v) for v in p.offset]
    if len(offsets) > 1 and start + len(offsets) != x.dim():
        raise LayerError("number of offset values specified must be equal to the number of dimensions "
                         "following axis")
    if ref.dim() != x.dim():
        raise LayerError(f"bottom 1 has {ref.dim()} axes, bottom 0 {x.dim()}")
    index = []
    for i in range(x.dim()):
        if i < start:
            index.append(slice(None))
            continue
        off = offsets[0] if len(offsets) == 1 else (offsets[i - start] if offsets else 0)
        if x.shape[i] - off < ref.shape[i]:
            raise LayerError(f"the crop for dimension {i} is out-of-bounds with size {ref.shape[i]} and offset {off}")
        index.append(slice(off, off + int(ref.shape[i])))
    return [x[tuple(index)]]


def dropout(layer, bottoms, blobs):
    """Identity at TEST (Caffe scales at TRAIN time)."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "Dropout has no parameters")
    return [bottoms[0]]


def softmax(layer, bottoms, blobs):
    """exp(x - max) / sum over ``axis``."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "Softmax has no parameters")
    x = bottoms[0]
    return [torch.softmax(x, dim=canonical_axis(layer.softmax_param.axis, x.dim(), "softmax_param.axis"))]


def silence(layer, bottoms, blobs):
    """Consumes its bottoms, produces nothing."""
    return []
