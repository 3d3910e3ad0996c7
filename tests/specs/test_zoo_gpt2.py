"""gpt2/hf-to-gguf and gpt2/gguf-to-hf on a tiny random GPT2LMHeadModel (transformers' own classes, random
weights and layer norms; tied lm_head as GPT-2 has it): the GGUF equals llama.cpp's converter's key for key and
tensor for tensor (tokenizer included: the tiny BPE tokenizer is named llama-bpe to both), real llama.cpp runs
it and gives transformers' logits, and GGUF -> HF gives back the saved weights bit for bit."""

from __future__ import annotations

import json

import numpy as np

import pytest

import zoo_util as Z

pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2")
    # n_embd 64 / 4 heads; n_inner null (GPT-2's own: 4 x n_embd); layer_norm_epsilon not the default
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, layer_norm_epsilon=1e-4,
                                  **Z.SPECIAL)
    path = Z.folder(root / "tiny-gpt2", cfg, "GPT2LMHeadModel")
    return root, path, Z.ours(path, "gpt2/hf-to-gguf", root / "ours.gguf")


@pytest.mark.slow
def test_equals_llama_cpp_converter(model):
    root, path, ours = model
    # the converter reads n_ctx, which transformers 5 no longer writes (the hub's GPT-2 configs have it, equal to
    # n_positions): given to it as the hub's configs hold it
    cfg = json.loads((path / "config.json").read_text())
    assert "n_ctx" not in cfg
    meta = Z.assert_same_gguf(ours, Z.theirs(path, root / "theirs.gguf", hparams={"n_ctx": cfg["n_positions"]}))
    assert meta["gpt2.feed_forward_length"][1] == 256 and meta["tokenizer.ggml.model"][1] == "gpt2"


@pytest.mark.slow
def test_llama_cpp_gives_transformers_logits(model):
    """Within 5e-5 of transformers' logits once its GELU reads through float16 as ggml's table does (with
    float32's GELU ~1.2e-4 apart, the table's rounding alone; what remains, ~2e-5, is inputs that float32 sums
    in another order put on the other side of a float16 step)."""
    _, path, ours = model

    def ggml_gelu(m):
        for block in m.transformer.h:
            block.mlp.act = Z.Fp16Gelu("tanh")          # GPT-2's gelu_new is the tanh form

    Z.assert_llama_cpp_gives_transformers_logits(path, ours, rtol=5e-5, adjust=ggml_gelu)


def test_gguf_to_hf_gives_the_weights_back(model, tmp_path):
    _, path, ours = model
    Z.assert_round_trip(path, ours, "gpt2/gguf-to-hf", tmp_path / "back.safetensors")


@pytest.mark.parametrize("change, key", [({"n_ctx": 64}, "n_ctx"),                  # two context lengths
                                         ({"activation_function": "gelu"}, "activation_function")])  # exact GELU
def test_config_llama_cpp_would_run_otherwise_is_refused(model, tmp_path, change, key):
    import shutil

    _, path, _ = model
    d = tmp_path / "m"
    shutil.copytree(path, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **change}))
    code, _, err = Z.run("apply", "gpt2/hf-to-gguf", "-s", d, "-o", tmp_path / "x.gguf", "-q",
                         "--tokenizer-pre", "llama-bpe")
    assert code == 1 and key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
def test_n_inner_is_the_feed_forward_length_llama_cpp_runs(tmp_path):
    """A GPT-2 whose config sets n_inner (not 4 x n_embd): feed_forward_length is n_inner, so llama.cpp loads
    the file (it checks ffn_up against that key) and gives transformers' logits.  llama.cpp's converter writes
    4 x n_embd whatever n_inner says: a file llama.cpp refuses to load."""
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, n_inner=96, **Z.SPECIAL)
    path = Z.folder(tmp_path / "tiny-gpt2-inner", cfg, "GPT2LMHeadModel")
    ours = Z.ours(path, "gpt2/hf-to-gguf", tmp_path / "ours.gguf")
    import gguf

    assert gguf.GGUFReader(str(ours)).fields["gpt2.feed_forward_length"].contents() == 96

    def ggml_gelu(m):
        for block in m.transformer.h:
            block.mlp.act = Z.Fp16Gelu("tanh")

    Z.assert_llama_cpp_gives_transformers_logits(path, ours, rtol=5e-5, adjust=ggml_gelu)


def test_bare_gpt2model_layout_gives_the_same_file(model, tmp_path):
    """The original hub checkpoints (openai-community/gpt2) hold GPT2Model's names (h.N..., wte, no
    transformer. prefix): the same GGUF as GPT2LMHeadModel's names."""
    import shutil

    from safetensors.numpy import load_file, save_file

    root, path, ours = model
    d = tmp_path / path.name
    shutil.copytree(path, d)
    state = load_file(str(d / "model.safetensors"))
    assert all(k.startswith("transformer.") for k in state)
    save_file({k[len("transformer."):]: v for k, v in state.items()}, str(d / "model.safetensors"),
              metadata={"format": "pt"})
    Z.assert_same_gguf(Z.ours(d, "gpt2/hf-to-gguf", tmp_path / "bare.gguf"), ours)


@pytest.mark.slow
def test_gguf_to_hf_folder_loads_in_transformers(model, tmp_path):
    """-o DIR/: config.json and the tokenizer files beside the weights; transformers' from_pretrained loads the
    model (the original's logits, exactly) and the tokenizer (the original's ids)."""
    import torch

    _, path, ours = model
    out = tmp_path / "back"
    code, _, err = Z.run("apply", "gpt2/gguf-to-hf", "-s", ours, "-o", f"{out}/", "-q")
    assert code == 0, err
    ids = transformers.AutoTokenizer.from_pretrained(path).encode(Z.TEXT)
    assert transformers.AutoTokenizer.from_pretrained(out).encode(Z.TEXT) == ids
    a = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    b = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(b) is type(a) and b.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(a(torch.tensor([ids])).logits, b(torch.tensor([ids])).logits)


@pytest.mark.slow
def test_bfloat16_checkpoint_round_trip(tmp_path):
    """A bfloat16 GPT-2 (its config says so): HF -> GGUF (norms and biases stored F32, as llama.cpp wants
    them) -> HF with --outtype auto gives the saved file back bit for bit, bfloat16 throughout."""
    import torch

    from mapspec.formats import open_checkpoint

    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **Z.SPECIAL)
    path = Z.folder(tmp_path / "tiny-gpt2-bf16", cfg, "GPT2LMHeadModel")
    transformers.GPT2LMHeadModel.from_pretrained(path, dtype=torch.bfloat16).save_pretrained(path)
    ours = Z.ours(path, "gpt2/hf-to-gguf", tmp_path / "ours.gguf")
    import gguf

    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(ours)).tensors}
    assert kinds["blk.0.attn_norm.bias"] == "F32" and kinds["blk.0.attn_qkv.weight"] == "BF16"
    back = tmp_path / "back.safetensors"
    code, _, err = Z.run("apply", "gpt2/gguf-to-hf", "-s", ours, "-o", back, "-q", "--outtype", "auto")
    assert code == 0, err
    with open_checkpoint(str(path / "model.safetensors")) as a, open_checkpoint(str(back)) as b:
        assert sorted(a.names()) == sorted(b.names())
        for k in a.names():
            x, y = a.read(k), b.read(k)
            assert str(x.dtype) == str(y.dtype) == "bfloat16" and x.shape == y.shape, k
            assert np.array_equal(x.view(np.uint16), y.view(np.uint16)), k
