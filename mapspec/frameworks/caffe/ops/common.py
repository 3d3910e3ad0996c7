"""Shared helpers of the Caffe layer kernels: the error types, blob-shape and size checks.

Kernels raise :class:`LayerError` for anything a net or its weights can get wrong (a
parameter combination Caffe refuses, a blob of the wrong shape, an unsupported option);
:class:`mapspec.frameworks.caffe.executor.CaffeExecutor` turns it into a :class:`MapspecError`
that names the layer and its type.  Caffe's arithmetic (axes, geometry, output sizes) is in
:mod:`mapspec.frameworks.caffe.geometry`, whose :class:`ShapeError` is this package's ``LayerError``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ....errors import Unsupported  # noqa: F401 - a Caffe feature the executor does not implement
from ..geometry import ShapeError, count

# Something a layer's parameters, inputs or blobs get wrong (becomes a MapspecError): the graphs'
# ShapeError itself, so that a check of mapspec.frameworks.caffe fails a kernel the same way.
LayerError = ShapeError


class BlobError(LayerError):
    """A parameter blob that does not fit the layer; ``index`` is its k in ``layer[k]``."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


INT_MAX = 2**31 - 1  # Caffe's Blob::Reshape refuses blobs with more elements ("blob size exceeds INT_MAX")


def check_count(shape: Sequence[int], what: str) -> None:
    """Refuse, before allocating, a tensor Caffe itself could not hold (hostile or mistaken parameters)."""
    n = count(shape)
    if n > INT_MAX:
        raise LayerError(f"{what} of shape {tuple(int(d) for d in shape)} would have {n} elements, more than "
                         f"Caffe's limit of {INT_MAX} per blob (check the layer's pad, stride and kernel)")


def fit_blob(blob: torch.Tensor, expected: Sequence[int], what: str) -> torch.Tensor:
    """``blob`` viewed with shape ``expected``, under Caffe's rule for loading weights.

    Caffe (``Blob::ShapeEquals``) accepts a stored blob whose shape equals the layer's, or a
    legacy 4-D blob (num, channels, height, width) equal to the layer's shape left-padded with
    ones (e.g. an InnerProduct weight stored as 1x1xNxK).  Anything else makes Caffe refuse
    the file, so it is an error here too.
    """
    expected = tuple(int(d) for d in expected)
    have = tuple(blob.shape)
    if have == expected:
        return blob
    if len(have) == 4 and len(expected) <= 4 and have == (1,) * (4 - len(expected)) + expected:
        return blob.reshape(expected)
    raise BlobError(f"{what} has shape {have} but this layer needs {expected} (Caffe would refuse to load it)",
                    _index(what))


def _index(what: str) -> int:
    """The blob index from a description "blob K (...)"; -1 if there is none."""
    head = what.split(" ", 2)
    return int(head[1]) if len(head) > 1 and head[0] == "blob" and head[1].isdigit() else -1


def need_blobs(blobs: Sequence, n: int, what: str) -> None:
    """Exactly ``n`` parameter blobs (Caffe: "Incorrect number of weight blobs")."""
    if len(blobs) != n:
        raise LayerError(f"has {len(blobs)} parameter blob(s) but needs {n} ({what})")


def need_bottoms(bottoms: Sequence, low: int, high: int | None = None) -> None:
    """Between ``low`` and ``high`` (default: exactly ``low``) input blobs."""
    high = low if high is None else high
    n = len(bottoms)
    if n < low or (high >= 0 and n > high):
        want = str(low) if low == high else (f"at least {low}" if high < 0 else f"{low} to {high}")
        raise LayerError(f"has {n} bottom blob(s) but takes {want}")


def broadcast_view(param: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """``param`` (shape = some axes of the input starting at ``axis``) reshaped to broadcast."""
    return param.reshape((1,) * axis + tuple(param.shape) + (1,) * (ndim - axis - param.dim()))
