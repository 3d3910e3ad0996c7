"""Tiny random models of the families the shipped GGUF specs convert, built offline from transformers' own
config and model classes (random weights and random norms, saved with save_pretrained as transformers 5
writes them), with a tokenizer from llm_fixtures beside them.  One entry per family in FAMILIES; copy the
nearest one to add the next."""

from __future__ import annotations

import hashlib
import json
import os

import llm_fixtures as F

# the shape every tiny model shares (each family adds or overrides its own keys)
SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256, rms_norm_eps=1e-5)
SP = dict(tokenizer=F.sentencepiece_tokenizer, vocab_size=330, bos_token_id=1, eos_token_id=2)
BPE = dict(tokenizer=F.bpe_tokenizer, vocab_size=304, bos_token_id=298, eos_token_id=299, pre="llama-bpe")


def qwen2_tokenizer(folder, vocab_size: int = 300) -> None:
    """A Qwen2-style tokenizer: byte-level BPE learned here with Qwen2's split pattern, then built and saved by
    transformers' own Qwen2Tokenizer (its pre-tokenizer, NFC, <|endoftext|> as eos/pad/unk after the learned
    tokens), as a Qwen2/Qwen3 folder holds it (transformers 5 loads that class for these model types anyway)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(F.TEXT, trainer)
    model = json.loads(tk.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tok.chat_template = F.CHAT_TEMPLATE
    os.makedirs(folder, exist_ok=True)
    tok.save_pretrained(folder)


def gpt2_tokenizer(folder, vocab_size: int = 300) -> None:
    """A GPT-2-style tokenizer: byte-level BPE learned here, built and saved by transformers' own GPT2Tokenizer
    (its pre-tokenizer, <|endoftext|> after the learned tokens as bos/eos/unk)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Tokenizer

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(F.TEXT, trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tk.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = GPT2Tokenizer(vocab=model["vocab"], merges=merges)
    tok.chat_template = F.CHAT_TEMPLATE
    os.makedirs(folder, exist_ok=True)
    tok.save_pretrained(folder)


QWEN = dict(tokenizer=qwen2_tokenizer, vocab_size=304, bos_token_id=299, eos_token_id=299, pre="qwen2")

# refuse: a config.json change llama.cpp could not run right, and the var the refusal names; folder_refused: what
# the refusal of gguf-to-hf -o DIR/ names (the folder's config.json could not carry it)
# family -> the HF class, the spec folder the picker must choose HF -> GGUF (and GGUF -> HF: back, if another),
# the GGUF architecture, the model's config; back_cls: the class a gguf-to-hf folder loads as, if not cls
FAMILIES = {
    "mistral": dict(cls="MistralForCausalLM", arch="llama", spec="llama", **SP, back_cls="LlamaForCausalLM",
                    config=dict(SMALL, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                                sliding_window=None)),
    # Mistral-Nemo: head_dim is not hidden_size / heads
    "mistral-nemo": dict(cls="MistralForCausalLM", arch="llama", spec="llama", **SP, back_cls="LlamaForCausalLM",
                         config=dict(SMALL, head_dim=32, rope_parameters={"rope_type": "default",
                                                                          "rope_theta": 1000000.0})),
    "qwen2": dict(cls="Qwen2ForCausalLM", arch="qwen2", spec="qwen2", **QWEN,
                  refuse=({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e6, "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 64}}, "rope_type"),
                  config=dict(SMALL, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                              tie_word_embeddings=True)),
    # Qwen2.5's long-context setting: YaRN rope scaling (the keys come from llama/hf-to-gguf, the base)
    "qwen2-yarn": dict(cls="Qwen2ForCausalLM", arch="qwen2", spec="qwen2", **QWEN, folder_refused="rope scaling",
                       config=dict(SMALL, rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                                           "original_max_position_embeddings": 64})),
    "qwen3": dict(cls="Qwen3ForCausalLM", arch="qwen3", spec="qwen3", **QWEN,
                  config=dict(SMALL, head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 5e5})),
    # Qwen3-30B-A3B's shape: head_dim not hidden_size / heads, experts renormalised
    "qwen3moe": dict(cls="Qwen3MoeForCausalLM", arch="qwen3moe", spec="qwen3moe", **QWEN,
                     config=dict(SMALL, head_dim=32, moe_intermediate_size=48, num_experts=4, num_experts_per_tok=2,
                                 norm_topk_prob=True, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
                     refuse=({"norm_topk_prob": False}, "norm_topk_prob")),
    # GPT-2 names its sizes n_embd/n_layer/n_head/n_positions; the Hub's configs also carry n_ctx, which
    # llama.cpp's converter reads (transformers 5 no longer writes it): added to config.json as they have it
    "gpt2": dict(cls="GPT2LMHeadModel", arch="gpt2", spec="gpt2", tokenizer=gpt2_tokenizer, vocab_size=304,
                 bos_token_id=299, eos_token_id=299, pre="gpt-2", extra_config=dict(n_ctx=256), rtol=1e-3,
                 refuse=({"activation_function": "relu"}, "activation_function"),
                 config=dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, layer_norm_epsilon=1e-5)),
    # Pythia's shape: partial rotary, parallel residual
    "gptneox": dict(cls="GPTNeoXForCausalLM", arch="gptneox", spec="gptneox", tokenizer=gpt2_tokenizer,
                    vocab_size=304, bos_token_id=299, eos_token_id=299, pre="gpt-2",
                    refuse=({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5,
                                                 "partial_rotary_factor": 0.25}}, "rope_theta"),
                    no_converter="llama.cpp's converter reads hparams['rotary_pct'], which transformers 5 no longer "
                                 "keeps in a GPT-NeoX config (KeyError), even when config.json has it",
                    no_gguf_tokenizer="transformers' GGUF tokenizer converter: 'architecture gptneox is not "
                                      "supported yet'",
                    rtol=1e-3, config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                           num_attention_heads=4, max_position_embeddings=256, layer_norm_eps=1e-5,
                                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                            "partial_rotary_factor": 0.25})),
    "mixtral": dict(cls="MixtralForCausalLM", arch="llama", spec="mixtral", **SP,
                    config=dict(SMALL, num_local_experts=4, num_experts_per_tok=2,
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
}


def build(family: str, folder, seed: int = 0):
    """The family's tiny model and tokenizer saved in ``folder``; returns the model (float32, eval mode)."""
    import torch
    import transformers

    f = FAMILIES[family]
    model_cls = getattr(transformers, f["cls"])
    torch.manual_seed(seed)
    cfg = model_cls.config_class(vocab_size=f["vocab_size"], bos_token_id=f["bos_token_id"],
                                 eos_token_id=f["eos_token_id"], **f["config"])
    model = model_cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):   # RMSNorm / LayerNorm scales
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    if f.get("extra_config"):
        path = os.path.join(folder, "config.json")
        saved = json.load(open(path, encoding="utf-8"))
        json.dump({**saved, **f["extra_config"]}, open(path, "w", encoding="utf-8"), indent=2)
    f["tokenizer"](folder)
    return model


def chkhsh(folder) -> str:
    """llama.cpp's hash of the folder's tokenizer (the token ids of its check text), as its converter computes it."""
    from transformers import AutoTokenizer

    text = json.load(open(os.path.join(os.path.dirname(__file__), "..", "mapspec", "frameworks",
                                       "gguf", "pretokenizers.json"), encoding="utf-8"))["check_text"]
    return hashlib.sha256(str(AutoTokenizer.from_pretrained(folder).encode(text)).encode()).hexdigest()
