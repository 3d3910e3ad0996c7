"""llama.cpp's tokenizer tables, against gguf-py's constants; the pre-tokenizer table ships and reads."""

from __future__ import annotations

import json

import pytest

from mapspec.frameworks.gguf import tokenizer as t

gguf = pytest.importorskip("gguf")


def test_token_types_are_gguf_pys():
    assert (t.NORMAL, t.UNKNOWN, t.CONTROL, t.USER_DEFINED, t.UNUSED, t.BYTE) == tuple(
        gguf.TokenType[n].value for n in ("NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"))


def test_keys_are_gguf_pys():
    k = gguf.Keys.Tokenizer
    assert t.ID_KEYS == {"bos": k.BOS_ID, "eos": k.EOS_ID, "unk": k.UNK_ID, "sep": k.SEP_ID, "pad": k.PAD_ID,
                         "mask": k.MASK_ID, "eot": k.EOT_ID, "eom": k.EOM_ID}
    assert t.ADD_KEYS == {"bos": k.ADD_BOS, "eos": k.ADD_EOS, "sep": k.ADD_SEP}
    assert set(t.ARCH_QUIRKS["llama"][32016]) == {k.EOT_ID} and set(t.ARCH_QUIRKS["llama"][49152]) == {k.ADD_BOS}


def test_pretokenizer_table_is_package_data():
    with open(t.TABLE_FILE, encoding="utf-8") as f:
        table = json.load(f)
    assert isinstance(table["check_text"], str) and table["check_text"]
