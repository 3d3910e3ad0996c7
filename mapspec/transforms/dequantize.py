"""dequantize: ggml block-quantized rows (raw bytes from a GGUF file) -> float32 values.

The input is what the GGUF reader hands out for a quantized tensor: ``uint8`` of shape
``(*rows, bytes_per_row)``; the output is float32 of shape ``(*rows, values_per_row)``.
The block layouts and kernels live in :mod:`mapspec.frameworks.gguf.quant` (checked against gguf-py's
``gguf.quants.dequantize`` in the tests); the sizes in :mod:`mapspec.frameworks.gguf.ggml`.
"""

from __future__ import annotations

import numpy as np

from ..frameworks.gguf import quant
from ..frameworks.gguf.ggml import by_name
from .registry import Arg, Meta, TransformError, transform

# type -> (values per block, bytes per block), for the types mapspec can dequantize
BLOCKS = {name: (by_name(name).block, by_name(name).nbytes) for name in quant.DEQUANTIZE}


def dequantize(x: np.ndarray, type: str) -> np.ndarray:  # noqa: A002 - the spec's argument name
    try:
        return quant.dequantize(x, type)
    except quant.QuantError as e:
        raise TransformError(str(e)) from None


@transform("dequantize", kernel=dequantize, short="type",
           args={"type": Arg("choice", required=True, choices=tuple(BLOCKS),
                             doc="the ggml block type (the GGUF reader's meta ggml_type)")})
def infer(meta: Meta, type: str) -> Meta:  # noqa: A002
    """Raw ggml blocks (uint8 rows from a GGUF file) -> float32 values of the logical shape."""
    per, nbytes = BLOCKS[type]
    if meta.dtype != "uint8" or not meta.shape or meta.shape[-1] % nbytes:
        raise TransformError(f"{type} needs uint8 rows of whole {nbytes}-byte blocks (a quantized GGUF tensor "
                             f"as read)")
    return Meta(tuple(meta.shape[:-1]) + (meta.shape[-1] // nbytes * per,), "float32")
