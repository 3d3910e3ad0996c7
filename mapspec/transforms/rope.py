"""rope_permute: the rotary-embedding row order of q/k projections, Meta (interleaved) <-> HF (halves).

Meta's Llama code rotates pairs of adjacent rows of each head (0,1), (2,3), ...; the
Hugging Face code rotates row i with row i + head_dim/2.  transformers'
``convert_llama_weights_to_hf.py`` reorders each head's rows with
``w.view(heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)`` (``to: hf``);
``to: meta`` is its inverse.  For k, ``heads`` is the number of key/value heads.  Works
on weights (rows x cols) and on biases (rows).
"""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext
from .registry import Arg, Meta, TransformError, static_check, transform


def _check(shape, heads: int) -> None:
    static(heads)
    if not shape:
        raise TransformError("rope_permute needs a tensor with at least one axis (rows = heads x head_dim)")
    if shape[0] % (2 * heads):
        raise TransformError(f"{shape[0]} rows are not {heads} heads of an even head size")


def rope_permute(x: np.ndarray, heads: int, to: str) -> np.ndarray:
    _check(x.shape, heads)
    half = x.shape[0] // heads // 2
    rest = x.shape[1:]
    inner = (half, 2) if to == "hf" else (2, half)
    return np.ascontiguousarray(x.reshape((heads,) + inner + rest).swapaxes(1, 2)).reshape(x.shape)


def inverse(ctx: InverseContext) -> Inverse:
    """The other direction: ``to: meta`` undoes ``to: hf`` and the reverse (each head's rows move, axes stay)."""
    back = {"hf": "meta", "meta": "hf"}[ctx.args["to"]]
    return Inverse([("rope_permute", {"heads": ctx.args["heads"], "to": back})], axis=lambda a: a if a != 0 else None)


@transform("rope_permute", kernel=rope_permute, inverse=inverse, args={
    "heads": Arg("int", required=True, doc="attention heads (key/value heads for k)"),
    "to": Arg("choice", required=True, choices=("hf", "meta"), doc="the layout produced"),
})
def infer(meta: Meta, heads: int, to: str) -> Meta:
    """Reorder each head's rows of a q/k projection: Meta's interleaved rotary pairs <-> HF's halves (`to` hf/meta)."""
    _check(meta.shape, heads)
    return meta


@static_check("rope_permute")
def static(heads: int, to: str = "hf") -> None:
    if heads < 1:
        raise TransformError(f"heads must be at least 1, not {heads}")
