"""Hostile input, round 2: no silent numeric corruption.

No transform produces NaN/infinity from finite inputs, wraps an integer or drops a fraction
into an integer tensor unless the spec says ``allow: [...]``; each refusal is one message
naming the rule and the tensor (exit 1), and the spec switch lets it through.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import module, open_checkpoint


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


def _convert(tmp_path, tensors: dict, rules: str, top: str = "", out_name: str = "out.npz"):
    src = tmp_path / "src.npz"
    module("npz").save(str(src), tensors)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"mapspec: 1\n{top}rules:\n{rules}")
    out = tmp_path / out_name
    rc, _, err = _run("apply", spec, "--source", src, "--output", out, "--force")
    values = None
    if rc == 0:
        with open_checkpoint(str(out)) as r:
            values = {n: np.array(r.read(n)) for n in r.names()}
    return rc, err, values


def _refused(rc: int, err: str, *words) -> None:
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mapspec: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


# -- fold_bn ------------------------------------------------------------------------------------

_FOLD = ('  - from: "conv.w"\n    to: "w"\n    apply: [{fold_bn: {var: "bn.var", eps: %s}}]\n'
         '  - {from: "bn.var", drop: true}\n')


@pytest.mark.parametrize("var,eps,word", [
    ([np.nan, 1.0], "1.0e-5", "var has 1 NaN"),
    ([1.0, 1.0], ".nan", "eps is nan"),
    ([1.0, 1.0], ".inf", "eps is inf"),
])
def test_fold_bn_refuses_nan_statistics(tmp_path, var, eps, word):
    rc, err, _ = _convert(tmp_path, {"conv.w": np.arange(1, 5, dtype=np.float32).reshape(2, 2),
                                     "bn.var": np.array(var, dtype=np.float32)}, _FOLD % eps)
    _refused(rc, err, word, "rule 1", "'conv.w'")


def test_fold_bn_still_folds_sound_statistics(tmp_path):
    rc, err, v = _convert(tmp_path, {"conv.w": np.arange(1, 5, dtype=np.float32).reshape(2, 2),
                                     "bn.var": np.array([3.0, 8.0], dtype=np.float32)}, _FOLD % "1.0")
    assert rc == 0, err
    np.testing.assert_allclose(v["w"], [[1 / 2, 2 / 2], [3 / 3, 4 / 3]], rtol=1e-6)  # 1/sqrt(var + 1)


def test_fold_bn_refuses_weights_scaled_to_zero(tmp_path):
    """1e-40 / sqrt(1e30 + eps) is nonzero but below float32's smallest value (1.4e-45): underflow."""
    tensors = {"conv.w": np.array([[1e-40, 1.0], [2.0, 3.0]], dtype=np.float32),
               "bn.var": np.array([1e30, 3.0], dtype=np.float32)}
    rc, err, _ = _convert(tmp_path, tensors, _FOLD % "1.0")
    _refused(rc, err, "1 nonzero product would become 0 in float32", "rule 1", "'conv.w'")
    rc, err, v = _convert(tmp_path, tensors, _FOLD % "1.0", top="allow: [underflow]\n")
    assert rc == 0 and v["w"][0, 0] == 0, err


# -- cast ---------------------------------------------------------------------------------------

_CAST = '  - from: "x"\n    to: "y"\n    apply: [{cast: %s}]\n'


@pytest.mark.parametrize("values,src_dtype,dtype,word", [
    ([300, 5], "int64", "int8", "do not fit int8"),
    ([-5, 2], "int64", "uint16", "do not fit uint16"),
    ([70000.0, 1.0], "float32", "float16", "become infinity"),
    ([1e-10, 3e-9], "float64", "float16", "2 nonzero values would become 0 in float16"),  # underflow
    ([1e-46, 1.0], "float64", "float32", "1 nonzero value would become 0 in float32"),
    ([2.7, 1.0], "float32", "int32", "truncate"),
    ([np.nan, 1.0], "float32", "int32", "NaN"),
])
def test_cast_refuses_corruption(tmp_path, values, src_dtype, dtype, word):
    rc, err, _ = _convert(tmp_path, {"x": np.array(values, dtype=src_dtype)}, _CAST % dtype)
    _refused(rc, err, word, "rule 1", "'x'")


@pytest.mark.parametrize("values,src_dtype,dtype,allow,expected", [
    ([300, 5], "int64", "int8", "overflow", [44, 5]),  # 300 - 256
    ([-5, 2], "int64", "uint16", "overflow", [65531, 2]),  # 65536 - 5
    ([70000.0, 1.0], "float32", "float16", "overflow", [np.inf, 1.0]),
    ([2.7, -1.5], "float32", "int32", "truncate", [2, -1]),
    ([1e-10, 3e-9], "float64", "float16", "underflow", [0.0, 0.0]),
    ([1e-7, -1e-7, 0.0], "float64", "float16", "", [1.1920928955078125e-07, -1.1920928955078125e-07, 0.0]),
])
def test_cast_allowed_by_the_spec(tmp_path, values, src_dtype, dtype, allow, expected):
    rules = _CAST % dtype + f"    allow: [{allow}]\n"
    rc, err, v = _convert(tmp_path, {"x": np.array(values, dtype=src_dtype)}, rules)
    assert rc == 0, err
    assert v["y"].tolist() == expected


def test_target_dtype_float16_overflow(tmp_path):
    tensors = {"x": np.array([1.0, 1e6], dtype=np.float32)}
    rules = '  - from: "x"\n    to: "y"\n'
    rc, err, _ = _convert(tmp_path, tensors, rules, top="target: {dtype: float16}\n")
    _refused(rc, err, "float16", "infinity", "target dtype", "'x'")
    rc, err, v = _convert(tmp_path, tensors, rules, top="target: {dtype: float16}\nallow: [overflow]\n")
    assert rc == 0, err
    assert v["y"].tolist() == [1.0, np.inf]


# -- underflow: a nonzero value that becomes 0 ---------------------------------------------------

def test_float16_arithmetic_underflow(tmp_path):
    x = {"x": np.array([1e-3, 2e-3], dtype=np.float16)}
    rules = '  - from: "x"\n    to: "y"\n    apply: [{mul: 1.0e-5}]\n'
    rc, err, _ = _convert(tmp_path, x, rules)
    _refused(rc, err, "mul(by=1e-05)", "rule 1", "'x'", "would become 0 in float16", "allow: [underflow]")
    rc, err, v = _convert(tmp_path, x, rules + "    allow: [underflow]\n")
    assert rc == 0, err
    assert v["y"].tolist() == [0.0, 0.0]
    rc, err, v = _convert(tmp_path, x, '  - from: "x"\n    to: "y"\n    apply: [{mul: 0}]\n')  # zero by a zero
    assert rc == 0 and v["y"].tolist() == [0.0, 0.0], err


@pytest.mark.parametrize("apply,values,word", [
    ("{mul: 1.0e-30}", [1e-30, 0.0], "1 nonzero product would become 0 in float32"),
    ("{div: 1.0e+30}", [1e-30, 0.0], "1 nonzero quotient would become 0 in float32"),
    ("{mul: 1.0e-50}", [1.0, 2.0], "1e-50 is below the smallest float32 value"),  # the spec's own number
    ("{mul: {by: s}}", [1e-30, 1.0], "1 nonzero product would become 0 in float32"),
])
def test_float32_arithmetic_underflow(tmp_path, apply, values, word):
    tensors = {"x": np.array(values, dtype=np.float32), "s": np.array([1e-30, 1e-30], dtype=np.float32)}
    rules = f'  - from: "x"\n    to: "y"\n    apply: [{apply}]\n  - {{from: s, drop: true}}\n'
    rc, err, _ = _convert(tmp_path, tensors, rules)
    _refused(rc, err, word, "'x'")
    rc, err, v = _convert(tmp_path, tensors, rules, top="allow: [underflow]\n")
    assert rc == 0, err


def test_target_dtype_float16_underflow(tmp_path):
    tensors = {"x": np.array([1.0, 1e-9], dtype=np.float32)}
    rules = '  - from: "x"\n    to: "y"\n'
    rc, err, _ = _convert(tmp_path, tensors, rules, top="target: {dtype: float16}\n")
    _refused(rc, err, "float16", "would become 0", "target dtype", "'x'")


def test_add_and_sub_do_not_underflow(tmp_path):
    """IEEE gradual underflow: a - b is 0 only when a == b, so a cancellation is exact, not underflow."""
    tensors = {"x": np.array([1e-3, 6e-8, 0.5], dtype=np.float16)}
    rules = '  - from: "x"\n    to: "y"\n    apply: [{sub: {by: x}}]\n'
    rc, err, v = _convert(tmp_path, tensors, rules)
    assert rc == 0 and v["y"].tolist() == [0.0, 0.0, 0.0], err


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TINY = st.one_of(st.floats(-1e-3, 1e-3, width=64), st.sampled_from([0.0, -0.0, 1e-45, 6e-8, 2.9e-8, 1e-300]))


@settings(max_examples=150, deadline=None)
@given(values=st.lists(_TINY, min_size=1, max_size=6), dst=st.sampled_from(["float16", "float32", "bfloat16"]),
       by=st.sampled_from([None, 1e-5, 1e-30, 0.5, 3.0]))
def test_underflow_is_refused_exactly_when_a_nonzero_value_becomes_zero(values, dst, by):
    """Property: cast (and mul, computed as numpy does in float32 for half precision) is refused iff some
    nonzero value comes out as exactly 0; with allow: [underflow] it gives numpy's own result."""
    import ml_dtypes

    from mapspec import numeric
    from mapspec.transforms.arith import mul
    from mapspec.transforms.registry import TransformError

    dt = np.dtype(ml_dtypes.bfloat16) if dst == "bfloat16" else np.dtype(dst)
    x = np.array(values, dtype=np.float64)
    if by is None:
        want = x.astype(dt)
        run = lambda allow: numeric.cast(x, dt, allow)  # noqa: E731
        lost = (x != 0) & (want.astype(np.float64) == 0)
    else:
        x = x.astype(dt)  # the tensor in its own dtype; the product in float32 (half precision) or its own
        wide = x.astype(np.float32) if dt.itemsize < 4 else x
        prod = wide * np.asarray(by, dtype=wide.dtype)
        want = prod.astype(dt)
        run = lambda allow: mul(x, by, allow=allow)  # noqa: E731
        lost = (x.astype(np.float64) != 0) & (want.astype(np.float64) == 0)
    if lost.any():
        with pytest.raises(TransformError, match="would become 0|below the smallest"):
            run(frozenset())
    else:
        assert np.array_equal(run(frozenset()).astype(np.float64), want.astype(np.float64))
    assert np.array_equal(run(frozenset({"underflow"})).astype(np.float64), want.astype(np.float64))


# -- fill -----------------------------------------------------------------------------------------

_FILL = '  - from: "x"\n    to: "y"\n    apply: [{fill: %s}]\n'


@pytest.mark.parametrize("value,word", [
    (".nan", "NaN"),
    ("1.0e+30", "does not fit int64"),
    ("2.7", "truncate"),
    ("99999999999999999999999", "does not fit int64"),
])
def test_fill_into_integers(tmp_path, value, word):
    rc, err, _ = _convert(tmp_path, {"x": np.arange(3, dtype=np.int64)}, _FILL % value)
    _refused(rc, err, word, "rule 1", "'x'")


def test_fill_overflowing_float16_and_nan(tmp_path):
    rc, err, _ = _convert(tmp_path, {"x": np.arange(3, dtype=np.float16)}, _FILL % "1.0e+30")
    _refused(rc, err, "float16", "overflow")
    rc, err, _ = _convert(tmp_path, {"x": np.arange(3, dtype=np.float32)}, _FILL % ".nan")
    _refused(rc, err, "non-finite")
    rc, err, v = _convert(tmp_path, {"x": np.arange(3, dtype=np.float32)}, _FILL % ".nan"
                          + "    allow: [non-finite]\n")
    assert rc == 0, err
    assert np.isnan(v["y"]).all()


def test_constant_values_are_checked_too(tmp_path):
    rules = '  - {to: "c", value: 300, dtype: int8, shape: [2]}\n  - {from: "x", to: "x"}\n'
    rc, err, _ = _convert(tmp_path, {"x": np.zeros(1, np.float32)}, rules)
    _refused(rc, err, "300", "int8")


# -- arithmetic -------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,values,by,word", [
    ("mul", [2 ** 62, 3], "4", "mul overflows int64"),
    ("add", [2 ** 63 - 1, 0], "1", "add overflows int64"),
    ("sub", [-2 ** 63, 0], "1", "sub overflows int64"),
])
def test_int64_arithmetic_overflow(tmp_path, op, values, by, word):
    rules = f'  - from: "x"\n    to: "y"\n    apply: [{{{op}: {by}}}]\n'
    rc, err, _ = _convert(tmp_path, {"x": np.array(values, dtype=np.int64)}, rules)
    _refused(rc, err, word, "index (0,)")
    rc, err, v = _convert(tmp_path, {"x": np.array([7, -3], dtype=np.int64)}, rules)
    assert rc == 0, err
    expected = {"mul": [28, -12], "add": [8, -2], "sub": [6, -4]}[op]
    assert v["y"].tolist() == expected


def test_int_arithmetic_overflow_allowed(tmp_path):
    rules = '  - from: "x"\n    to: "y"\n    apply: [{add: 1}]\n    allow: [overflow]\n'
    rc, err, v = _convert(tmp_path, {"x": np.array([127, 1], dtype=np.int8)}, rules)
    assert rc == 0, err
    assert v["y"].tolist() == [-128, 2]


def test_float16_arithmetic_overflow(tmp_path):
    rules = '  - from: "x"\n    to: "y"\n    apply: [{mul: 4}]\n'
    rc, err, _ = _convert(tmp_path, {"x": np.array([60000, 1], dtype=np.float16)}, rules)
    _refused(rc, err, "float16", "infinity")


def test_schema_knows_allow(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nallow: [wrap]\nrules:\n  - {from: "x", to: "y", allow: [sometimes]}\n')
    rc, _, err = _run("validate", spec)
    assert rc == 1
    assert err.count("'wrap' is not one of") + err.count("wrap") >= 1 and "sometimes" in err, err
    schema = json.loads((__import__("pathlib").Path(__file__).resolve().parent.parent / "schemas" /
                         "mapspec-1.schema.json").read_text())
    assert schema["$defs"]["allowance"]["items"]["enum"] == ["overflow", "truncate", "non-finite", "underflow"]
    spec.write_text('mapspec: 1\nallow: [underflow]\nrules:\n  - {from: "x", to: "y", allow: [underflow]}\n')
    rc, _, err = _run("validate", spec)
    assert rc == 0, err
