"""The inverse contract, over every transform in ``mapspec.transforms.TRANSFORMS``.

For each transform that declares an inverse: on np.arange-valued inputs, the forward kernel's result
has the shape and dtype its ``infer`` promised, and the reverse chain its inverse gives (the calls, the
parts a ``gather`` joins, the own part of a ``concat``) brings the input back bit-identical; a use that
loses information raises ``Lossy`` (with an approximate inverse within a stated tolerance where it has
one).  A transform without an inverse must be listed in ``NON_INVERTIBLE`` with the reason, and a
transform with no case here fails ``test_every_transform_has_a_case``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapspec import dtypes
from mapspec.transforms import TRANSFORMS, Meta
from mapspec.transforms.inverse import InverseContext, Lossy, NotInvertible


def arange(shape, dtype="float32", start=1) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    return (np.arange(n) + start).astype(dtypes.to_numpy(dtype)).reshape(shape)


def block_diagonal(out: int, inp: int, groups: int) -> np.ndarray:
    """A dense (out, inp, 1, 1) weight, zero outside its ``groups`` diagonal blocks (what ``group`` accepts)."""
    x = np.zeros((out, inp, 1, 1), np.float32)
    o, i = out // groups, inp // groups
    for g in range(groups):
        x[g * o:(g + 1) * o, g * i:(g + 1) * i] = arange((o, i, 1, 1), start=1 + 100 * g)
    return x


class Case(NamedTuple):
    args: dict                       # raw arguments, as a spec writes them
    shape: tuple = (4, 6)
    dtype: str = "float32"
    expect: str = "exact"            # exact | lossy (raises Lossy) | refused (raises NotInvertible)
    refs: dict = {}                  # reference arguments: {arg: [arrays]} in place of tensor names
    tol: Optional[float] = None      # lossy with an approximate inverse: its largest absolute error
    make: Optional[Callable] = None  # the input, where np.arange does not fit the transform


CASES: dict[str, list] = {
    "mul": [Case({"by": 2}), Case({"by": -0.25}), Case({"by": 3}, expect="lossy", tol=0),
            Case({"by": 0}, expect="lossy")],
    "div": [Case({"by": 4}), Case({"by": 3}, expect="lossy", tol=0)],
    "add": [Case({"by": 0}), Case({"by": 0.1}, expect="lossy", tol=1e-5)],
    "sub": [Case({"by": 0}), Case({"by": 0.1}, expect="lossy", tol=1e-5)],
    "cast": [Case({"dtype": "float64"}), Case({"dtype": "int64"}, dtype="int32"), Case({"dtype": "float32"}),
             Case({"dtype": "float16"}, expect="lossy", tol=0)],  # arange up to 24: exact in float16
    "concat": [Case({"before": ["a"], "after": ["b"], "axis": 1}, refs={
        "before": [arange((4, 2), start=100)], "after": [arange((4, 3), start=200)]})],
    "fill": [Case({"value": 0.5}, expect="lossy"), Case({"value": 0.5, "when": False})],
    "fold_bn": [Case({"var": "bn[1]", "eps": 1e-5}, refs={"var": [arange((4,))]}, expect="lossy")],
    "fold_bn_bias": [Case({"var": "bn[1]", "eps": 1e-5}, shape=(4,), refs={"var": [arange((4,))]},
                          expect="lossy")],
    "ungroup": [Case({"groups": 2}, shape=(4, 3, 1, 1))],
    "group": [Case({"groups": 2}, shape=(4, 6, 1, 1), make=lambda: block_diagonal(4, 6, 2))],
    "reshape": [Case({"shape": [2, -1]}, shape=(4, 6)), Case({"shape": [24]}, shape=(2, 3, 4))],
    "reverse": [Case({"axis": 0}), Case({"axis": -1}, shape=(2, 3, 5))],
    "rope_permute": [Case({"heads": 2, "to": "hf"}, shape=(12, 3)), Case({"heads": 1, "to": "meta"}, shape=(6,))],
    "slice": [Case({"start": 0, "stop": 4}), Case({"start": 1, "stop": 3}, expect="lossy")],
    "split": [Case({"parts": 2, "take": 0, "axis": 1}), Case({"parts": 4, "take": 3})],
    "squeeze": [Case({"axes": [1]}, shape=(4, 1, 6)), Case({"axes": [-1, 0]}, shape=(1, 5, 1))],
    "unsqueeze": [Case({"axes": [0]}), Case({"axes": [-1, 1]}, shape=(3, 2))],
    "take": [Case({"indices": [2, 0, 3, 1]}), Case({"indices": [0, 1], "axis": 1}, expect="lossy")],
    "transpose": [Case({"axes": [1, 0]}), Case({"axes": [2, 0, 3, 1]}, shape=(2, 3, 4, 5))],
}

# Transforms that declare no inverse (mapspec invert refuses a rule using them), each with the reason.
NON_INVERTIBLE = {
    "dequantize": "quantized blocks come from a GGUF source; requantizing is not the inverse (invert refuses)",
}


def test_every_transform_has_a_case():
    missing = sorted(set(TRANSFORMS) - set(CASES) - set(NON_INVERTIBLE))
    assert not missing, f"give these transforms contract cases (or a reason in NON_INVERTIBLE): {missing}"
    assert not set(CASES) & set(NON_INVERTIBLE)
    assert set(CASES) | set(NON_INVERTIBLE) <= set(TRANSFORMS), "a case names a transform that is gone"


@pytest.mark.parametrize("name", sorted(NON_INVERTIBLE))
def test_non_invertible_transforms_declare_it(name):
    assert TRANSFORMS[name].inverse is None


def _bind(name: str, raw) -> dict:
    """Raw arguments (a shorthand value or a mapping) with the declared defaults filled in."""
    tdef = TRANSFORMS[name]
    args = dict(raw) if isinstance(raw, dict) else {tdef.short: raw}
    for k, a in tdef.args.items():
        args.setdefault(k, a.default)
    return args


def _apply(name: str, raw, x: np.ndarray, refs: Optional[dict] = None) -> tuple:
    """(result, the Meta infer promised, bound args, arg metas) of one transform on ``x``."""
    tdef = TRANSFORMS[name]
    args = _bind(name, raw)
    metas = {}
    for k, arrays in (refs or {}).items():
        one = TRANSFORMS[name].args[k].kind == "ref"
        args[k] = arrays[0] if one else list(arrays)
        metas[k] = Meta(arrays[0].shape, dtypes.name_of(arrays[0].dtype)) if one else \
            [Meta(a.shape, dtypes.name_of(a.dtype)) for a in arrays]
    promised = tdef.infer(Meta(tuple(x.shape), dtypes.name_of(x.dtype)), **{**args, **metas})
    y = tdef.kernel(x, **args)
    assert tuple(y.shape) == tuple(promised.shape) and dtypes.name_of(y.dtype) == promised.dtype, \
        f"{name}: the kernel gave {y.shape} {y.dtype}, infer promised {promised}"
    return y, promised, args, metas


def _reverse(calls: list, y: np.ndarray) -> np.ndarray:
    for name, raw in calls:
        y = _apply(name, raw, y)[0]
    return y


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _params():
    for name, cases in CASES.items():
        for k, c in enumerate(cases):
            yield pytest.param(name, c, id=f"{name}-{k}-{c.expect}")


@pytest.mark.parametrize("name,case", list(_params()))
def test_forward_then_inverse_gives_the_input_back(name, case):
    tdef = TRANSFORMS[name]
    assert tdef.inverse is not None, f"{name} declares no inverse: list it in NON_INVERTIBLE with the reason"
    x = case.make() if case.make else arange(case.shape, case.dtype)
    y, promised, bound, metas = _apply(name, case.args, x, case.refs)
    ctx = InverseContext(name, dict(case.args), [(Meta(x.shape, dtypes.name_of(x.dtype)), promised, bound, metas)])
    if case.expect == "refused":
        with pytest.raises(NotInvertible):
            tdef.inverse(ctx)
        return
    if case.expect == "lossy":
        with pytest.raises(Lossy) as info:
            tdef.inverse(ctx)
        approx = info.value.approx
        assert (approx is not None) == (case.tol is not None), "state the approximate inverse's tolerance"
        if approx is not None:
            back = _reverse(approx.calls, y)
            assert back.shape == x.shape and back.dtype == x.dtype
            assert np.max(np.abs(back.astype(np.float64) - x.astype(np.float64))) <= case.tol
        return
    inv = tdef.inverse(ctx)
    if inv.gather is not None:  # split: the reverse joins what every value of `take` gave
        g = inv.gather
        parts = [_apply(name, {**case.args, g["take"] if isinstance(g["take"], str) else "take": k}, x)[0]
                 for k in range(g["parts"])]
        assert _same(parts[case.args["take"]], y)
        back = np.concatenate(parts, axis=g["axis"])
    else:
        back = _reverse(inv.calls, y)
    if inv.parts is not None:  # concat: each referenced tensor is sliced back out as an output of its own
        axis = inv.parts["axis"]
        refs = [a for k in ("before", "after") for a in case.refs.get(k, [])]
        for (raw, start, stop), want in zip(inv.parts["refs"], refs):
            assert _same(np.take(y, np.arange(start, stop), axis=axis), want), raw
    assert _same(back, x), f"{name} {case.args}: forward then inverse changed the values"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).flatmap(
    lambda shape: st.tuples(st.just(tuple(shape)), st.permutations(range(len(shape))),
                            st.integers(0, len(shape) - 1))))
def test_transpose_reverse_and_reshape_invert_on_any_shape(drawn):
    shape, perm, axis = drawn
    x = arange(shape, "int32")
    for name, raw in (("transpose", {"axes": list(perm)}), ("reverse", {"axis": axis}),
                      ("reshape", {"shape": [-1]}), ("unsqueeze", {"axes": [axis]})):
        y, promised, bound, metas = _apply(name, raw, x)
        ctx = InverseContext(name, raw, [(Meta(shape, "int32"), promised, bound, metas)])
        assert _same(_reverse(TRANSFORMS[name].inverse(ctx).calls, y), x), (name, raw)
