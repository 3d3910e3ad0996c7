"""Raw quantized blocks are bytes, not values: where they may go, and the error when they may not.

The GGUF reader hands a block-quantized tensor (Q8_0, Q4_K, ...) out as its raw blocks:
``uint8`` rows with ``meta = {"ggml_type": T, "shape": logical shape}`` (see
:mod:`mapspec.formats.gguf`).  Those bytes mean something only beside their ggml type, so:

* a transform on them is refused (arithmetic, ``cast``, ``reshape``, ``transpose``, ``take``...:
  a byte is no element), except ``dequantize`` of the tensor's own type, the one way to values;
  ``dequantize`` of another type is refused too (it would decode garbage);
* a tensor reference to them (an arithmetic operand, ``concat``'s parts) and a ``stack`` of them
  are refused;
* an output of raw blocks goes only to a writer that records the ggml type (``RAW_BLOCKS = True``
  in its format module and on its writer class: GGUF), under the same type and logical shape; any
  other format is refused, naming the tensor and its type, instead of storing the bytes as
  ``uint8`` weights.

A tensor the reader dequantized (read option ``dequantize: true``) is float32 values and none of
this applies.  Each check returns the error text (the engine adds rule, tensor and line) or None.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional


def raw_type(dtype: Optional[str], meta: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The ggml type of a tensor held as raw quantized blocks; None for a tensor of values."""
    meta = meta or {}
    if dtype == "uint8" and meta.get("ggml_type") and not meta.get("dequantized"):
        return str(meta["ggml_type"])
    return None


def of_info(info) -> Optional[str]:
    """:func:`raw_type` of a :class:`~mapspec.formats.TensorInfo`."""
    return raw_type(info.dtype, info.meta)


def how_to_dequantize(ggml_type: str) -> str:
    """What a user does to get values out of ``ggml_type`` blocks."""
    from .transforms.dequantize import BLOCKS

    if ggml_type not in BLOCKS:
        return (f"mapspec cannot dequantize {ggml_type} (it can: {', '.join(BLOCKS)}); only a rename into a GGUF "
                f"file keeps these blocks")
    return (f"dequantize them first: add {{dequantize: {ggml_type}}} as the rule's first transform, or read the "
            f"source with option dequantize=true (--source-option dequantize=true, or source: {{options: "
            f"{{dequantize: true}}}} in the spec)")


def refuse_call(call_name: str, label: str, ggml_type: Optional[str], args: Mapping[str, Any]) -> Optional[str]:
    """Why ``call_name`` may not run on a tensor whose raw type is ``ggml_type`` (None: it may)."""
    if call_name == "dequantize":
        want = args.get("type")
        if ggml_type is not None and want != ggml_type:
            return (f"{label}: the source stores this tensor as {ggml_type} blocks, not {want}; decoding them as "
                    f"{want} gives garbage: write {{dequantize: {ggml_type}}}")
        return None
    if ggml_type is None:
        return None
    return (f"{label} on raw {ggml_type} blocks: they are bytes of quantized blocks, not elements; "
            f"{how_to_dequantize(ggml_type)}")


def refuse_operand(label: str, ref: str, ggml_type: str) -> str:
    return (f"{label}: {ref!r} holds raw {ggml_type} blocks, bytes rather than values, and cannot be an operand; "
            f"{how_to_dequantize(ggml_type)}")


def refuse_stack(ggml_type: str) -> str:
    return (f"stack of raw {ggml_type} blocks: mapspec stacks values, not quantized bytes; "
            f"{how_to_dequantize(ggml_type)}")


def refuse_output(fmt: str, ggml_type: str, logical) -> str:
    """The error for raw blocks bound for a writer that cannot record their type."""
    shape = "x".join(str(int(d)) for d in logical or ()) or "?"
    return (f"holds raw {ggml_type} blocks (a {shape} tensor); format {fmt} cannot record a ggml type, so they "
            f"would be written as uint8 bytes posing as weights; {how_to_dequantize(ggml_type)}")


def refuse_template(ggml_type: str, template_type: Optional[str], template_dtype: Optional[str]) -> Optional[str]:
    """Raw ``ggml_type`` blocks written where the template has ``template_type`` / ``template_dtype``."""
    if template_type == ggml_type:
        return None
    there = f"{template_type} blocks" if template_type else (template_dtype or "values")
    return (f"the source holds raw {ggml_type} blocks but the template stores {there} here; blocks are copied only "
            f"under their own type (re-quantizing is not a copy); {how_to_dequantize(ggml_type)}")


def writer_holds(writer_or_module) -> bool:
    """Whether a writer (class or instance) or format module records ggml types of raw blocks."""
    return bool(getattr(writer_or_module, "RAW_BLOCKS", False))
