"""dequantize: ggml block layouts checked against gguf-py's own dequantize (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import TRANSFORMS, Meta, TransformError
from mapspec.transforms.dequantize import dequantize

from gguf_util import QUANTS, random_blocks

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("qtype", list(QUANTS))
def test_dequantize_matches_gguf_py(qtype):
    raw = random_blocks(qtype, 4, 3, seed=7)
    want = gguf.quants.dequantize(raw, Q[qtype])
    got = dequantize(raw, qtype)
    assert got.dtype == np.float32 and got.shape == want.shape == (4, 3 * QUANTS[qtype][0])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_dequantize_of_gguf_py_quantization(qtype):
    x = (np.arange(4 * 64, dtype=np.float32).reshape(4, 64) - 100) / 37
    raw = gguf.quants.quantize(x, Q[qtype])
    assert np.array_equal(dequantize(raw, qtype), gguf.quants.dequantize(raw, Q[qtype]))
    assert np.abs(dequantize(raw, qtype) - x).max() < (0.05 if qtype == "Q8_0" else 0.5)


def test_infer_shape_and_refusals():
    infer = TRANSFORMS["dequantize"].infer
    assert infer(Meta((4, 2 * 210), "uint8"), type="Q6_K") == Meta((4, 512), "float32")
    with pytest.raises(TransformError, match="whole 34-byte blocks"):
        infer(Meta((4, 35), "uint8"), type="Q8_0")
    with pytest.raises(TransformError, match="uint8"):
        infer(Meta((4, 34), "float32"), type="Q8_0")
    with pytest.raises(TransformError):
        dequantize(np.zeros((2, 35), np.uint8), "Q8_0")


# -- property: raw blocks through random transform chains (mapspec/rawblocks.py) ------------------

from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mapspec.errors import SpecError  # noqa: E402

_CHAIN = ["{cast: float32}", "{cast: float16}", "{mul: 2}", "{add: {by: f}}", "{reshape: [-1]}",
          "{transpose: [1, 0]}", "{reverse: 0}", "{take: {indices: [0], axis: 0}}",
          "{slice: {axis: 0, start: 0, stop: 1}}", "{concat: {after: [f], axis: 0}}"]


@settings(max_examples=40, deadline=None)
@given(qtype=st.sampled_from(list(QUANTS)), first=st.sampled_from(list(QUANTS) + [None]),
       chain=st.lists(st.sampled_from(_CHAIN), max_size=3), target=st.sampled_from(["gguf", "safetensors", "npz"]))
def test_random_chains_on_raw_blocks(tmp_path_factory, qtype, first, chain, target):
    """Raw blocks reach values only through a first `dequantize` of their own type, and reach a file as blocks only
    by a plain rename into GGUF; everything else is refused in plan, naming the tensor and its type."""
    import mapspec

    d = tmp_path_factory.mktemp("chain")
    raw = random_blocks(qtype, 2, 1, seed=len(chain))
    per = QUANTS[qtype][0]
    w = gguf.GGUFWriter(str(d / "q.gguf"), "llama")
    w.add_tensor("w", raw, raw_dtype=Q[qtype])
    w.add_tensor("f", np.arange(2 * per, dtype=np.float32).reshape(2, per) / 64)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    calls = ([f"{{dequantize: {first}}}"] if first else []) + chain
    (d / "s.yaml").write_text(f"mapspec: 1\nsource: {{format: gguf}}\ntarget: {{format: {target}}}\nrules:\n"
                              f"  - {{from: w, to: w, apply: [{', '.join(calls)}]}}\n  - {{from: f, to: f}}\n")
    try:
        p = mapspec.plan(str(d / "s.yaml"), str(d / "q.gguf"), target_format=target)
    except SpecError:  # a chain wrong whatever the tensor (a transpose after a flattening reshape)
        assume(False)
    text = "\n".join(map(str, p.errors))
    if first is None and (chain or target != "gguf"):
        assert f"raw {qtype} blocks" in text and "'w'" in text and f"dequantize: {qtype}" in text, text
    elif first is not None and first != qtype:
        assert f"stores this tensor as {qtype} blocks, not {first}" in text, text
    else:
        assert "raw " not in text and "blocks" not in text, text
    if p.ok and first == qtype and not chain:
        out = d / f"o.{target}"
        mapspec.apply(str(d / "s.yaml"), str(d / "q.gguf"), str(out))
        from mapspec.formats import open_checkpoint

        with open_checkpoint(str(out)) as r:
            assert np.array_equal(r.read("w"), gguf.quants.dequantize(raw, Q[qtype]), equal_nan=True)
