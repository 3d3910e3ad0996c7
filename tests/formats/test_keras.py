"""Keras HDF5 weights (legacy .h5 and Keras 3 .weights.h5), proven against real Keras 3 (torch backend)."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

h5py = pytest.importorskip("h5py")

from mapspec.errors import FormatError, MapspecError  # noqa: E402
from mapspec.formats import TensorInfo  # noqa: E402
from mapspec.formats import keras as kf  # noqa: E402
from mapspec.formats import keras_hdf5  # noqa: E402

EPS = 1e-3  # BatchNormalization default epsilon


def _keras():
    if os.environ.get("KERAS_BACKEND") != "torch":
        pytest.skip("these tests need KERAS_BACKEND=torch")
    pytest.importorskip("torch")
    return pytest.importorskip("keras")


def build_model(keras, dtype=None):
    """Conv2D (bias), grouped Conv2D, DepthwiseConv2D, BatchNormalization, PReLU, Dense."""
    L = keras.layers
    kw = {"dtype": dtype} if dtype else {}
    i = keras.Input((8, 8, 4))
    x = L.Conv2D(6, 3, name="conv1", **kw)(i)
    x = L.Conv2D(4, 3, groups=2, name="gconv", **kw)(x)
    x = L.DepthwiseConv2D(3, name="dw", **kw)(x)
    x = L.BatchNormalization(name="bn", **kw)(x)
    x = L.PReLU(name="prelu", **kw)(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(3, name="fc", **kw)(x)
    return keras.Model(i, x, name="net")


SHAPES = {  # Keras' own shapes for build_model, in model order
    "conv1/kernel": (3, 3, 4, 6), "conv1/bias": (6,),
    "gconv/kernel": (3, 3, 3, 4), "gconv/bias": (4,),
    "dw/kernel": (3, 3, 4, 1), "dw/bias": (4,),
    "bn/gamma": (4,), "bn/beta": (4,), "bn/moving_mean": (4,), "bn/moving_variance": (4,),
    "prelu/alpha": (2, 2, 4),
    "fc/kernel": (16, 3), "fc/bias": (3,),
}


def arange_weights() -> dict:
    """Distinct, well-scaled values; variances positive."""
    out = {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        n = int(np.prod(shape))
        v = ((np.arange(n) * 7 + k) % 23 - 11) / 20.0
        if name.endswith("moving_variance"):
            v = 1.0 + np.arange(n) / 10.0
        out[name] = v.astype(np.float32).reshape(shape)
    return out


def model_input() -> np.ndarray:
    return (((np.arange(2 * 8 * 8 * 4) * 5) % 17) / 17.0 - 0.5).astype(np.float32).reshape(2, 8, 8, 4)


# -- an independent numpy forward pass ---------------------------------------

def conv_valid(x, k, b, groups=1):
    """NHWC valid convolution with a Keras kernel (kh, kw, cin/groups, cout)."""
    kh, kw, cin_g, cout = k.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N,H',W',C,kh,kw
    cout_g = cout // groups
    outs = []
    for g in range(groups):
        xs = win[:, :, :, g * cin_g:(g + 1) * cin_g]
        ks = k[:, :, :, g * cout_g:(g + 1) * cout_g]
        outs.append(np.einsum("nhwcij,ijco->nhwo", xs, ks))
    return np.concatenate(outs, axis=-1) + b


def depthwise_valid(x, k, b):
    kh, kw, c, m = k.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    out = np.einsum("nhwcij,ijcm->nhwcm", win, k).reshape(*win.shape[:3], c * m)
    return out + b


def numpy_forward(w: dict, x: np.ndarray) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = x.astype(np.float64)
    x = conv_valid(x, w["conv1/kernel"], w["conv1/bias"])
    x = conv_valid(x, w["gconv/kernel"], w["gconv/bias"], groups=2)
    x = depthwise_valid(x, w["dw/kernel"], w["dw/bias"])
    x = (x - w["bn/moving_mean"]) / np.sqrt(w["bn/moving_variance"] + EPS) * w["bn/gamma"] + w["bn/beta"]
    x = np.where(x > 0, x, w["prelu/alpha"] * x)
    x = x.reshape(x.shape[0], -1)
    return x @ w["fc/kernel"] + w["fc/bias"]


def keras_weights(model) -> dict:
    """{layer/weight: value} straight from Keras (layer.get_weights with the variables' paths)."""
    out = {}
    for layer in model.layers:
        for var, value in zip(layer.weights, layer.get_weights()):
            out[var.path] = value
    return out


def check_model_has(keras, model, weights: dict) -> None:
    got = keras_weights(model)
    assert set(got) == set(weights)
    for k, v in weights.items():
        assert got[k].shape == v.shape and got[k].dtype == v.dtype, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    x = model_input()
    y = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(y, numpy_forward(weights, x), rtol=1e-4, atol=1e-5)


# -- our writer -> Keras ---------------------------------------------------------

def test_numpy_forward_matches_keras_on_its_own_weights():
    """The reference computation itself agrees with Keras (so the tests below can trust it)."""
    keras = _keras()
    m = build_model(keras)
    m.set_weights([arange_weights()[k] for k in SHAPES])
    x = model_input()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m(x)), numpy_forward(arange_weights(), x),
                               rtol=1e-4, atol=1e-5)


def test_legacy_without_template_keras_loads_it(tmp_path):
    keras = _keras()
    w = arange_weights()
    # announce each layer's weights in a scrambled order: the writer must restore Keras' order
    scrambled = {}
    for layer in dict.fromkeys(k.split("/")[0] for k in SHAPES):
        for k in reversed([k for k in SHAPES if k.startswith(layer + "/")]):
            scrambled[k] = w[k]
    p = tmp_path / "out.h5"
    kf.save(p, scrambled)
    with h5py.File(p, "r") as f:  # what Keras' legacy loader reads
        assert [s.decode() for s in f.attrs["layer_names"]] == ["conv1", "gconv", "dw", "bn", "prelu", "fc"]
        assert [s.decode() for s in f["bn"].attrs["weight_names"]] == [
            "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"]
    m = build_model(keras)
    m.load_weights(str(p))
    check_model_has(keras, m, w)


@pytest.mark.parametrize("kind", ["model", "legacy_file", "full_model_file"])
def test_legacy_with_template(tmp_path, kind):
    keras = _keras()
    t = build_model(keras)
    template = {"model": t}.get(kind)
    if kind == "legacy_file":
        template = tmp_path / "t.h5"
        kf.save(template, {k: np.zeros(s, np.float32) for k, s in SHAPES.items()})
    elif kind == "full_model_file":
        template = tmp_path / "full.h5"
        t.save(str(template))  # Keras 3's legacy full-model .h5 (weights under model_weights)
    p = tmp_path / "out.h5"
    kf.save(p, arange_weights(), template=template)
    m = build_model(keras)
    m.load_weights(str(p))
    check_model_has(keras, m, arange_weights())
    if kind != "legacy_file":  # weight-less layers copied from the template, as Keras writes them
        with h5py.File(p, "r") as f:
            assert "flat" in [s.decode() for s in f.attrs["layer_names"]]


@pytest.mark.parametrize("kind", ["model", "file"])
def test_keras3_with_template(tmp_path, kind):
    keras = _keras()
    t = build_model(keras)
    template = t
    if kind == "file":
        template = tmp_path / "t.weights.h5"
        t.save_weights(str(template))
    p = tmp_path / "out.weights.h5"
    kf.save(p, arange_weights(), template=template)  # atomic output: a temporary name, layout still keras3
    with h5py.File(p, "r") as f:
        assert "layers/conv2d_1/vars/0" in f and f["layers/conv2d_1/vars"].attrs["name"] == "gconv"
    m = build_model(keras)
    m.load_weights(str(p))
    check_model_has(keras, m, arange_weights())


def test_keras3_bfloat16_as_keras_stores_it(tmp_path):
    keras = _keras()
    m = build_model(keras, dtype="bfloat16")
    w = {k: v.astype(ml_dtypes.bfloat16) for k, v in arange_weights().items()}
    p = tmp_path / "bf.weights.h5"
    kf.save(p, w, template=m)
    m2 = build_model(keras, dtype="bfloat16")
    m2.load_weights(str(p))
    got = keras_weights(m2)
    for k, v in w.items():
        assert got[k].dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(got[k], v)
    # and a file Keras wrote in bfloat16 reads back as bfloat16
    q = tmp_path / "keras_bf.weights.h5"
    m2.save_weights(str(q))
    with kf.open(str(q)) as r:
        assert r.info("fc/kernel").dtype == "bfloat16"
        np.testing.assert_array_equal(r.read("fc/kernel"), w["fc/kernel"])


def test_keras3_without_template_by_path_names(tmp_path):
    keras = _keras()
    names = {"conv1": "conv2d", "gconv": "conv2d_1", "dw": "depthwise_conv2d", "bn": "batch_normalization",
             "prelu": "p_re_lu", "fc": "dense"}
    order = {"kernel": 0, "bias": 1, "gamma": 0, "beta": 1, "moving_mean": 2, "moving_variance": 3, "alpha": 0}
    w = arange_weights()
    by_path = {f"layers/{names[k.split('/')[0]]}/vars/{order[k.split('/')[1]]}": v for k, v in w.items()}
    p = tmp_path / "p.weights.h5"
    kf.save(p, by_path)
    m = build_model(keras)
    m.load_weights(str(p))
    check_model_has(keras, m, w)


# -- Keras' files -> our reader -----------------------------------------------

def test_reads_files_keras_wrote(tmp_path):
    keras = _keras()
    m = build_model(keras)
    m.set_weights([arange_weights()[k] for k in SHAPES])
    expected = keras_weights(m)
    a, b = tmp_path / "k.weights.h5", tmp_path / "k_full.h5"
    m.save_weights(str(a))
    m.save(str(b))
    for path, layout in ((a, "keras3"), (b, "legacy")):
        head = open(path, "rb").read(64)
        assert kf.sniff(str(path), head)
        with kf.open(str(path)) as r:
            assert r.layout == layout
            assert set(r.names()) == set(expected)
            for name, value in expected.items():
                assert r.info(name).shape == value.shape and r.info(name).dtype == "float32"
                np.testing.assert_array_equal(r.read(name), value)
            if layout == "legacy":
                assert r.names() == list(SHAPES)  # model order
                assert r.attrs("bn")["epsilon"] == EPS and r.attrs("bn")["class_name"] == "BatchNormalization"
                assert r.nodes()[:2] == ["input_layer", "conv1"] or "conv1" in r.nodes()
            else:
                assert r.info("gconv/kernel").meta == {"h5path": "layers/conv2d_1/vars/0", "layer": "gconv",
                                                       "keras_class": "conv2d"}
            v = r.read("fc/kernel")
            assert not v.flags.writeable and not v.flags.owndata  # zero-copy memory map


def test_nested_model_and_ambiguous_variables(tmp_path):
    keras = _keras()
    L = keras.layers
    i = keras.Input((4,))
    inner = keras.Model(i, L.Dense(3, name="d")(i), name="inner")
    j = keras.Input((4,))
    x = L.BatchNormalization(center=False, name="bn")(L.Dense(2, name="d2")(inner(j)))
    outer = keras.Model(j, x, name="outer")
    p, q = tmp_path / "n.weights.h5", tmp_path / "n.h5"
    outer.save_weights(str(p))
    outer.save(str(q))
    r3, rl = kf.open(str(p)), kf.open(str(q))
    # same names for the same weights in both layouts where the class tells the variable names
    for name in ("inner/d/kernel", "inner/d/bias", "d2/kernel", "d2/bias"):
        np.testing.assert_array_equal(r3.read(name), rl.read(name))
    # a BatchNormalization without beta stores 3 variables: not guessable, so by index
    assert [n for n in r3.names() if n.startswith("bn/")] == ["bn/vars/0", "bn/vars/1", "bn/vars/2"]
    np.testing.assert_array_equal(r3.read("bn/vars/2"), rl.read("bn/moving_variance"))
    # and writing back through the template restores the file Keras can load
    out = tmp_path / "o.weights.h5"
    vals = {n: np.arange(np.prod(i.shape), dtype=np.float32).reshape(i.shape) + 1 for n, i in r3.infos().items()}
    kf.save(out, vals, template=p)
    outer.load_weights(str(out))
    np.testing.assert_array_equal(outer.get_layer("bn").get_weights()[2], vals["bn/vars/2"])
    np.testing.assert_array_equal(outer.get_layer("inner").get_layer("d").get_weights()[0], vals["inner/d/kernel"])


def test_variable_table_matches_keras():
    keras = _keras()
    from keras.src.utils.naming import to_snake_case

    L = keras.layers
    d1, d2, d3 = (None, 8, 4), (None, 8, 8, 4), (None, 8, 8, 8, 4)
    make = {  # class -> (constructor, input shape, variants of keyword arguments)
        "Dense": (lambda **k: L.Dense(2, **k), (None, 4), [{}, {"use_bias": False}]),
        "Conv1D": (lambda **k: L.Conv1D(2, 3, **k), d1, [{}, {"use_bias": False}]),
        "Conv2D": (lambda **k: L.Conv2D(2, 3, **k), d2, [{}, {"use_bias": False}]),
        "Conv3D": (lambda **k: L.Conv3D(2, 3, **k), d3, [{}, {"use_bias": False}]),
        "Conv1DTranspose": (lambda **k: L.Conv1DTranspose(2, 3, **k), d1, [{}, {"use_bias": False}]),
        "Conv2DTranspose": (lambda **k: L.Conv2DTranspose(2, 3, **k), d2, [{}, {"use_bias": False}]),
        "Conv3DTranspose": (lambda **k: L.Conv3DTranspose(2, 3, **k), d3, [{}, {"use_bias": False}]),
        "DepthwiseConv1D": (lambda **k: L.DepthwiseConv1D(3, **k), d1, [{}, {"use_bias": False}]),
        "DepthwiseConv2D": (lambda **k: L.DepthwiseConv2D(3, **k), d2, [{}, {"use_bias": False}]),
        "SeparableConv1D": (lambda **k: L.SeparableConv1D(2, 3, **k), d1, [{}, {"use_bias": False}]),
        "SeparableConv2D": (lambda **k: L.SeparableConv2D(2, 3, **k), d2, [{}, {"use_bias": False}]),
        "BatchNormalization": (L.BatchNormalization, (None, 4), [{}, {"center": False, "scale": False}]),
        "LayerNormalization": (L.LayerNormalization, (None, 4), [{}]),
        "GroupNormalization": (lambda **k: L.GroupNormalization(groups=2, **k), (None, 4), [{}]),
        "PReLU": (L.PReLU, (None, 4), [{}]),
        "Embedding": (lambda **k: L.Embedding(5, 2, **k), (None, 3), [{}]),
    }
    layers = {}
    for ctor, shape, variants in make.values():
        for kw in variants:
            layers[ctor(**kw)] = shape
    seen = set()
    for layer, shape in layers.items():
        layer.build(shape)
        cls = to_snake_case(type(layer).__name__)
        stored = [v.name for v in layer._trainable_variables + layer._non_trainable_variables]
        assert keras_hdf5.KERAS3_VARIABLES[cls][len(stored)] == tuple(stored), cls
        seen.add((cls, len(stored)))
    assert seen == {(c, n) for c, t in keras_hdf5.KERAS3_VARIABLES.items() for n in t}


# -- layouts written by hand (Keras 2 style, chunked attributes) -----------------

def test_keras2_style_legacy_file(tmp_path):
    """A Keras 2 save_weights file (":0" names, nested groups), made with h5py directly."""
    keras = _keras()
    w = arange_weights()
    p = tmp_path / "k2.h5"
    layers = ["input_1", "conv1", "gconv", "dw", "bn", "prelu", "flat", "fc"]
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.13.1"
        for layer in layers:
            g = f.create_group(layer)
            names = [k for k in SHAPES if k.startswith(layer + "/")]
            g.attrs["weight_names"] = np.array([f"{n}:0".encode() for n in names]) if names else np.array([])
            for n in names:
                g.create_dataset(f"{n}:0", data=w[n])
    with kf.open(str(p)) as r:
        assert r.layout == "legacy" and r.names() == list(SHAPES)
        assert r.info("conv1/kernel").meta["h5path"] == "conv1/conv1/kernel:0"
        for k, v in w.items():
            np.testing.assert_array_equal(r.read(k), v)
    m = build_model(keras)
    m.load_weights(str(p))  # Keras reads the same file the same way
    check_model_has(keras, m, w)


@pytest.mark.slow
def test_chunked_layer_names_read_and_written(tmp_path):
    n = 3000  # ~100 KB of layer names: over HDF5's 64 KB attribute limit, so Keras chunks them
    tensors = {f"a_rather_long_layer_name_number_{i:05d}/kernel": np.full((2,), i, np.int32) for i in range(n)}
    p = tmp_path / "many.h5"
    kf.save(p, tensors)
    with h5py.File(p, "r") as f:
        assert "layer_names" not in f.attrs and "layer_names0" in f.attrs and "layer_names1" in f.attrs
    with kf.open(str(p)) as r:
        assert r.names() == list(tensors)
        np.testing.assert_array_equal(r.read(f"a_rather_long_layer_name_number_{n - 1:05d}/kernel"), [n - 1] * 2)
    keras = _keras()
    from keras.src.legacy.saving.legacy_h5_format import load_attributes_from_hdf5_group
    with h5py.File(p, "r") as f:
        assert load_attributes_from_hdf5_group(f, "layer_names") == [k.split("/")[0] for k in tensors]
    assert keras


def test_dtypes_round_trip_legacy_and_0d(tmp_path):
    tensors = {f"l/{d}": (np.arange(6) % 3).astype(d).reshape(2, 3) for d in
               ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
                "uint8", "bool")}
    tensors["l/scalar"] = np.array(2.5, np.float32)
    tensors["l/empty"] = np.zeros((0, 3), np.float32)
    tensors["l/bigendian"] = np.arange(4, dtype=">f4")
    p = tmp_path / "d.h5"
    kf.save(p, tensors)
    with kf.open(str(p)) as r:
        for k, v in tensors.items():
            got = r.read(k)
            assert got.shape == v.shape and got.dtype == v.dtype.newbyteorder("="), k
            np.testing.assert_array_equal(got, v)
    with h5py.File(p, "r") as f:  # h5py agrees, independently of our reader
        np.testing.assert_array_equal(f["l/l/int16"][()], tensors["l/int16"])


# -- writer errors -----------------------------------------------------------------

def test_writer_errors(tmp_path):
    with pytest.raises(MapspecError, match="template"):
        kf.create(str(tmp_path / "x.weights.h5"), [TensorInfo("conv1/kernel", (3,), "float32")])
    with pytest.raises(MapspecError, match="<layer>/<weight>"):
        kf.create(str(tmp_path / "x.h5"), [TensorInfo("kernel", (3,), "float32")])
    with pytest.raises(MapspecError, match="bfloat16"):
        kf.create(str(tmp_path / "x.h5"), [TensorInfo("a/kernel", (3,), "bfloat16")])
    with pytest.raises(MapspecError, match="float8"):
        kf.create(str(tmp_path / "x.weights.h5"), [TensorInfo("a/vars/0", (3,), "float8_e4m3fn")])
    t = tmp_path / "t.h5"
    kf.save(t, {"a/kernel": np.zeros((2, 2), np.float32), "a/bias": np.zeros(2, np.float32)})
    with pytest.raises(MapspecError, match="not written: a/bias"):
        kf.create(str(tmp_path / "y.h5"), [TensorInfo("a/kernel", (2, 2), "float32")], template=t)
    with pytest.raises(MapspecError, match="expects"):
        kf.create(str(tmp_path / "y.h5"), [TensorInfo("a/kernel", (2, 3), "float32"),
                                           TensorInfo("a/bias", (2,), "float32")], template=t)
    with pytest.raises(MapspecError, match="legacy"):
        kf.create(str(tmp_path / "y.weights.h5"), [TensorInfo("a/kernel", (2, 2), "float32"),
                                                   TensorInfo("a/bias", (2,), "float32")], template=t)
    with pytest.raises(MapspecError, match="layout"):
        kf.create(str(tmp_path / "y.h5"), [], layout="keras9")
    w = kf.create(str(tmp_path / "z.h5"), [TensorInfo("a/kernel", (2,), "float32")])
    with pytest.raises(MapspecError, match="announced as float32"):
        w.write("a/kernel", np.zeros(2, np.float64))
    w.abort()



def test_keras3_names_outside_layers_and_vars_are_refused(tmp_path):
    """A file with no top-level layers/ or vars/ group is not Keras 3 weights (the reader says so): the writer
    refuses names that would write one, instead of a file nothing reads back."""
    with pytest.raises(MapspecError, match="keeps its variables under layers/.*layers/conv/vars/0"):
        kf.save(tmp_path / "x.weights.h5", {"conv/vars/0": np.zeros(2, np.float32)})
    assert not (tmp_path / "x.weights.h5").exists()
    kf.save(tmp_path / "y.weights.h5", {"layers/conv/vars/0": np.arange(2, dtype=np.float32),
                                        "optimizer/vars/0": np.arange(3, dtype=np.float32)})
    with kf.open(str(tmp_path / "y.weights.h5")) as r:
        assert sorted(r.names()) == ["conv/vars/0", "optimizer/vars/0"]


# -- hostile input --------------------------------------------------------------------

def _open_all(path, isolate: bool = False) -> None:
    """Open and read everything (in-process unless ``isolate``: the fuzz loops would spawn hundreds)."""
    with kf.open(str(path), isolate=isolate) as r:
        for n in r.names():
            np.asarray(r.read(n)).sum()


def _legacy_file(path, **over):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = over.get("layer_names", np.array([b"conv1"]))
        g = f.create_group("conv1")
        if "weight_names" in over:
            if over["weight_names"] is not None:
                g.attrs["weight_names"] = over["weight_names"]
        else:
            g.attrs["weight_names"] = np.array([b"conv1/kernel"])
        g.create_dataset("conv1/kernel", data=np.arange(6, dtype=np.float32))
    return path


@pytest.mark.parametrize("over,match", [
    ({"weight_names": None}, "no weight_names"),
    ({"weight_names": np.array([b"conv1/nothing"])}, "does not exist"),
    ({"weight_names": np.array([b"conv1//kernel"])}, "invalid HDF5 path"),
    ({"weight_names": np.array([1, 2])}, "not strings|holds"),
    ({"weight_names": np.array([b"\xff\xfe"])}, "UTF-8"),
    ({"layer_names": np.array([b"conv1", b"ghost"])}, "no group 'ghost'"),
    ({"weight_names": np.array([b"conv1"])}, "not a dataset"),
])
def test_broken_legacy_attributes(tmp_path, over, match):
    p = _legacy_file(tmp_path / "b.h5", **over)
    with pytest.raises(FormatError, match=match):
        _open_all(p)
    with pytest.raises(FormatError, match=match):  # the same message through the child-process probe
        _open_all(p, isolate=True)


def test_not_hdf5_truncated_and_empty(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"this is not hdf5 at all" * 10)
    with pytest.raises(FormatError, match="HDF5"):
        _open_all(p)
    good = _legacy_file(tmp_path / "g.h5")
    data = good.read_bytes()
    for cut in list(range(0, len(data), max(1, len(data) // 150))):
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            _open_all(p)
    with h5py.File(p, "w") as f:
        f.create_group("something_else")
    with pytest.raises(FormatError, match="without Keras weights"):
        _open_all(p)


def test_flipped_bytes_never_escape_format_error(tmp_path):
    good = _legacy_file(tmp_path / "g.h5")
    data = good.read_bytes()
    p = tmp_path / "f.h5"
    rng = np.random.default_rng(3)
    for _ in range(300):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        p.write_bytes(bytes(b))
        try:
            _open_all(p)
        except FormatError:
            pass


def test_links_external_virtual_and_bombs_are_refused(tmp_path):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("data", data=np.arange(4, dtype=np.float32))
    cases = {}

    def soft(g):
        g["conv1/kernel"] = h5py.SoftLink("/elsewhere")
    cases["soft"] = soft

    def external(g):
        g["conv1/kernel"] = h5py.ExternalLink(str(secret), "/data")
    cases["external"] = external

    def external_storage(g):
        raw = tmp_path / "raw.bin"
        raw.write_bytes(np.arange(4, dtype=np.float32).tobytes())
        g.create_dataset("conv1/kernel", shape=(4,), dtype="f4", external=[(str(raw), 0, 16)])
    cases["external dataset"] = external_storage

    def virtual(g):
        layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(secret), "data", shape=(4,))
        g.create_virtual_dataset("conv1/kernel", layout)
    cases["virtual"] = virtual

    def bomb(g):
        g.create_dataset("conv1/kernel", shape=(1 << 20, 1 << 20), dtype="f4", chunks=(1024, 1024),
                         compression="gzip")
    cases["bomb"] = bomb

    for what, make in cases.items():
        p = tmp_path / f"{what}.h5"
        with h5py.File(p, "w") as f:
            f.attrs["layer_names"] = np.array([b"conv1"])
            g = f.create_group("conv1")
            g.attrs["weight_names"] = np.array([b"conv1/kernel"])
            make(g)
        with pytest.raises(FormatError, match="refused|Link|links"):
            _open_all(p)


def test_unsupported_dataset_dtype(tmp_path):
    p = tmp_path / "c.h5"
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = np.array([b"l"])
        g = f.create_group("l")
        g.attrs["weight_names"] = np.array([b"l/w"])
        g.create_dataset("l/w", data=np.array([1 + 2j]))
    with pytest.raises(FormatError, match="not a supported"):
        _open_all(p)


def test_import_is_light():
    code = "import sys, mapspec.formats.keras as m; assert 'h5py' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _corrupt_global_heap(data: bytes) -> bytes:
    """Enlarge the size field of the last object in the file's first global heap collection.

    The next object header then falls inside the zero-filled free space: an object of
    index 0 and size 0, over which libhdf5 (2.0.0 here) steps forever when it reads a
    variable-length string from that heap, e.g. the ``name`` attribute Keras 3 puts
    on every ``vars`` group.  (Found by fuzzing: a single flipped byte.)
    """
    import struct

    start = data.index(b"GCOL")
    (size,) = struct.unpack_from("<Q", data, start + 8)
    pos, last = start + 16, None
    while pos + 16 <= start + size:
        index, _, _, osize = struct.unpack_from("<HHIQ", data, pos)
        if index == 0:
            break
        last = pos
        pos += 16 + (osize + 7) // 8 * 8
    b = bytearray(data)
    (osize,) = struct.unpack_from("<Q", data, last + 8)
    struct.pack_into("<Q", b, last + 8, (osize + 7) // 8 * 8 + 24)  # one header + 8 bytes further
    return bytes(b)


@pytest.mark.slow
def test_hdf5_hang_becomes_format_error(tmp_path):
    """A one-field corruption that hangs libhdf5 in-process is refused through the probe."""
    keras = _keras()
    good = tmp_path / "good.weights.h5"
    build_model(keras).save_weights(str(good))
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(_corrupt_global_heap(good.read_bytes()))
    code = ("import sys; from mapspec.formats import keras as kf; "
            "kf.open(sys.argv[1], isolate=False); print('finished')")
    with pytest.raises(subprocess.TimeoutExpired):  # the hazard is real: in-process it never returns
        subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, timeout=5)
    with pytest.raises(FormatError, match="did not finish"):
        kf.open(str(bad), timeout=5)
    with kf.open(str(good)) as r:  # the default (isolated) open of a sound file
        assert "conv1/kernel" in r.names()


def test_probe_reports_child_crash(tmp_path, monkeypatch):
    p = _legacy_file(tmp_path / "ok.h5")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    kf.probe(str(p))  # the child still finds mapspec (its root is put first on PYTHONPATH)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(FormatError, match="exit status 1"):
        kf.probe(str(p))
