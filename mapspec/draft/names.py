"""Layer names read as words: known synonyms between model families, kept as data.

Two checkpoints of one model family often name the same layer differently (Meta's Llama
``layers.0.attention.wq`` is Hugging Face's ``model.layers.0.self_attn.q_proj``).  A name is
read as its dotted words, each known phrase replaced by one canonical word, and the words
that only say where the model sits (``model``, ``transformer``) dropped; layer indices stay,
so layers align by index too.  Two layers with the same reading, each the only one with it
on its side, are the same layer (the draft still checks that their shapes agree).
"""

from __future__ import annotations

import re

# canonical word -> the phrases (dotted words) that mean it; "^" anchors a phrase to the whole name
SYNONYMS = {
    "embed_tokens": ["tok_embeddings", "embed_tokens"],
    "lm_head": ["^output", "lm_head"],
    "attn_q": ["attention.wq", "self_attn.q_proj"],
    "attn_k": ["attention.wk", "self_attn.k_proj"],
    "attn_v": ["attention.wv", "self_attn.v_proj"],
    "attn_o": ["attention.wo", "self_attn.o_proj"],
    "mlp_gate": ["feed_forward.w1", "mlp.gate_proj"],
    "mlp_down": ["feed_forward.w2", "mlp.down_proj"],
    "mlp_up": ["feed_forward.w3", "mlp.up_proj"],
    "norm_attn": ["attention_norm", "input_layernorm"],
    "norm_mlp": ["ffn_norm", "post_attention_layernorm"],
}
NOISE = {"model", "transformer"}  # words that say where a model sits, not which layer

# Families whose q/k projections order the rotary rows differently (interleaved pairs vs halves), with the
# config file beside a checkpoint and its keys for (heads, key/value heads).
ROTARY = {"meta": ((".attention.wq", ".attention.wk"), "params.json", ("n_heads", "n_kv_heads")),
          "hf": ((".self_attn.q_proj", ".self_attn.k_proj"), "config.json",
                 ("num_attention_heads", "num_key_value_heads"))}

_PHRASES = sorted(((tuple(p.lstrip("^").split(".")), p.startswith("^"), canon)
                   for canon, ps in SYNONYMS.items() for p in ps), key=lambda x: -len(x[0]))
_SPLIT = re.compile(r"[./]")


def reading(key: str) -> tuple:
    """The words of a layer name with known phrases made canonical and placement words dropped."""
    words = [w for w in _SPLIT.split(key.lower()) if w]
    out = []
    i = 0
    while i < len(words):
        for phrase, whole, canon in _PHRASES:
            n = len(phrase)
            if tuple(words[i:i + n]) == phrase and (not whole or (i == 0 and n == len(words))):
                out.append(canon)
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return tuple(w for w in out if w not in NOISE)


def rotary_family(key: str):
    return next((f for f, (ends, _, _) in ROTARY.items() if key.endswith(ends)), None)
