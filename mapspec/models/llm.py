"""Language models for ``verify`` of the LLM specs: Meta's Llama written out here, and transformers' models.

Each is built lazily from the model's own config file beside the weights (``params.json``
for Meta's layout, ``config.json`` for transformers' and nanoGPT's): ``verify`` passes the
weights path to a factory that takes ``weights``.  The input is token ids;
the output is the logits.

``MetaLlama`` follows Meta's reference ``model.py`` (llama 2/3): RMSNorm, rotary
embeddings applied to adjacent pairs of each head as complex numbers, grouped-query
attention by repeating k/v heads, a SwiGLU feed-forward.  It is independent of
transformers, which is what makes it a reference for the Meta <-> HF conversion.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from typing import NamedTuple

import torch
from torch import nn

from ..errors import MapspecError
from ..paths import checkpoint_dir


class _Loaded(NamedTuple):
    missing_keys: list
    unexpected_keys: list


def _layers(state: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in state for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
    return max(found) + 1 if found else 0


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(weight.shape))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _linear(weight: torch.Tensor, bias: bool = False) -> nn.Linear:
    return nn.Linear(weight.shape[1], weight.shape[0], bias=bias)


class MetaAttention(nn.Module):
    def __init__(self, state: dict, p: str, n_heads: int, n_kv_heads: int):
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (_linear(state[p + f"w{n}.weight"]) for n in "qkvo")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads

    def forward(self, x, freqs):
        b, s, _ = x.shape
        hd = self.wq.out_features // self.n_heads
        q = MetaLlama.rotary(self.wq(x).view(b, s, self.n_heads, hd), freqs)
        k = MetaLlama.rotary(self.wk(x).view(b, s, self.n_kv_heads, hd), freqs)
        v = self.wv(x).view(b, s, self.n_kv_heads, hd)
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        mask = torch.full((s, s), float("-inf")).triu(1)
        att = torch.softmax(q @ k.transpose(2, 3) / hd ** 0.5 + mask, dim=-1)
        return self.wo((att @ v).transpose(1, 2).reshape(b, s, -1))


class MetaFeedForward(nn.Module):
    def __init__(self, state: dict, p: str):
        super().__init__()
        self.w1, self.w2, self.w3 = (_linear(state[p + f"w{n}.weight"]) for n in "123")

    def forward(self, x):
        return self.w2(torch.nn.functional.silu(self.w1(x)) * self.w3(x))


class MetaBlock(nn.Module):
    def __init__(self, state: dict, p: str, n_heads: int, n_kv_heads: int, eps: float):
        super().__init__()
        self.attention = MetaAttention(state, p + "attention.", n_heads, n_kv_heads)
        self.feed_forward = MetaFeedForward(state, p + "feed_forward.")
        self.attention_norm = RMSNorm(state[p + "attention_norm.weight"], eps)
        self.ffn_norm = RMSNorm(state[p + "ffn_norm.weight"], eps)

    def forward(self, h, freqs):
        h = h + self.attention(self.attention_norm(h), freqs)
        return h + self.feed_forward(self.ffn_norm(h))


class MetaLlama(nn.Module):
    """Meta's layout as modules named like its checkpoint (tok_embeddings, layers.N.attention.wq, ...), so that
    ``verify --layers`` sees every layer; the sizes come from the checkpoint's tensors when it is loaded."""

    LAYER = ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
             "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
             "attention_norm.weight", "ffn_norm.weight")
    ROTARY = re.compile(r"(^|\.)layers\.\d+\.attention\.w[qk]$")  # their outputs rotate adjacent pairs

    def __init__(self, n_heads: int, n_kv_heads: int, norm_eps: float = 1e-5, rope_theta: float = 10000.0):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.eps, self.theta = n_heads, n_kv_heads, norm_eps, rope_theta

    def rotary_layout(self, layer: str):
        """How ``layer``'s output features are paired for rotary embeddings (None: not rotated)."""
        return "interleaved" if self.ROTARY.search(layer) else None

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        n = _layers(state, "layers.")
        want = ["tok_embeddings.weight", "norm.weight", "output.weight"] + [
            f"layers.{i}.{k}" for i in range(n) for k in self.LAYER]
        missing, unexpected = [k for k in want if k not in state], [k for k in state if k not in want]
        if missing or unexpected:
            return _Loaded(missing, unexpected)
        self.tok_embeddings = nn.Embedding(*state["tok_embeddings.weight"].shape)
        self.layers = nn.ModuleList(MetaBlock(state, f"layers.{i}.", self.n_heads, self.n_kv_heads, self.eps)
                                    for i in range(n))
        self.norm = RMSNorm(state["norm.weight"], self.eps)
        self.output = _linear(state["output.weight"])
        nn.Module.load_state_dict(self, {k: v.float() for k, v in state.items()})
        return _Loaded([], [])

    @staticmethod
    def rotary(x, freqs):  # x: b, s, heads, head_dim; pairs (0,1), (2,3), ... rotate together
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs[None, :, None, :]).flatten(3)

    def forward(self, tokens):
        tokens = tokens.long()
        h = self.tok_embeddings(tokens)
        s = tokens.shape[1]
        hd = self.layers[0].attention.wq.out_features // self.n_heads if len(self.layers) else 2
        inv = 1.0 / (self.theta ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
        freqs = torch.polar(torch.ones(s, hd // 2), torch.outer(torch.arange(s).float(), inv))
        for layer in self.layers:
            h = layer(h, freqs)
        return self.output(self.norm(h))


def _config(weights: str, name: str) -> dict:
    path = os.path.join(checkpoint_dir(weights), name)
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


# the checkpoint names transformers' from_pretrained loads first from a folder
TRANSFORMERS_NAMES = ("model.safetensors", "model.safetensors.index.json")


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
        if (missing or result.unexpected_keys) and (os.path.isdir(self.weights) or os.path.basename(
                self.weights) in TRANSFORMERS_NAMES):
            # a layout transformers converts when loading (Mixtral's per-expert weights): its own loader, on the
            # folder whose checkpoint (one file or shards) is the one given
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # its bar would interleave with the report
                    self.model, info = self.model_class.from_pretrained(checkpoint_dir(self.weights),
                                                                       output_loading_info=True)
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                raise MapspecError(f"{self.weights}: transformers cannot load this checkpoint: "
                                   f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
            return _Loaded([k for k in info["missing_keys"] if k not in tied], list(info["unexpected_keys"]))
        return _Loaded(missing, list(result.unexpected_keys))

    def forward(self, tokens):
        return self.model(tokens.long()).logits


class NanoAttention(nn.Module):
    def __init__(self, state: dict, p: str, n_head: int):
        super().__init__()
        self.c_attn = _linear(state[p + "c_attn.weight"], bias=True)
        self.c_proj = _linear(state[p + "c_proj.weight"], bias=True)
        self.n_head = n_head

    def forward(self, x):
        b, s, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (t.view(b, s, self.n_head, c // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, s, c))


class NanoMLP(nn.Module):
    def __init__(self, state: dict, p: str):
        super().__init__()
        self.c_fc = _linear(state[p + "c_fc.weight"], bias=True)
        self.c_proj = _linear(state[p + "c_proj.weight"], bias=True)

    def forward(self, x):
        return self.c_proj(torch.nn.functional.gelu(self.c_fc(x)))


class NanoBlock(nn.Module):
    def __init__(self, state: dict, p: str, n_head: int, eps: float):
        super().__init__()
        c = state[p + "ln_1.weight"].shape[0]
        self.ln_1, self.ln_2 = nn.LayerNorm(c, eps=eps), nn.LayerNorm(c, eps=eps)
        self.attn = NanoAttention(state, p + "attn.", n_head)
        self.mlp = NanoMLP(state, p + "mlp.")

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """Karpathy's nanoGPT model.py forward (pre-norm blocks, nn.Linear layers, exact GELU) as modules named like
    its state dict (transformer.wte, transformer.h.N.attn.c_attn, ...); sizes from the checkpoint's tensors."""

    def __init__(self, n_head: int, eps: float = 1e-5):
        super().__init__()
        self.n_head, self.eps = n_head, eps

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        n = _layers(state, "transformer.h.")
        want = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
                "lm_head.weight"] + [f"transformer.h.{i}.{m}.{p}" for i in range(n) for m in (
                    "ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj") for p in ("weight", "bias")]
        missing = [k for k in want if k not in state]
        unexpected = [k for k in state if k not in want and not k.endswith(".attn.bias")]
        if missing or unexpected:
            return _Loaded(missing, unexpected)
        c = state["transformer.ln_f.weight"].shape[0]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(*state["transformer.wte.weight"].shape),
            wpe=nn.Embedding(*state["transformer.wpe.weight"].shape),
            h=nn.ModuleList(NanoBlock(state, f"transformer.h.{i}.", self.n_head, self.eps) for i in range(n)),
            ln_f=nn.LayerNorm(c, eps=self.eps)))
        self.lm_head = _linear(state["lm_head.weight"])
        nn.Module.load_state_dict(self, {k: state[k].float() for k in want})
        return _Loaded([], [])

    def forward(self, tokens):
        tokens = tokens.long()
        t = self.transformer
        x = t.wte(tokens) + t.wpe(torch.arange(tokens.shape[1]))
        for block in t.h:
            x = block(x)
        return self.lm_head(t.ln_f(x))


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
