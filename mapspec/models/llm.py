"""Language models for ``verify`` of the LLM specs: Meta's Llama written out here, and transformers' models.

Each is built lazily from the model's own config file beside the weights (``params.json``
for Meta's layout, ``config.json`` for transformers' and nanoGPT's): ``verify`` passes the
weights path to a factory that takes ``weights``.  The input is token ids (``verify`` feeds floats; they are floored);
the output is the logits.

``MetaLlama`` follows Meta's reference ``model.py`` (llama 2/3): RMSNorm, rotary
embeddings applied to adjacent pairs of each head as complex numbers, grouped-query
attention by repeating k/v heads, a SwiGLU feed-forward.  It is independent of
transformers, which is what makes it a reference for the Meta <-> HF conversion.
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

import torch
from torch import nn

from ..errors import MapspecError


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


def _config(weights: str, name: str) -> dict:
    path = os.path.join(os.path.dirname(os.path.abspath(weights)), name)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as e:
        raise MapspecError(f"{path}: the model's {name} must lie beside {weights} to build the model for verify "
                           f"({e.strerror})") from None
    except ValueError as e:
        raise MapspecError(f"{path}: not JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise MapspecError(f"{path}: a config holds a mapping")
    return cfg


class HFModel(nn.Module):
    """A transformers model built from the config.json beside its weights when the weights are loaded."""

    def __init__(self, config_class: str, model_class: str, weights: str):
        super().__init__()
        import transformers

        self.config = getattr(transformers, config_class).from_dict(_config(weights, "config.json"))
        self.model_class = getattr(transformers, model_class)
        self.weights = weights
        self.model = None

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        self.model = self.model_class(self.config)
        result = self.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if getattr(self.config, "tie_word_embeddings", False) else set()
        missing = [k for k in result.missing_keys if k not in tied]
        if (missing or result.unexpected_keys) and os.path.basename(self.weights) == "model.safetensors":
            # a layout transformers converts when loading (Mixtral's per-expert weights): its own loader
            self.model, info = self.model_class.from_pretrained(os.path.dirname(os.path.abspath(self.weights)),
                                                               output_loading_info=True)
            return _Loaded([k for k in info["missing_keys"] if k not in tied], list(info["unexpected_keys"]))
        return _Loaded(missing, list(result.unexpected_keys))

    def forward(self, tokens):
        return self.model(tokens.long()).logits


class NanoGPT(nn.Module):
    """Karpathy's nanoGPT model.py forward (pre-norm blocks, nn.Linear layers, exact GELU), on its state dict."""

    def __init__(self, n_head: int, eps: float = 1e-5):
        super().__init__()
        self.n_head, self.eps = n_head, eps
        self.w: dict = {}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        n = _layers(state, "transformer.h.")
        want = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
                "lm_head.weight"] + [f"transformer.h.{i}.{m}.{p}" for i in range(n) for m in (
                    "ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj") for p in ("weight", "bias")]
        self.w = {k: state[k].float() for k in want if k in state}
        self.n_layers = n
        return _Loaded([k for k in want if k not in state], [k for k in state if k not in want and
                                                                 not k.endswith(".attn.bias")])

    def forward(self, tokens):
        F = torch.nn.functional
        w, tokens = self.w, tokens.long()
        b, s = tokens.shape
        x = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][:s]
        c = x.shape[-1]

        def ln(t, name):
            return F.layer_norm(t, (c,), w[name + ".weight"], w[name + ".bias"], self.eps)

        def lin(t, name):
            return F.linear(t, w[name + ".weight"], w[name + ".bias"])

        for i in range(self.n_layers):
            p = f"transformer.h.{i}."
            q, k, v = lin(ln(x, p + "ln_1"), p + "attn.c_attn").split(c, dim=2)
            q, k, v = (t.view(b, s, self.n_head, c // self.n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, c)
            x = x + lin(y, p + "attn.c_proj")
            x = x + lin(F.gelu(lin(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
        return F.linear(ln(x, "transformer.ln_f"), w["lm_head.weight"])


class SplitGPTNeoX(HFModel):
    """GPT-NeoX with separate attention.query/key/value: each head's q, k, v rows are put back together
    ([heads, 3, head_dim]) before transformers' GPTNeoXForCausalLM takes them."""

    def __init__(self, weights: str):
        super().__init__("GPTNeoXConfig", "GPTNeoXForCausalLM", weights)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        heads = self.config.num_attention_heads
        state = dict(state)
        for key in [k for k in state if ".attention.query." in k]:
            parts = [state.pop(key.replace(".query.", f".{n}.")) for n in ("query", "key", "value")]
            rest = parts[0].shape[1:]
            fused = torch.stack([t.reshape(heads, -1, *rest) for t in parts], dim=1)
            state[key.replace(".query.", ".query_key_value.")] = fused.reshape(-1, *rest)
        return super().load_state_dict(state, strict)


def meta_llama(weights: str) -> MetaLlama:
    """Meta's Llama, head counts and eps from the params.json beside the weights."""
    p = _config(weights, "params.json")
    return MetaLlama(p["n_heads"], p.get("n_kv_heads") or p["n_heads"], p.get("norm_eps", 1e-5),
                     p.get("rope_theta", 10000.0))


def hf_llama(weights: str) -> HFModel:
    return HFModel("LlamaConfig", "LlamaForCausalLM", weights)


def hf_mixtral(weights: str) -> HFModel:
    return HFModel("MixtralConfig", "MixtralForCausalLM", weights)


def hf_gpt2(weights: str) -> HFModel:
    return HFModel("GPT2Config", "GPT2LMHeadModel", weights)


def hf_gpt_neox(weights: str) -> HFModel:
    return HFModel("GPTNeoXConfig", "GPTNeoXForCausalLM", weights)


def split_gpt_neox(weights: str) -> SplitGPTNeoX:
    return SplitGPTNeoX(weights)


def nanogpt(weights: str) -> NanoGPT:
    """nanoGPT, head count and eps from a GPT-2 config.json beside the weights."""
    c = _config(weights, "config.json")
    return NanoGPT(c["n_head"], c.get("layer_norm_epsilon", 1e-5))
