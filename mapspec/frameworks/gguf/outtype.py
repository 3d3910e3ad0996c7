"""``--outtype``: the ggml type of each tensor of a GGUF output, chosen as llama.cpp's
``convert_hf_to_gguf.py`` chooses it (its write path in ``conversion/base.py``).

The choice is data: the first rule of :data:`KEEP_F32` that matches a tensor keeps it in F32;
every other tensor takes the outtype's weight type (:data:`mapspec.frameworks.gguf.ggml.FILE_TYPES`), or
:data:`FALLBACK` when its rows are not whole blocks of that type.  ``auto`` is the source's
half-precision type (:func:`auto`).  The converter itself offers f32, f16, bf16 and q8_0;
q4_0, q4_1, q5_0 and q5_1 follow the same rules with their own type (as llama.cpp's
``llama-quantize --pure`` would, not its default mixes).  The converter's special case for
token_embd/output concerns only the ternary types (tq1_0, tq2_0), which mapspec does not write.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from ... import dtypes
from ...errors import MapspecError
from .ggml import FILE_TYPES, QUANT_VERSION, by_name

CHOICES = tuple(FILE_TYPES) + ("auto",)

# GGUF tensor names (gguf-py's TENSOR_NAMES) llama.cpp reads as F32 whatever the outtype.
F32_NAMES = (
    "blk.N.ffn_gate_inp", "blk.N.ffn_gate_inp_shexp", "position_embd", "token_types", "blk.N.ssm_conv1d",
    "blk.N.shortconv.conv", "blk.N.time_mix_first", "blk.N.time_mix_w1", "blk.N.time_mix_w2",
    "blk.N.time_mix_decay_w1", "blk.N.time_mix_decay_w2", "blk.N.time_mix_lerp_fused", "posnet.N.norm1",
    "posnet.N.norm2", "v.position_embd", "a.position_embd", "blk.N.altup_correct_coef",
    "blk.N.altup_predict_coef", "blk.N.ssm_conv1d_q", "blk.N.ssm_conv1d_k", "blk.N.ssm_conv1d_v",
    "blk.N.indexer.proj",
)
_F32_RE = re.compile("|".join(re.escape(n).replace("N", r"\d+") + r"\.weight" for n in F32_NAMES))

# (why, test(name, shape)): tensors kept in F32, first match wins.
KEEP_F32 = (
    ("fewer than 2 dimensions", lambda name, shape: len(shape) <= 1),
    ("a norm weight (*_norm.weight)", lambda name, shape: name.endswith("_norm.weight")),
    ("not a weight (the name does not end in .weight)",
     lambda name, shape: not name.endswith((".weight", ".lora_a", ".lora_b"))),
    ("a tensor llama.cpp reads as F32", lambda name, shape: _F32_RE.fullmatch(name) is not None),
)
FALLBACK = "F16"  # rows that are not whole blocks of the outtype's type (the converter's QuantError)


def choose(name: str, shape: tuple, outtype: str) -> str:
    """The ggml type name tensor ``name`` of logical ``shape`` gets under ``outtype``."""
    for _, test in KEEP_F32:
        if test(name, tuple(shape)):
            return "F32"
    t = by_name(FILE_TYPES[outtype].weights)
    return t.name if shape[-1] % t.block == 0 else FALLBACK


def check(outtype, what: str = "--outtype") -> str:
    if outtype not in CHOICES:
        raise MapspecError(f"{what} must be one of {', '.join(CHOICES)}, not {outtype!r}")
    return outtype


def auto(source_infos: Iterable) -> str:
    """What ``auto`` means for a source: bf16 if its tensors of 2 or more dimensions are bfloat16, f16
    if they are float16 or neither (the converter's default); both is refused (the converter takes
    whichever comes first)."""
    seen = {}
    for info in source_infos:
        if len(info.shape) >= 2 and info.dtype:
            d = dtypes.canonical(info.dtype)
            if d in ("bfloat16", "float16"):
                seen.setdefault(d, info.name)
    if len(seen) > 1:
        raise MapspecError(f"--outtype auto: the source holds both bfloat16 ({seen['bfloat16']!r}) and float16 "
                           f"({seen['float16']!r}) matrices; name the output type (--outtype bf16 or f16)")
    return "bf16" if "bfloat16" in seen else "f16"


def resolve(outtype, fmt: str, output: str, source_infos: Iterable) -> str:
    """The output type to write: ``outtype`` checked (a GGUF output only), ``auto`` decided from the source."""
    check(outtype)
    if fmt != "gguf":
        raise MapspecError(f"{output}: --outtype is for GGUF outputs; this output is {fmt} (cast with the spec's "
                           f"target dtype or a cast transform instead)")
    return auto(source_infos) if outtype == "auto" else outtype


def metadata(outtype: str) -> dict:
    """The keys the converter sets for the output type (typed, as the GGUF writer takes them)."""
    return {"general.file_type": ("uint32", FILE_TYPES[outtype].number),
            "general.quantization_version": ("uint32", QUANT_VERSION)}


def encodings(infos, outtype: Optional[str], path: str) -> dict:
    """{tensor name: ggml type name} for the announced float tensors; integers keep their type."""
    if outtype is None:
        return {}
    check(outtype, f"{path}: option outtype")
    if outtype == "auto":
        raise MapspecError(f"{path}: outtype auto depends on the source; the engine resolves it (pass f16 or bf16)")
    out = {}
    for info in infos:
        meta = info.meta or {}
        dname = dtypes.canonical(info.dtype) if info.dtype else "float32"
        if meta.get("ggml_type") and dname == "uint8":
            raise MapspecError(f"tensor {info.name!r} holds {meta['ggml_type']} blocks; --outtype encodes float "
                               f"tensors only (dequantize it first, or leave --outtype out to copy the blocks)")
        if dtypes.DTYPES[dname].kind == "float":
            out[info.name] = choose(info.name, tuple(meta.get("shape") or info.shape), outtype)
    return out
