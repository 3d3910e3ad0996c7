"""Language models for ``verify`` of the LLM specs: Meta's Llama written out here, and transformers' models.

Both are built lazily: the factory takes the head counts (spec vars, which come from the
model's ``params.json`` / ``config.json``), and ``load_state_dict`` reads every other size
from the weights.  The input is token ids (``verify`` feeds floats; they are floored);
the output is the logits.

``MetaLlama`` follows Meta's reference ``model.py`` (llama 2/3): RMSNorm, rotary
embeddings applied to adjacent pairs of each head as complex numbers, grouped-query
attention by repeating k/v heads, a SwiGLU feed-forward.  It is independent of
transformers, which is what makes it a reference for the Meta <-> HF conversion.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch import nn


class _Loaded(NamedTuple):
    missing_keys: list
    unexpected_keys: list


def _layers(state: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in state for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
    return max(found) + 1 if found else 0


class MetaLlama(nn.Module):
    LAYER = ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
             "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
             "attention_norm.weight", "ffn_norm.weight")

    def __init__(self, n_heads: int, n_kv_heads: int, norm_eps: float = 1e-5, rope_theta: float = 10000.0):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.eps, self.theta = n_heads, n_kv_heads, norm_eps, rope_theta
        self.w: dict = {}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        n = _layers(state, "layers.")
        want = ["tok_embeddings.weight", "norm.weight", "output.weight"] + [
            f"layers.{i}.{k}" for i in range(n) for k in self.LAYER]
        self.w = {k: state[k].float() for k in want if k in state}
        self.n_layers = n
        return _Loaded([k for k in want if k not in state], [k for k in state if k not in want])

    def _norm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def _rotary(self, x, freqs):  # x: b, s, heads, head_dim; pairs (0,1), (2,3), ... rotate together
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs[None, :, None, :]).flatten(3)

    def forward(self, tokens):
        tokens = tokens.long()
        w = self.w
        b, s = tokens.shape
        h = w["tok_embeddings.weight"][tokens]
        dim = h.shape[-1]
        hd = dim // self.n_heads
        inv = 1.0 / (self.theta ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
        freqs = torch.polar(torch.ones(s, hd // 2), torch.outer(torch.arange(s).float(), inv))
        mask = torch.full((s, s), float("-inf")).triu(1)
        rep = self.n_heads // self.n_kv_heads
        for i in range(self.n_layers):
            p = f"layers.{i}."
            x = self._norm(h, w[p + "attention_norm.weight"])
            q = (x @ w[p + "attention.wq.weight"].T).view(b, s, self.n_heads, hd)
            k = (x @ w[p + "attention.wk.weight"].T).view(b, s, self.n_kv_heads, hd)
            v = (x @ w[p + "attention.wv.weight"].T).view(b, s, self.n_kv_heads, hd)
            q, k = self._rotary(q, freqs), self._rotary(k, freqs)
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            att = torch.softmax(q @ k.transpose(2, 3) / hd ** 0.5 + mask, dim=-1)
            h = h + (att @ v).transpose(1, 2).reshape(b, s, dim) @ w[p + "attention.wo.weight"].T
            x = self._norm(h, w[p + "ffn_norm.weight"])
            ff = torch.nn.functional.silu(x @ w[p + "feed_forward.w1.weight"].T) * (x @ w[p + "feed_forward.w3.weight"].T)
            h = h + ff @ w[p + "feed_forward.w2.weight"].T
        return self._norm(h, w["norm.weight"]) @ w["output.weight"].T


class HFLlama(nn.Module):
    """transformers' LlamaForCausalLM with sizes from the weights and head counts from the factory."""

    def __init__(self, n_heads: int, n_kv_heads: int, norm_eps: float = 1e-5, rope_theta: float = 10000.0):
        super().__init__()
        self.heads, self.eps, self.theta = (n_heads, n_kv_heads), norm_eps, rope_theta
        self.model = None

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        from transformers import LlamaConfig, LlamaForCausalLM

        vocab, dim = state["model.embed_tokens.weight"].shape
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=dim, num_hidden_layers=_layers(state, "model.layers."),
                          intermediate_size=state["model.layers.0.mlp.gate_proj.weight"].shape[0],
                          num_attention_heads=self.heads[0], num_key_value_heads=self.heads[1],
                          rms_norm_eps=self.eps, rope_theta=self.theta,
                          tie_word_embeddings="lm_head.weight" not in state)
        self.model = LlamaForCausalLM(cfg)
        result = self.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
        return _Loaded([k for k in result.missing_keys if k not in tied], list(result.unexpected_keys))

    def forward(self, tokens):
        return self.model(tokens.long()).logits


def meta_llama(n_heads: int, n_kv_heads: int, norm_eps: float = 1e-5) -> MetaLlama:
    return MetaLlama(n_heads, n_kv_heads, norm_eps)


def hf_llama(n_heads: int, n_kv_heads: int, norm_eps: float = 1e-5) -> HFLlama:
    return HFLlama(n_heads, n_kv_heads, norm_eps)
