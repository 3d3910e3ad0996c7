"""The tables llama.cpp's converter reads a Hugging Face tokenizer with, as data (llama.cpp 1fd6dfe9:
``conversion/base.py``, ``conversion/llama.py``, gguf-py's ``constants.py`` and ``vocab.py``).

:mod:`mapspec.formats.gguf_vocab` reads the tokenizer files and writes ``tokenizer.ggml.*`` with them:
the pre-tokenizer table (:data:`TABLE_FILE`), gguf-py's token types, the special-token kinds and their
GGUF keys, and what the converter does differently for some architectures.
"""

from __future__ import annotations

import os

# llama.cpp's pre-tokenizer table (package data beside this module): {"check_text": ..., hash: name}
TABLE_FILE = os.path.join(os.path.dirname(__file__), "pretokenizers.json")

# gguf-py TokenType
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")  # the order the converter reads them in
ID_KEYS = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
           "unk": "tokenizer.ggml.unknown_token_id", "sep": "tokenizer.ggml.seperator_token_id",
           "pad": "tokenizer.ggml.padding_token_id", "mask": "tokenizer.ggml.mask_token_id",
           "eot": "tokenizer.ggml.eot_token_id", "eom": "tokenizer.ggml.eom_token_id"}  # cls: no GGUF key
ADD_KEYS = {"bos": "tokenizer.ggml.add_bos_token", "eos": "tokenizer.ggml.add_eos_token",
            "sep": "tokenizer.ggml.add_sep_token"}  # add_unk/pad/cls/mask: no GGUF key
# What llama.cpp's converter adds for an architecture, by the model's vocab_size (LlamaModel.set_vocab: CodeLlama's
# 32016-token vocabulary ends a fill-in-the-middle turn with token 32010; granite-code's 49152 adds no BOS).
ARCH_QUIRKS = {"llama": {32016: {"tokenizer.ggml.eot_token_id": ("uint32", 32010)},
                         49152: {"tokenizer.ggml.add_bos_token": ("bool", False)}}}
# Architectures whose converter re-reads every token tokenizer.json lists as added, the SentencePiece model's own
# pieces too (<unk> <s> </s>): score -1000, CONTROL if marked special else USER_DEFINED, the text as listed
# (Phi3MiniModel.set_vocab); the others take only those past the pieces, as tokenizer_config.json's list.
ADDED_TOKENS_ALL = frozenset({"phi3"})
# Architectures whose converter class copies tokenizer_config.json's add_prefix_space to
# tokenizer.ggml.add_space_prefix (LlamaModel.set_vocab; Qwen2Model, GPT2Model and the others do not).
ADD_SPACE_PREFIX_ARCHS = ("llama",)
# Added tokens whose text looks like a control token although not marked special (the converter's list).
LOOKS_SPECIAL = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
