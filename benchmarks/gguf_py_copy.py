"""gguf-py's way to do what benchmarks/specs/gguf-rename.yaml and gguf-to-safetensors.yaml do: its
``GGUFReader`` (tensors memory-mapped), then its ``GGUFWriter`` (every tensor added, then written at
the end; the source's metadata copied) or, for safetensors, ``safetensors.numpy.save_file`` of the
whole dict (attn_output transposed).  The benchmark's reference for the gguf case.

    python benchmarks/gguf_py_copy.py gguf SRC.gguf OUT.gguf
    python benchmarks/gguf_py_copy.py safetensors SRC.gguf OUT.safetensors
"""

from __future__ import annotations

import re
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

NAME = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def to_gguf(src: str, out: str) -> None:
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(out, arch)  # writes general.architecture itself
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            w.add_array(key, field.contents())
        else:
            w.add_key_value(key, field.contents(), vtype)
    for t in r.tensors:
        i, kind = NAME.fullmatch(t.name).groups()
        w.add_tensor(f"layers.{i}.{kind}.weight", t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def to_safetensors(src: str, out: str) -> None:
    from safetensors.numpy import save_file

    r = GGUFReader(src)
    tensors = {}
    for t in r.tensors:
        i, kind = NAME.fullmatch(t.name).groups()
        if kind == "attn_output":
            tensors[f"model.layers.{i}.attn_output.weight_t"] = np.ascontiguousarray(t.data.T)
        else:
            tensors[f"model.layers.{i}.{kind}.weight"] = t.data
    save_file(tensors, out)


if __name__ == "__main__":
    mode, src, out = sys.argv[1:]
    {"gguf": to_gguf, "safetensors": to_safetensors}[mode](src, out)
