"""A small nanoGPT (Karpathy's model.py layout and names), the target model of the GPT-2 test.

Same module names as nanoGPT: transformer.{wte, wpe, h.N.{ln_1, attn.{c_attn, c_proj}, ln_2,
mlp.{c_fc, c_proj}}, ln_f}, lm_head tied to wte; nn.Linear weights are (out, in) where HF GPT-2's
Conv1D stores (in, out).  In inference it returns the logits of the last position only, as
nanoGPT does.  GELU is the tanh approximation, the activation GPT-2 was trained with.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

    def forward(self, idx, targets=None):
        pos = torch.arange(idx.shape[1], dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x[:, [-1], :]), None


def gpt(vocab_size, block_size, n_layer, n_head, n_embd):
    """The factory given on the command line: its parameters are the spec's vars."""
    return GPT(vocab_size, block_size, n_layer, n_head, n_embd)


NOT_A_MODEL = 42


def not_a_model():
    return "a string"


def broken():
    raise RuntimeError("factory failed on purpose")


def gpt_beside(weights):
    """nanoGPT sized by the GPT-2 config.json beside its weights (nanoGPT keeps its sizes in its training
    checkpoint, not in a state dict)."""
    import json
    import os

    with open(os.path.join(os.path.dirname(os.path.abspath(weights)), "config.json"), encoding="utf-8") as f:
        c = json.load(f)
    return GPT(c["vocab_size"], c["n_positions"], c["n_layer"], c["n_head"], c["n_embd"])
