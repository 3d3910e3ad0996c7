"""The Hugging Face way to rename a sharded safetensors checkpoint: per shard, ``load_file`` (every
tensor of the shard in memory), rename, ``save_file``; then the index.  What conversion scripts
built on ``safetensors.torch`` do; the benchmark's reference for ``specs/llama-hf-to-meta.yaml``.

    python benchmarks/hf_shards.py SRC_DIR OUT_DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

RENAMES = [  # the same renames as specs/llama-hf-to-meta.yaml
    (r"model\.embed_tokens\.weight", "tok_embeddings.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.(\w+)_proj\.weight", r"layers.\1.attention.w\2.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"layers.\1.feed_forward.w1.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"layers.\1.feed_forward.w2.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"layers.\1.feed_forward.w3.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.attention_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (r"model\.norm\.weight", "norm.weight"),
    (r"lm_head\.weight", "output.weight"),
]


def rename(name: str) -> str:
    for pattern, repl in RENAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    raise KeyError(name)


def main(src: str, out: str) -> None:
    src_dir, out_dir = Path(src), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = json.loads((src_dir / "model.safetensors.index.json").read_text())
    weight_map = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors = {rename(k): v for k, v in load_file(str(src_dir / shard)).items()}
        save_file(tensors, str(out_dir / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in tensors})
        del tensors
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": index.get("metadata", {}), "weight_map": dict(sorted(weight_map.items()))}, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
