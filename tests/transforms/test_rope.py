"""rope_permute against the reshape/transpose form of transformers' Llama converter and against transformers'
own rotary code (apply_rotary_pos_emb on HF-layout heads vs Meta's complex rotation of adjacent pairs)."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import TRANSFORMS, Meta, TransformError

rope = TRANSFORMS["rope_permute"]


def converter_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """convert_llama_weights_to_hf.py: w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)."""
    dim1 = w.shape[0]
    rest = w.shape[1:]
    return w.reshape((n_heads, dim1 // n_heads // 2, 2) + rest).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("heads,head_dim,cols", [(1, 2, 3), (4, 8, 5), (2, 16, 1), (8, 4, 7), (3, 6, 0)])
def test_to_hf_is_the_converters_permute_and_to_meta_its_inverse(heads, head_dim, cols):
    shape = (heads * head_dim, cols) if cols else (heads * head_dim,)
    w = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    hf = rope.kernel(w, heads=heads, to="hf")
    np.testing.assert_array_equal(hf, converter_permute(w, heads))
    back = rope.kernel(hf, heads=heads, to="meta")
    assert back.tobytes() == w.tobytes()
    assert rope.kernel(rope.kernel(w, heads=heads, to="meta"), heads=heads, to="hf").tobytes() == w.tobytes()
    assert rope.infer(Meta(shape, "float32"), heads=heads, to="hf") == Meta(shape, "float32")
    if head_dim > 2:  # a real reordering, not the identity
        assert not np.array_equal(hf, w)


def test_rows_must_be_heads_of_an_even_size():
    with pytest.raises(TransformError, match="6 rows are not 4 heads of an even head size"):
        rope.infer(Meta((6, 2), "float32"), heads=4, to="hf")
    with pytest.raises(TransformError, match="heads must be at least 1"):
        rope.infer(Meta((6, 2), "float32"), heads=0, to="hf")


def test_matches_transformers_rotary_code():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    heads, kv_heads, hd, dim, seq = 4, 2, 8, 32, 5
    cfg = LlamaConfig(hidden_size=dim, num_attention_heads=heads, num_key_value_heads=kv_heads)
    g = torch.Generator().manual_seed(0)
    wq_meta = torch.randn(heads * hd, dim, generator=g)
    wk_meta = torch.randn(kv_heads * hd, dim, generator=g)
    x = torch.randn(1, seq, dim, generator=g)

    def meta_rotary(t, n):  # Meta's model.py: adjacent pairs as complex numbers
        t = t.view(1, seq, n, hd)
        inv = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
        freqs = torch.polar(torch.ones(seq, hd // 2), torch.outer(torch.arange(seq).float(), inv))
        tc = torch.view_as_complex(t.reshape(1, seq, n, hd // 2, 2))
        return torch.view_as_real(tc * freqs[None, :, None, :]).flatten(3)  # 1, seq, n, hd

    rot = LlamaRotaryEmbedding(cfg)
    pos = torch.arange(seq)[None]
    cos, sin = rot(x, pos)
    wq_hf = torch.from_numpy(rope.kernel(wq_meta.numpy(), heads=heads, to="hf"))
    wk_hf = torch.from_numpy(rope.kernel(wk_meta.numpy(), heads=kv_heads, to="hf"))
    q_hf = (x @ wq_hf.T).view(1, seq, heads, hd).transpose(1, 2)
    k_hf = (x @ wk_hf.T).view(1, seq, kv_heads, hd).transpose(1, 2)
    q_hf, k_hf = apply_rotary_pos_emb(q_hf, k_hf, cos, sin)
    q_meta, k_meta = meta_rotary(x @ wq_meta.T, heads), meta_rotary(x @ wk_meta.T, kv_heads)
    # the same features, in HF's order within each head
    for got, ref, n in ((q_hf, q_meta, heads), (k_hf, k_meta, kv_heads)):
        ref_hf = torch.from_numpy(rope.kernel(ref[0].reshape(seq, n * hd).T.numpy().copy(), heads=n, to="hf"))
        np.testing.assert_allclose(got[0].transpose(0, 1).reshape(seq, n * hd).numpy(), ref_hf.T.numpy(),
                                   rtol=1e-5, atol=1e-5)
    # the wrong head count (q's for k) gives different features
    wrong = torch.from_numpy(rope.kernel(wk_meta.numpy(), heads=1, to="hf"))
    k_wrong = (x @ wrong.T).view(1, seq, kv_heads, hd).transpose(1, 2)
    assert not torch.allclose(apply_rotary_pos_emb(q_hf, k_wrong, cos, sin)[1], k_hf, atol=1e-3)


def test_property_inverse_pair_on_random_layouts():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 6), st.integers(1, 5), st.lists(st.integers(1, 4), max_size=2), st.sampled_from(["hf", "meta"]))
    def check(heads, half, rest, to):
        shape = (heads * half * 2, *rest)
        w = np.random.default_rng(heads * 31 + half).standard_normal(shape).astype(np.float32)
        other = "meta" if to == "hf" else "hf"
        once = rope.kernel(w, heads=heads, to=to)
        assert rope.kernel(once, heads=heads, to=other).tobytes() == w.tobytes()
        if to == "hf":
            np.testing.assert_array_equal(once, converter_permute(w, heads))
        else:  # meta: the converter's permute undoes it
            np.testing.assert_array_equal(converter_permute(once, heads), w)

    check()
