"""The Hugging Face way for the one-file safetensors cases: ``load_file`` (every tensor in memory), the
same renames / transposes / casts as the spec with torch, ``save_file``.  What conversion scripts built on
``safetensors.torch`` do; the benchmark's reference for ``specs/safetensors-rename.yaml`` ("full") and
``specs/safetensors-rename-only.yaml`` ("rename").  Like most such scripts it does not fsync.

    python benchmarks/hf_file.py full|rename SRC OUT
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import load_file, save_file

FULL = {  # kind -> (target suffix, what to do); as specs/safetensors-rename.yaml
    "attn.q": ("self_attn.q_proj.weight", None), "attn.o": ("self_attn.o_proj.weight_t", "T"),
    "mlp.up": ("mlp.up_proj.weight", "bf16"), "mlp.down": ("mlp.down_proj.weight", None)}


def convert(mode: str, tensors: dict) -> dict:
    out = {}
    for name, x in tensors.items():
        _, i, a, b, leaf = name.split(".")
        if mode == "rename":  # specs/safetensors-rename-only.yaml: layers.<i>.<k:path> -> x.{i}.{k}
            out[f"x.{i}.{a}.{b}.{leaf}"] = x
            continue
        target, op = FULL[f"{a}.{b}"]
        out[f"model.layers.{i}.{target}"] = (x.t().contiguous() if op == "T" else
                                             x.to(torch.bfloat16) if op == "bf16" else x)
    return out


def main(mode: str, src: str, dst: str) -> None:
    save_file(convert(mode, load_file(src)), dst)


if __name__ == "__main__":
    main(*sys.argv[1:])
