"""Structural layers: Eltwise, Concat, Slice, Split, Flatten, Reshape, Crop, Dropout, Softmax, Silence.

Semantics from Caffe's layer sources: Eltwise needs equal shapes (no broadcasting), SUM
takes one coefficient per bottom or none, PROD takes none; Concat/Slice use ``axis`` or
the legacy ``concat_dim``/``slice_dim`` (not both); Slice without ``slice_point`` splits
evenly; Reshape's 0 copies an input dimension and one -1 is inferred; Flatten and Reshape
refuse in-place use; Dropout is the identity at TEST.
"""

from __future__ import annotations

import torch

from .common import LayerError, canonical_axis, count, need_blobs, need_bottoms

PROD, SUM, MAX = 0, 1, 2  # EltwiseParameter.EltwiseOp


def eltwise(layer, bottoms, blobs):
    """Element-wise SUM (with coefficients), PROD or MAX of two or more equal-shape bottoms."""
    need_bottoms(bottoms, 2, -1)
    need_blobs(blobs, 0, "Eltwise has no parameters")
    for i, t in enumerate(bottoms[1:], 1):
        if tuple(t.shape) != tuple(bottoms[0].shape):
            raise LayerError(f"bottom 0 has shape {tuple(bottoms[0].shape)} but bottom {i} has {tuple(t.shape)} "
                             f"(Eltwise does not broadcast)")
    p = layer.eltwise_param
    coeff = list(p.coeff)
    if coeff and len(coeff) != len(bottoms):
        raise LayerError(f"Eltwise takes one coefficient per bottom blob ({len(coeff)} coefficients, "
                         f"{len(bottoms)} bottoms)")
    if p.operation == PROD:
        if coeff:
            raise LayerError("Eltwise only takes coefficients for summation")
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


def _axis(p, legacy: str, x: torch.Tensor, what: str) -> int:
    """``axis`` or the legacy unsigned ``concat_dim``/``slice_dim``, not both."""
    if p.HasField("axis") and p.HasField(legacy):
        raise LayerError(f"either axis or {legacy} should be specified; not both")
    if p.HasField(legacy):
        a = int(getattr(p, legacy))
        if a >= x.dim():
            raise LayerError(f"{legacy} {a} out of range for a {x.dim()}-D input")
        return a
    return canonical_axis(p.axis, x.dim(), f"{what}.axis")


def concat(layer, bottoms, blobs):
    """Join the bottoms along ``axis`` (default 1, the channels)."""
    need_bottoms(bottoms, 1, -1)
    need_blobs(blobs, 0, "Concat has no parameters")
    x = bottoms[0]
    a = _axis(layer.concat_param, "concat_dim", x, "concat_param")
    for i, t in enumerate(bottoms[1:], 1):
        if t.dim() != x.dim() or any(t.shape[j] != x.shape[j] for j in range(x.dim()) if j != a):
            raise LayerError(f"bottom {i} has shape {tuple(t.shape)}, bottom 0 {tuple(x.shape)}: all inputs must "
                             f"have the same shape except at the concat axis {a}")
    return [torch.cat(list(bottoms), dim=a) if len(bottoms) > 1 else x]


def slice_(layer, bottoms, blobs):
    """Cut bottom 0 along ``axis`` at ``slice_point``s (or into equal parts), one part per top."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "Slice has no parameters")
    x = bottoms[0]
    p = layer.slice_param
    a = _axis(p, "slice_dim", x, "slice_param")
    size, tops = int(x.shape[a]), len(layer.top)
    points = [int(v) for v in p.slice_point]
    if points:
        if len(points) != tops - 1:
            raise LayerError(f"{len(points)} slice_point(s) for {tops} tops (need {tops - 1})")
        if tops > size:
            raise LayerError(f"{tops} tops cannot slice an axis of size {size}")
        sizes, prev = [], 0
        for pt in points:
            if pt <= prev:
                raise LayerError(f"slice_point values must increase strictly (got {points})")
            sizes.append(pt - prev)
            prev = pt
        if prev > size:
            raise LayerError(f"slice point {prev} is beyond the axis size {size}")
        sizes.append(size - prev)
    else:
        if tops == 0 or size % tops:
            raise LayerError(f"number of top blobs ({tops}) should evenly divide input slice axis ({size})")
        sizes = [size // tops] * tops
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


def reshape_shape(in_shape: tuple, p) -> tuple:
    """Caffe's ``ReshapeLayer::Reshape`` output shape for ``ReshapeParameter`` ``p``."""
    ndim = len(in_shape)
    dims = [int(d) for d in p.shape.dim]
    start = p.axis if p.axis >= 0 else ndim + p.axis + 1
    if not 0 <= start <= ndim:
        raise LayerError(f"reshape_param.axis {p.axis} out of range for a {ndim}-D input")
    if p.num_axes < -1:
        raise LayerError("reshape_param.num_axes must be >= 0, or -1 for all")
    end = ndim if p.num_axes == -1 else start + p.num_axes
    if end > ndim:
        raise LayerError(f"end_axis = axis + num_axes = {end} is out of range for a {ndim}-D input")
    if dims.count(-1) > 1:
        raise LayerError("new shape contains multiple -1 dims; at most a single -1 may be specified")
    if any(d < -1 for d in dims):
        raise LayerError(f"negative dimension in reshape_param.shape {dims}")
    top = list(in_shape[:start]) + dims + list(in_shape[end:])
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= ndim:
                raise LayerError("new shape contains a 0, but there was no corresponding bottom axis to copy")
            top[start + i] = int(in_shape[start + i])
    total = count(in_shape)
    if -1 in dims:
        i = start + dims.index(-1)
        known = count([d for j, d in enumerate(top) if j != i])
        if known == 0 or total % known:
            raise LayerError(f"bottom count ({total}) must be divisible by the product of the specified "
                             f"dimensions ({known})")
        top[i] = total // known
    if count(top) != total:
        raise LayerError(f"output count {count(top)} (shape {tuple(top)}) must match input count {total}")
    return tuple(top)


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
