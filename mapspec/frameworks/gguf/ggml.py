"""ggml's tensor types and llama.cpp's file types: one table for the GGUF reader, the
``dequantize`` transform, the quantizers (:mod:`mapspec.frameworks.gguf.quant`) and ``--outtype``.

Numbers from ggml.h / gguf-py's ``constants.py`` (``GGMLQuantizationType``,
``GGML_QUANT_SIZES``, ``LlamaFileType``, ``GGML_QUANT_VERSION``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class GGMLType(NamedTuple):
    name: str
    block: int  # elements per block
    nbytes: int  # bytes per block
    dtype: Optional[str]  # mapspec dtype of an element; None for a block-quantized type


QK_K = 256
# ggml type code -> layout.  Codes not listed are unknown.
TYPES: dict[int, GGMLType] = {code: GGMLType(*t) for code, t in {
    0: ("F32", 1, 4, "float32"), 1: ("F16", 1, 2, "float16"), 2: ("Q4_0", 32, 18, None),
    3: ("Q4_1", 32, 20, None), 6: ("Q5_0", 32, 22, None), 7: ("Q5_1", 32, 24, None),
    8: ("Q8_0", 32, 34, None), 9: ("Q8_1", 32, 40, None), 10: ("Q2_K", QK_K, 84, None),
    11: ("Q3_K", QK_K, 110, None), 12: ("Q4_K", QK_K, 144, None), 13: ("Q5_K", QK_K, 176, None),
    14: ("Q6_K", QK_K, 210, None), 15: ("Q8_K", QK_K, 292, None), 16: ("IQ2_XXS", QK_K, 66, None),
    17: ("IQ2_XS", QK_K, 74, None), 18: ("IQ3_XXS", QK_K, 98, None), 19: ("IQ1_S", QK_K, 50, None),
    20: ("IQ4_NL", 32, 18, None), 21: ("IQ3_S", QK_K, 110, None), 22: ("IQ2_S", QK_K, 82, None),
    23: ("IQ4_XS", QK_K, 136, None), 24: ("I8", 1, 1, "int8"), 25: ("I16", 1, 2, "int16"),
    26: ("I32", 1, 4, "int32"), 27: ("I64", 1, 8, "int64"), 28: ("F64", 1, 8, "float64"),
    29: ("IQ1_M", QK_K, 56, None), 30: ("BF16", 1, 2, "bfloat16"), 34: ("TQ1_0", QK_K, 54, None),
    35: ("TQ2_0", QK_K, 66, None), 39: ("MXFP4", 32, 17, None),
}.items()}
BY_NAME: dict[str, int] = {t.name: code for code, t in TYPES.items()}
BY_DTYPE: dict[str, int] = {t.dtype: code for code, t in TYPES.items() if t.dtype}


def by_name(name: str) -> GGMLType:
    return TYPES[BY_NAME[name]]


# llama.cpp's file types (LlamaFileType, general.file_type) of the outputs mapspec writes:
# --outtype -> (file type number, its LlamaFileType name, the ggml type of the weight matrices).
class FileType(NamedTuple):
    number: int
    name: str
    weights: str


FILE_TYPES: dict[str, FileType] = {k: FileType(*v) for k, v in {
    "f32": (0, "ALL_F32", "F32"), "f16": (1, "MOSTLY_F16", "F16"), "q4_0": (2, "MOSTLY_Q4_0", "Q4_0"),
    "q4_1": (3, "MOSTLY_Q4_1", "Q4_1"), "q8_0": (7, "MOSTLY_Q8_0", "Q8_0"), "q5_0": (8, "MOSTLY_Q5_0", "Q5_0"),
    "q5_1": (9, "MOSTLY_Q5_1", "Q5_1"), "bf16": (32, "MOSTLY_BF16", "BF16"),
}.items()}
QUANT_VERSION = 2  # GGML_QNT_VERSION: general.quantization_version
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 63  # GGML_MAX_NAME is 64 bytes with the terminating zero
