"""How each side lays out the rotary features of its query/key projections: knowledge as data.

Rotary embeddings rotate pairs of a head's features.  Meta's reference Llama (and llama.cpp)
pairs adjacent features (0, 1), (2, 3), ... ("interleaved"); transformers' Llama family pairs the
two halves of a head (i, i + head_dim/2) ("halves").  A conversion between the two permutes the
rows of q and k; between two models of the same layout it must not.  So a q/k projection's
activations must be equal as they are when both sides use the same layout, and equal only after
a permutation of their features when the layouts differ: anything else is a lost or extra
rotary permute, whatever the spec says.
"""

from __future__ import annotations

import re
from typing import Optional

# transformers model types whose attention rotates the halves of q_proj/k_proj's heads (rotate_half)
HALVES_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2"})
HF_QK = re.compile(r"(^|\.)layers\.\d+\.self_attn\.[qk]_proj$")

CAUSE = "rotary permute (rows interleaved vs halves)"


def hf_layout(model_type: Optional[str], module: str) -> Optional[str]:
    """The rotary layout of a transformers model's module's output, or None (not rotated, or not known)."""
    return "halves" if model_type in HALVES_MODEL_TYPES and HF_QK.search(module) else None


def expected(source: Optional[str], target: Optional[str]) -> Optional[str]:
    """"same" when the two layouts agree, "permuted" when they differ, None when a side does not say."""
    if source is None or target is None:
        return None
    return "same" if source == target else "permuted"
