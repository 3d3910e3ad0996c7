"""Shared by the GGUF tests: random quantized blocks (every byte pattern is a valid block)."""

from __future__ import annotations

import numpy as np

QUANTS = {"Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_K": (256, 144), "Q6_K": (256, 210)}  # values, bytes per block


def random_blocks(qtype: str, rows: int, blocks: int, seed: int = 0) -> np.ndarray:
    """Random bytes as quantized rows, with finite float16 scales (every byte pattern is a valid block)."""
    per, nbytes = QUANTS[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows, blocks, nbytes), dtype=np.uint8)
    scales = rng.uniform(-2, 2, size=(rows, blocks, 2)).astype("<f2").view(np.uint8)
    at = {"Q8_0": [0], "Q4_0": [0], "Q4_K": [0, 2], "Q6_K": [208]}[qtype]
    for k, pos in enumerate(at):
        raw[:, :, pos:pos + 2] = scales[:, :, 2 * k:2 * k + 2]
    return raw.reshape(rows, blocks * nbytes)
