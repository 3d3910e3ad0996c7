"""HF -> HF specs (Mixtral per-expert/fused, GPT-NeoX fused/split) written to a folder (-o DIR/) copy the source
folder's config and tokenizer files, so that transformers' from_pretrained loads the result: same logits as the
original model, same token ids as its tokenizer.  Tiny random models from transformers' own classes."""

from __future__ import annotations

import io

import pytest

import llm_fixtures as F
from mapspec import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TEXT = "Hello world! The quick brown fox."


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def randomized(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def same_logits(original, folder, tokenizer_folder):
    theirs = transformers.AutoTokenizer.from_pretrained(tokenizer_folder)
    ours = transformers.AutoTokenizer.from_pretrained(folder)
    ids = theirs.encode(TEXT)
    assert ours.encode(TEXT) == ids
    ids = [i % original.config.vocab_size for i in ids]
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(loaded(torch.tensor([ids])).logits, original(torch.tensor([ids])).logits)


@pytest.mark.parametrize("shards", [None, "20KB"])
def test_mixtral_per_expert_to_fused_folder_loads(tmp_path, shards):
    cfg = transformers.MixtralConfig(vocab_size=300, hidden_size=16, intermediate_size=12, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                     num_experts_per_tok=2)
    model = randomized(transformers.MixtralForCausalLM(cfg))
    src = tmp_path / "legacy"
    model.save_pretrained(src, **({"max_shard_size": shards} if shards else {}))  # per-expert layout
    F.bpe_tokenizer(src)
    out = tmp_path / "fused"
    code, text, err = run("apply", "mixtral/per-expert-to-fused", "-s", src, "-o", f"{out}/")
    assert code == 0, err
    assert "config.json" in text and "tokenizer.json" in text
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    same_logits(model, out, src)


def test_gpt_neox_split_and_fused_again_folder_loads(tmp_path):
    cfg = transformers.GPTNeoXConfig(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4)
    model = randomized(transformers.GPTNeoXForCausalLM(cfg))
    src = tmp_path / "fused"
    model.save_pretrained(src)
    F.bpe_tokenizer(src)
    split, back = tmp_path / "split", tmp_path / "back"
    code, _, err = run("apply", "gpt-neox/fused-qkv-to-split", "-s", src, "-o", f"{split}/", "-q")
    assert code == 0, err
    # the reverse reads its head count from the config.json the first conversion copied
    code, _, err = run("apply", "gpt-neox/split-to-fused-qkv", "-s", split, "-o", f"{back}/", "-q")
    assert code == 0, err
    same_logits(model, back, src)


def test_missing_config_is_a_warning(tmp_path):
    cfg = transformers.GPTNeoXConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                     num_attention_heads=4)
    model = randomized(transformers.GPTNeoXForCausalLM(cfg))
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "o"
    code, _, err = run("apply", "gpt-neox/fused-qkv-to-split", "-s", tmp_path / "m" / "model.safetensors", "-o",
                       f"{out}/", "--var", "n_heads=4")
    assert code == 0, err
    assert (out / "config.json").exists()
    (tmp_path / "m" / "config.json").unlink()
    code, _, err = run("apply", "gpt-neox/fused-qkv-to-split", "-s", tmp_path / "m" / "model.safetensors", "-o",
                       f"{tmp_path / 'o2'}/", "--var", "n_heads=4")
    assert code == 0, err
    assert "no config.json beside the source" in err
