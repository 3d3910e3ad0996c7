"""A small Llama in the layout of Meta's reference implementation (llama/model.py), the source
model of the Llama test: tok_embeddings, layers.N.{attention.{wq, wk, wv, wo}, feed_forward.{w1,
w2, w3}, attention_norm, ffn_norm}, norm, output.  Rotary embeddings rotate adjacent pairs of a
head's features (complex multiplication), where transformers' Llama rotates the two halves:
converting the checkpoint permutes the rows of wq and wk.  No KV cache: the whole sequence at once.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary(head_dim, length, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(length).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles)  # (length, head_dim / 2) complex


def rotate(x, freqs):
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # adjacent pairs
    return torch.view_as_real(xc * freqs[None, :, None, :]).flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim, n_heads, n_kv_heads):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)

    def forward(self, x, freqs):
        b, t, _ = x.shape
        q = rotate(self.wq(x).view(b, t, self.n_heads, self.head_dim), freqs)
        k = rotate(self.wk(x).view(b, t, self.n_kv_heads, self.head_dim), freqs)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, n_kv_heads, hidden, eps):
        super().__init__()
        self.attention = Attention(dim, n_heads, n_kv_heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_norm = RMSNorm(dim, eps)

    def forward(self, x, freqs):
        h = x + self.attention(self.attention_norm(x), freqs)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, vocab_size, dim, n_layers, n_heads, n_kv_heads, hidden, eps, theta):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList([TransformerBlock(dim, n_heads, n_kv_heads, hidden, eps)
                                     for _ in range(n_layers)])
        self.norm = RMSNorm(dim, eps)
        self.output = nn.Linear(dim, vocab_size, bias=False)
        self.head_dim, self.theta = dim // n_heads, theta

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        freqs = rotary(self.head_dim, tokens.shape[1], self.theta)
        for layer in self.layers:
            h = layer(h, freqs)
        return self.output(self.norm(h)).float()


def llama(vocab_size, dim, n_layers, n_heads, n_kv_heads, hidden, norm_eps, rope_theta):
    """The factory given on the command line: its parameters are the spec's vars."""
    return Transformer(vocab_size, dim, n_layers, n_heads, n_kv_heads, hidden, norm_eps, rope_theta)


def llama_beside(weights, n_heads, n_kv_heads, norm_eps, rope_theta=10000.0):
    """The factory given on the command line with the shipped llama/meta-to-hf spec: head counts and eps are
    the spec's config vars (from params.json beside the checkpoint), the sizes are read off the checkpoint."""
    state = torch.load(weights, weights_only=True, map_location="cpu")
    vocab_size, dim = state["tok_embeddings.weight"].shape
    n_layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    hidden = state["layers.0.feed_forward.w1.weight"].shape[0]
    return Transformer(vocab_size, dim, n_layers, n_heads, n_kv_heads, hidden, norm_eps, rope_theta)
