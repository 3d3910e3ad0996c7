"""``--outtype`` for outputs that hold float tensors (safetensors, torch, Hugging Face folders): every float
tensor is cast to one dtype, the norms a GGUF keeps in F32 included, so that a bf16 model comes back bf16.

Without ``--outtype`` each tensor keeps the dtype the source holds (a GGUF's F32 norms stay float32).
``auto`` is the source's own dtype: that of its float tensors of 2 or more dimensions (the weight
matrices); a source whose matrices disagree (bf16 and f16) is refused, never guessed.  The GGUF
types (q8_0, ...) are not float dtypes: refused here, named for what they are.
"""

from __future__ import annotations

from typing import Iterable

from .. import dtypes
from ..errors import MapspecError

FLOAT_TYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def auto(source_infos: Iterable) -> str:
    """The float dtype of the source's matrices (2 or more dimensions)."""
    seen: dict = {}
    for info in source_infos:
        if len(info.shape) >= 2 and info.dtype:
            d = dtypes.canonical(info.dtype)
            if d in dtypes.DTYPES and dtypes.DTYPES[d].kind == "float":
                seen.setdefault(d, info.name)
    if len(seen) != 1:
        found = ", ".join(f"{d} ({n!r})" for d, n in seen.items()) or "no float matrices"
        raise MapspecError(f"--outtype auto: the source holds {found}; name the output type (--outtype f32, f16 "
                           f"or bf16)")
    return next(iter(seen))


def float_dtype(outtype: str, fmt: str, output: str, source_infos: Iterable) -> str:
    """The dtype every float tensor of a ``fmt`` output gets under ``outtype``."""
    if outtype == "auto":
        return auto(source_infos)
    if outtype not in FLOAT_TYPES:
        raise MapspecError(f"{output}: --outtype {outtype} is a GGUF type; a {fmt} output holds float tensors "
                           f"(--outtype {', '.join(FLOAT_TYPES)} or auto)")
    return FLOAT_TYPES[outtype]


def cast_plan(p, outtype: str, fmt: str, output: str) -> None:
    """Every float tensor of plan ``p`` cast to ``outtype``'s dtype (a cast appended to its step, as the
    spec's target dtype does)."""
    from .steps import _IMPLICIT_CAST, BoundCall
    from ..transforms import Meta

    want = float_dtype(outtype, fmt, output, p.source.infos().values())
    for s in p.steps:
        if s.out_meta.dtype != want and dtypes.DTYPES[s.out_meta.dtype].kind == "float":
            s.calls.append(BoundCall(_IMPLICIT_CAST, {"dtype": want}, f"cast({want}) [--outtype {outtype}]"))
            s.out_meta = Meta(s.out_meta.shape, want)
