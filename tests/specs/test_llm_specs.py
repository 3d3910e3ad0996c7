"""Shipped LLM specs against transformers' own code, on tiny random models built from configs (no downloads).

Each test: config -> random weights -> save -> `mapspec apply` -> compare with what transformers produces or
loads; then the inverse spec, and the round trip must be bit-identical.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import module

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def apply(spec, src, out, *extra):
    code = cli.run(["apply", spec, "-s", str(src), "-o", str(out), *map(str, extra)])
    assert code == 0
    with __import__("mapspec").open_checkpoint(str(out)) as r:
        return {n: torch.from_numpy(np.array(r.read(n))) for n in r.infos()}


def randomized(model, seed=0):
    """Every parameter random (norm weights too), so that a swapped tensor cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.train(False)


def verify(spec, src, converted):
    import io

    out, err = io.StringIO(), io.StringIO()
    code = cli.run(["verify", spec, "-s", str(src), "-c", str(converted)], stdout=out, stderr=err)
    assert code == 0, out.getvalue() + err.getvalue()
    assert "PASS" in out.getvalue()
    return out.getvalue()


def same_bits(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes(), k


# -- Llama: Meta <-> HF ------------------------------------------------------------------

def converter_permute(w, n_heads):
    """transformers' convert_llama_weights_to_hf.py: Meta -> HF rows of q and k."""
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def meta_checkpoint(d, dim=32, layers=2, heads=4, kv_heads=2, vocab=48, hidden=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    hd = dim // heads
    shapes = {"tok_embeddings.weight": (vocab, dim), "norm.weight": (dim,), "output.weight": (vocab, dim)}
    for i in range(layers):
        shapes.update({f"layers.{i}.attention.wq.weight": (heads * hd, dim),
                       f"layers.{i}.attention.wk.weight": (kv_heads * hd, dim),
                       f"layers.{i}.attention.wv.weight": (kv_heads * hd, dim),
                       f"layers.{i}.attention.wo.weight": (dim, heads * hd),
                       f"layers.{i}.feed_forward.w1.weight": (hidden, dim),
                       f"layers.{i}.feed_forward.w2.weight": (dim, hidden),
                       f"layers.{i}.feed_forward.w3.weight": (hidden, dim),
                       f"layers.{i}.attention_norm.weight": (dim,), f"layers.{i}.ffn_norm.weight": (dim,)})
    sd = {k: torch.randn(s, generator=g) * 0.3 for k, s in shapes.items()}
    d.mkdir(exist_ok=True)
    torch.save(sd, d / "consolidated.00.pth")
    (d / "params.json").write_text(json.dumps({"dim": dim, "n_layers": layers, "n_heads": heads,
                                               "n_kv_heads": kv_heads, "vocab_size": vocab, "norm_eps": 1e-5}))
    return sd


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_llama_meta_to_hf_loads_into_transformers_and_matches_meta_forward(tmp_path, kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mapspec.models.llm import MetaLlama

    meta = meta_checkpoint(tmp_path / "meta", kv_heads=kv_heads)
    if kv_heads == 4:  # an old params.json without n_kv_heads means n_kv_heads = n_heads
        p = json.loads((tmp_path / "meta" / "params.json").read_text())
        del p["n_kv_heads"]
        (tmp_path / "meta" / "params.json").write_text(json.dumps(p))
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    hf = apply("llama/meta-to-hf", tmp_path / "meta" / "consolidated.00.pth", hf_dir / "model.safetensors")
    for i in range(2):
        assert torch.equal(hf[f"model.layers.{i}.self_attn.q_proj.weight"],
                           converter_permute(meta[f"layers.{i}.attention.wq.weight"], 4))
        assert torch.equal(hf[f"model.layers.{i}.self_attn.k_proj.weight"],
                           converter_permute(meta[f"layers.{i}.attention.wk.weight"], kv_heads))
    cfg = LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, rms_norm_eps=1e-5,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(hf, strict=True)
    model.train(False)
    ref = MetaLlama(4, kv_heads, 1e-5)
    assert not ref.load_state_dict(meta).missing_keys
    tokens = torch.tensor([[3, 17, 0, 45, 9, 22, 31, 8]])
    with torch.no_grad():
        want = ref(tokens)
        got = model(tokens).logits
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    # and back: config.json beside the HF checkpoint gives the head counts
    cfg.save_pretrained(hf_dir)
    verify("llama/meta-to-hf", tmp_path / "meta" / "consolidated.00.pth", hf_dir / "model.safetensors")
    back = apply("llama/hf-to-meta", hf_dir / "model.safetensors", tmp_path / "back.pth")
    same_bits(back, meta)


def test_llama_hf_to_meta_from_a_transformers_model_with_tied_embeddings(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mapspec.models.llm import MetaLlama

    cfg = LlamaConfig(vocab_size=40, hidden_size=48, intermediate_size=24, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=3, rms_norm_eps=1e-6, tie_word_embeddings=True)
    model = randomized(LlamaForCausalLM(cfg))
    model.save_pretrained(tmp_path / "hf")  # transformers' own files: model.safetensors + config.json
    meta = apply("llama/hf-to-meta", tmp_path / "hf" / "model.safetensors", tmp_path / "consolidated.00.pth")
    assert torch.equal(meta["output.weight"], meta["tok_embeddings.weight"])
    ref = MetaLlama(6, 3, 1e-6)
    assert not ref.load_state_dict(meta).missing_keys
    tokens = torch.tensor([[1, 39, 7, 7, 20, 0]])
    with torch.no_grad():
        np.testing.assert_allclose(ref(tokens).numpy(), model(tokens).logits.numpy(), rtol=1e-4, atol=1e-5)
    (tmp_path / "params.json").write_text(json.dumps({"n_heads": 6, "n_kv_heads": 3, "norm_eps": 1e-6}))
    verify("llama/hf-to-meta", tmp_path / "hf" / "model.safetensors", tmp_path / "consolidated.00.pth")


def test_llama_without_params_json_names_the_missing_config(tmp_path):
    meta_checkpoint(tmp_path / "meta")
    (tmp_path / "meta" / "params.json").unlink()
    import io

    err = io.StringIO()
    code = cli.run(["plan", "llama/meta-to-hf", "-s", str(tmp_path / "meta" / "consolidated.00.pth")],
                   stdout=io.StringIO(), stderr=err)
    assert code == 1
    assert "no config file (params.json) beside the source, so no value for n_heads (from n_heads)" in err.getvalue()


# -- Mixtral: per-expert <-> fused ------------------------------------------------------------

def mixtral(tmp_path, experts=4, layers=2):
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(vocab_size=40, hidden_size=16, intermediate_size=12, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=experts,
                        num_experts_per_tok=2)
    model = randomized(MixtralForCausalLM(cfg))
    model.save_pretrained(tmp_path / "legacy")  # transformers 5 writes the per-expert layout
    fused = {k: v.detach().clone() for k, v in model.state_dict().items()}  # its in-memory fused layout
    module("safetensors").save(tmp_path / "fused.safetensors", {k: v.numpy() for k, v in fused.items()})
    return model, fused


def test_mixtral_per_expert_to_fused_is_what_transformers_loads(tmp_path):
    from safetensors.torch import load_file

    model, fused = mixtral(tmp_path)
    assert any(".block_sparse_moe.experts.3.w3.weight" in k for k in load_file(tmp_path / "legacy" / "model.safetensors"))
    got = apply("mixtral/per-expert-to-fused", tmp_path / "legacy" / "model.safetensors", tmp_path / "f.safetensors")
    same_bits(got, fused)
    model.config.save_pretrained(tmp_path)
    verify("mixtral/per-expert-to-fused", tmp_path / "legacy" / "model.safetensors", tmp_path / "f.safetensors")


def test_mixtral_sharded_per_expert_to_fused_verifies_from_folders_and_index_files(tmp_path):
    """A sharded Mixtral as transformers saves it (shards + model.safetensors.index.json, config.json in the
    folder), converted to a sharded folder: verify takes either side as the folder or as its index file."""
    model, _ = mixtral(tmp_path)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    out = tmp_path / "fused"
    assert cli.run(["apply", "mixtral/per-expert-to-fused", "-s", str(tmp_path / "sharded"), "-o", f"{out}/",
                    "--max-shard-size", "20KB", "-q"]) == 0
    assert (out / "model.safetensors.index.json").is_file()
    (out / "config.json").write_text((tmp_path / "sharded" / "config.json").read_text())
    for s in (tmp_path / "sharded", tmp_path / "sharded" / "model.safetensors.index.json"):
        for c in (out, out / "model.safetensors.index.json"):
            verify("mixtral/per-expert-to-fused", s, c)


def test_mixtral_fused_to_per_expert_is_what_transformers_saves_and_round_trips(tmp_path):
    from safetensors.torch import load_file

    _, fused = mixtral(tmp_path, experts=3, layers=3)
    legacy = load_file(tmp_path / "legacy" / "model.safetensors")
    (tmp_path / "out").mkdir()
    got = apply("mixtral/fused-to-per-expert", tmp_path / "fused.safetensors", tmp_path / "out" / "model.safetensors")
    same_bits(got, legacy)
    (tmp_path / "legacy" / "config.json").rename(tmp_path / "config.json")  # beside fused.safetensors
    (tmp_path / "out" / "config.json").write_text((tmp_path / "config.json").read_text())
    verify("mixtral/fused-to-per-expert", tmp_path / "fused.safetensors", tmp_path / "out" / "model.safetensors")
    (tmp_path / "out" / "model.safetensors").rename(tmp_path / "l.safetensors")
    again = apply("mixtral/per-expert-to-fused", tmp_path / "l.safetensors", tmp_path / "f2.safetensors")
    same_bits(again, fused)


def test_mixtral_missing_expert_is_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    mixtral(tmp_path)
    legacy = load_file(tmp_path / "legacy" / "model.safetensors")
    for k in [k for k in legacy if ".experts.2." in k and "layers.1." in k]:
        del legacy[k]
    save_file(legacy, tmp_path / "gap.safetensors")
    import io

    err = io.StringIO()
    code = cli.run(["apply", "mixtral/per-expert-to-fused", "-s", str(tmp_path / "gap.safetensors"), "-o",
                    str(tmp_path / "x.safetensors")], stdout=io.StringIO(), stderr=err)
    assert code == 1 and not (tmp_path / "x.safetensors").exists()
    assert "stack over 'e' for i=1: the matches must number e=0..N-1, but e=2 is missing" in err.getvalue()


# -- GPT-2: HF (both layouts) <-> nanoGPT ---------------------------------------------------------

NANOGPT_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def test_gpt2_both_hf_layouts_to_nanogpt_and_back_into_transformers(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=40, n_positions=16, n_embd=24, n_layer=2, n_head=4)
    model = randomized(GPT2LMHeadModel(cfg))
    model.save_pretrained(tmp_path / "hf")  # transformer.-prefixed, tied lm_head left out
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bare = {k: v.detach().clone() for k, v in model.transformer.state_dict().items()}  # GPT2Model: h.0..., wte
    bare["h.0.attn.masked_bias"] = torch.tensor(-1e4)  # a buffer of old checkpoints
    module("safetensors").save(tmp_path / "bare.safetensors", {k: v.numpy() for k, v in bare.items()})
    nano = apply("gpt2/hf-to-nanogpt", tmp_path / "hf" / "model.safetensors", tmp_path / "nano.pt")
    nano_bare = apply("gpt2/hf-to-nanogpt", tmp_path / "bare.safetensors", tmp_path / "nano_bare.pt")
    same_bits(nano, nano_bare)
    # nanoGPT's from_pretrained: the four Conv1D weights transposed, everything else as is, lm_head = wte
    assert sorted(nano) == sorted(sd)
    for k, v in sd.items():
        want = v.t() if k.endswith(NANOGPT_TRANSPOSED) else v
        assert torch.equal(nano[k], want), k
    cfg.save_pretrained(tmp_path)  # nanoGPT keeps its sizes in the training checkpoint; verify reads config.json
    verify("gpt2/hf-to-nanogpt", tmp_path / "hf" / "model.safetensors", tmp_path / "nano.pt")
    back = apply("gpt2/nanogpt-to-hf", tmp_path / "nano.pt", tmp_path / "back.safetensors")
    same_bits(back, sd)
    verify("gpt2/nanogpt-to-hf", tmp_path / "nano.pt", tmp_path / "back.safetensors")
    again = GPT2LMHeadModel(cfg)
    again.load_state_dict(back, strict=True)
    tokens = torch.tensor([[1, 5, 39, 0, 12]])
    with torch.no_grad():
        assert torch.equal(again.train(False)(tokens).logits, model(tokens).logits)


# -- GPT-NeoX: fused qkv <-> split --------------------------------------------------------------------

def test_gpt_neox_fused_qkv_split_per_head_and_back(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    heads, hidden = 4, 32
    cfg = GPTNeoXConfig(vocab_size=40, hidden_size=hidden, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=heads)
    model = randomized(GPTNeoXForCausalLM(cfg))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    (tmp_path / "fused").mkdir()
    module("safetensors").save(tmp_path / "fused" / "model.safetensors", {k: v.numpy() for k, v in sd.items()})
    cfg.save_pretrained(tmp_path / "fused")
    split = apply("gpt-neox/fused-qkv-to-split", tmp_path / "fused" / "model.safetensors",
                  tmp_path / "split.safetensors")
    hd = hidden // heads
    for i in range(2):  # transformers: qkv.view(..., heads, 3 * head_size).chunk(3, dim=-1)
        w = sd[f"gpt_neox.layers.{i}.attention.query_key_value.weight"].view(heads, 3 * hd, hidden)
        bias = sd[f"gpt_neox.layers.{i}.attention.query_key_value.bias"].view(heads, 3 * hd)
        for j, name in enumerate(("query", "key", "value")):
            assert torch.equal(split[f"gpt_neox.layers.{i}.attention.{name}.weight"],
                               w.chunk(3, dim=1)[j].reshape(hidden, hidden))
            assert torch.equal(split[f"gpt_neox.layers.{i}.attention.{name}.bias"],
                               bias.chunk(3, dim=1)[j].reshape(hidden))
    (tmp_path / "s").mkdir()
    (tmp_path / "split.safetensors").rename(tmp_path / "s" / "model.safetensors")
    cfg.save_pretrained(tmp_path / "s")
    verify("gpt-neox/fused-qkv-to-split", tmp_path / "fused" / "model.safetensors", tmp_path / "s" / "model.safetensors")
    back = apply("gpt-neox/split-to-fused-qkv", tmp_path / "s" / "model.safetensors", tmp_path / "back.safetensors")
    same_bits(back, sd)
