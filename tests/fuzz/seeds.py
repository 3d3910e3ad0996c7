"""Seed inputs: small valid files per target, made by our own writers from ``np.arange``.

Distinct values (``arange``) rather than zeros, several dtypes, 0-d and empty tensors, the
layouts each format has (legacy and current), plus the real fixture files where they are
small (the MobileFaceNet symbol, the MobileNet prototxt).  ``build(target, directory)``
writes the seeds of one target and returns their paths; the result is deterministic.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the project
DATA = ROOT / "tests" / "data"
CORPUS = Path(__file__).resolve().parent / "corpus"


def _fixtures() -> Path | None:
    import os

    env = os.environ.get("MAPSPEC_FIXTURES")
    for c in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "fixtures"]:
        if c.is_dir():
            return c
    return None


def _ar(shape, dtype="float32", start=0) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(start, start + n) % 251).astype(dtype).reshape(shape)


def _save(fmt: str, path: Path, tensors: dict, **options) -> Path:
    from mapspec.formats import module

    module(fmt).save(str(path), tensors, **options)
    return path


def _copy(src: Path, dst: Path) -> Path | None:
    if not src.is_file():
        return None
    shutil.copyfile(src, dst)
    return dst


# -- per target ------------------------------------------------------------------

def npz(d: Path) -> list:
    out = [_save("npz", d / "ours.npz", {"conv1.weight": _ar((2, 3, 2, 2)), "conv1.bias": _ar((2,), "float16"),
                                          "steps": _ar((), "int64"), "mask": _ar((3,), "bool"),
                                          "empty": _ar((0, 3), "float64")})]
    np.savez_compressed(d / "compressed.npz", a=_ar((4, 5)), b=_ar((3,), "int32"))
    out.append(d / "compressed.npz")
    np.savez(d / "fortran_bigendian.npz", f=np.asfortranarray(_ar((3, 4))), be=_ar((5,), ">f4"))
    out.append(d / "fortran_bigendian.npz")
    return out


def safetensors(d: Path) -> list:
    import ml_dtypes

    t = {"w": _ar((2, 3)), "b16": _ar((4,)).astype(ml_dtypes.bfloat16), "i8": _ar((2, 2), "int8"),
         "scalar": _ar((), "float64"), "empty": _ar((0, 2), "int32"), "u16": _ar((3,), "uint16")}
    return [_save("safetensors", d / "ours.safetensors", t, metadata={"format": "pt"}),
            _save("safetensors", d / "one.safetensors", {"x": _ar((5,), "float16")})]


def torch(d: Path) -> list:
    import torch as T

    out = [_save("torch", d / "ours.pt", {"conv.weight": _ar((2, 3, 1, 1)), "conv.bias": _ar((2,), "float64"),
                                          "bn.num_batches_tracked": _ar((), "int64")})]
    sd = {"state_dict": {"enc": {"w": T.arange(6.0).reshape(2, 3), "b": T.arange(2, dtype=T.int32)},
                         "layers": [T.arange(3, dtype=T.float16)]}, "epoch": 3, "name": "x"}
    T.save(sd, d / "wrapped_zip.pt")
    T.save({"a": T.arange(4.0), "view": T.arange(8.0)[2:6]}, d / "legacy.pt", _use_new_zipfile_serialization=False)
    return out + [d / "wrapped_zip.pt", d / "legacy.pt"]


def keras(d: Path) -> list:
    import h5py

    legacy = {"conv1/kernel": _ar((3, 3, 2, 4)), "conv1/bias": _ar((4,)), "bn/gamma": _ar((4,)),
              "bn/beta": _ar((4,)), "bn/moving_mean": _ar((4,)), "bn/moving_variance": _ar((4,), "float64"),
              "dense/kernel": _ar((4, 2), "float16")}
    out = [_save("keras", d / "legacy.h5", legacy)]
    k3 = {"layers/conv2d/vars/0": _ar((1, 1, 2, 3)), "layers/conv2d/vars/1": _ar((3,)),
          "layers/dense/vars/0": _ar((3, 2))}
    out.append(_save("keras", d / "k3.weights.h5", k3))
    # A full-model style file: model_weights group, chunked layer_names, a gzip dataset.
    p = d / "full.h5"
    with h5py.File(p, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": [
            {"class_name": "Dense", "config": {"name": "fc", "units": 2}}]}})
        g = f.create_group("model_weights")
        g.attrs["layer_names0"] = np.array([b"fc"])
        fc = g.create_group("fc")
        fc.attrs["weight_names"] = np.array([b"fc/kernel:0", b"fc/bias:0"])
        fc.create_dataset("fc/kernel:0", data=_ar((3, 2)), compression="gzip", chunks=(3, 2))
        fc.create_dataset("fc/bias:0", data=_ar((2,)))
    out.append(p)
    return out


def gguf(d: Path) -> list:
    from mapspec.formats import TensorInfo
    from mapspec.formats import gguf as mg

    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.rope.freq_base": 10000.0,
            "tokenizer.ggml.tokens": ["<s>", "a", "bc"], "x.scores": [0.5, -1.0], "x.flag": True,
            "x.big": {"type": "uint64", "value": 7}}
    out = [_save("gguf", d / "ours.gguf", {"token_embd.weight": _ar((4, 8)), "norm": _ar((8,), "float16"),
                                           "i": _ar((3,), "int32")}, metadata=meta)]
    # raw quantized blocks (Q8_0: 34 bytes per 32 values; Q4_K: 144 per 256), as a GGUF source hands them out
    q = [TensorInfo("q8", (2, 34), "uint8", {"ggml_type": "Q8_0", "shape": (2, 32)}),
         TensorInfo("q4k", (1, 144), "uint8", {"ggml_type": "Q4_K", "shape": (1, 256)})]
    w = mg.create(str(d / "quant.gguf"), q, alignment=64)
    w.write("q8", _ar((2, 34), "uint8"))
    w.write("q4k", _ar((1, 144), "uint8"))
    w.close()
    return out + [d / "quant.gguf"]


def onnx(d: Path) -> list:
    """Models built with the protobuf wire encoders (no onnx package needed): raw, packed and varint data."""
    from mapspec.formats.protowire import VARINT, encode_varint, len_field, tag

    def tensor(name, dims, code, field, payload):
        body = b"".join(tag(1, VARINT) + encode_varint(x) for x in dims) + tag(2, VARINT) + encode_varint(code)
        body += len_field(8, len(name)) + name.encode() + len_field(field, len(payload)) + payload
        return len_field(5, len(body)) + body

    varints = b"".join(encode_varint(x) for x in (1, 300, 2 ** 40, 7))
    graph = (tensor("conv.weight", (2, 3), 1, 9, _ar((2, 3)).tobytes())
             + tensor("packed", (4,), 1, 4, _ar((4,)).tobytes())
             + tensor("steps", (4,), 7, 7, varints)
             + tensor("half", (2,), 10, 5, encode_varint(15360) + encode_varint(16384)))
    graph += len_field(2, 1) + b"g"
    model = tag(1, VARINT) + encode_varint(8) + len_field(2, 4) + b"test" + len_field(7, len(graph)) + graph
    (d / "ours.onnx").write_bytes(model)
    return [d / "ours.onnx"]


def keras_archive(d: Path) -> list:
    import zipfile

    k3 = {"layers/dense/vars/0": _ar((3, 2)), "layers/dense/vars/1": _ar((2,))}
    w = _save("keras", d / "w.weights.h5", k3)
    out = d / "model.keras"
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
        z.write(w, "model.weights.h5")
    w.unlink()
    return [out]


def _params_v1_legacy() -> bytes:
    """A hand-built .params with one V1 and one legacy (pre-V1) array header, no names."""
    v1 = struct.pack("<Iiqq", 0xF993FAC8, 2, 2, 3) + struct.pack("<iii", 1, 0, 0) + _ar((2, 3)).tobytes()
    legacy = struct.pack("<II", 1, 4) + struct.pack("<iii", 1, 0, 4) + _ar((4,), "int32").tobytes()
    return struct.pack("<QQQ", 0x112, 0, 2) + v1 + legacy + struct.pack("<Q", 0)


def mxnet(d: Path) -> list:
    out = [_save("mxnet", d / "ours-0001.params", {"conv0_weight": _ar((2, 3, 1, 1)), "conv0_bias": _ar((2,)),
                                                    "bn_moving_mean": _ar((2,), "float64"),
                                                    "emb": _ar((3, 2), "int8")}),
           _save("mxnet", d / "v3.params", {"s": _ar((), "float16"), "e": _ar((0, 2), "int64")}, version=3),
           _save("mxnet", d / "gluon.params", {"dense0.weight": _ar((2, 2))}, prefixes=False)]
    (d / "v1_legacy.params").write_bytes(_params_v1_legacy())
    return out + [d / "v1_legacy.params"]


_TINY_SYMBOL = {
    "nodes": [
        {"op": "null", "name": "data", "inputs": []},
        {"op": "null", "name": "conv0_weight", "inputs": []},
        {"op": "Convolution", "name": "conv0", "attrs": {"kernel": "(3, 3)", "num_filter": "4", "pad": "(1, 1)",
                                                          "no_bias": "True"}, "inputs": [[0, 0, 0], [1, 0, 0]]},
        {"op": "null", "name": "bn0_gamma", "inputs": []},
        {"op": "null", "name": "bn0_beta", "inputs": []},
        {"op": "null", "name": "bn0_moving_mean", "inputs": []},
        {"op": "null", "name": "bn0_moving_var", "inputs": []},
        {"op": "BatchNorm", "name": "bn0", "attrs": {"eps": "2e-05", "fix_gamma": "False"},
         "inputs": [[2, 0, 0], [3, 0, 0], [4, 0, 0], [5, 0, 0], [6, 0, 0]]},
        {"op": "null", "name": "relu0_gamma", "inputs": []},
        {"op": "LeakyReLU", "name": "relu0", "attrs": {"act_type": "prelu"},
         "inputs": [[7, 0, 0], [8, 0, 0]]},
        {"op": "Pooling", "name": "pool0", "attrs": {"kernel": "(2, 2)", "stride": "(2, 2)", "pool_type": "max"},
         "inputs": [[9, 0, 0]]},
        {"op": "Flatten", "name": "flat0", "inputs": [[10, 0, 0]]},
        {"op": "null", "name": "fc_weight", "inputs": []},
        {"op": "null", "name": "fc_bias", "inputs": []},
        {"op": "FullyConnected", "name": "fc", "attrs": {"num_hidden": "5"},
         "inputs": [[11, 0, 0], [12, 0, 0], [13, 0, 0]]},
    ],
    "arg_nodes": [0, 1, 3, 4, 5, 6, 8, 12, 13],
    "node_row_ptr": list(range(16)),
    "heads": [[14, 0, 0]],
    "attrs": {"mxnet_version": ["int", 10901]},
}


def mxnet_symbol(d: Path) -> list:
    out = []
    p = d / "tiny-symbol.json"
    p.write_text(json.dumps(_TINY_SYMBOL, indent=1))
    out.append(p)
    for src in sorted((DATA / "mxnet").glob("*.json")):
        out.append(_copy(src, d / src.name))
    fx = _fixtures()
    if fx is not None:
        out.append(_copy(fx / "mobilefacenet-mxnet" / "model_mobilefacenet-symbol.json", d / "mfn-symbol.json"))
    return [p for p in out if p is not None]


def caffe(d: Path) -> list:
    from mapspec.formats import open_checkpoint
    from mapspec.frameworks.caffe.schema import message_class

    out = []
    for proto in ("tiny_net.prototxt", "tiny_v1.prototxt"):
        tpl = open_checkpoint(str(DATA / "caffe" / proto), format="prototxt")
        tensors = {n: _ar(i.shape, start=k) for k, (n, i) in enumerate(tpl.infos().items())}
        out.append(_save("caffe", d / (proto.replace(".prototxt", ".caffemodel")), tensors,
                         template=str(DATA / "caffe" / proto)))
    # Legacy V1 layers with num/channels/height/width and double data, built directly.
    net = message_class("NetParameter")()
    net.name = "v1"
    layer = net.layers.add()
    layer.name, layer.type = "ip", 14  # INNER_PRODUCT
    blob = layer.blobs.add()
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 2, 3
    blob.double_data.extend(_ar((6,), "float64").tolist())
    (d / "v1_double.caffemodel").write_bytes(net.SerializeToString())
    return out + [d / "v1_double.caffemodel"]


def prototxt(d: Path) -> list:
    out = [_copy(p, d / p.name) for p in sorted((DATA / "caffe").glob("*.prototxt"))]
    out.append(_copy(ROOT / "specs" / "mobilefacenet" / "mobilefacenet.prototxt", d / "mobilefacenet.prototxt"))
    fx = _fixtures()
    if fx is not None:
        out.append(_copy(fx / "mobilenet-caffe" / "mobilenet_deploy.prototxt", d / "mobilenet_deploy.prototxt"))
    return [p for p in out if p is not None]


_TINY_SPEC = """\
mapspec: 1
name: tiny
source: {format: npz}
target: {format: safetensors, dtype: float32}
vars: {n: 3}
rules:
  - from: "conv<i:int>.weight"
    to: "features.{i + 1}.weight"
    apply: [{transpose: [1, 0, 2, 3]}, {mul: 2.0}]
  - from: "fc.weight"
    to: "classifier.weight"
    apply: [{reshape: [-1, 4]}]
    also:
      - to: "classifier.extra"
        value: 0.5
  - to: "steps"
    value: [[1, 2], [3, 4]]
    dtype: int64
  - from: "bn<j>.running_var"
    to: "bn{j}.var"
    each: {k: {range: [0, n]}}
    optional: true
ignore: ["*.num_batches_tracked"]
"""


def spec_support(d: Path) -> None:
    """Files a spec may name as a template (relative to itself), copied beside the fuzzed spec."""
    for src in sorted((ROOT / "specs").rglob("*")):
        if src.is_file() and src.suffix != ".yaml":
            _copy(src, d / src.name)


def spec(d: Path) -> list:
    p = d / "tiny.yaml"
    p.write_text(_TINY_SPEC)
    out = [p]
    for src in sorted((ROOT / "specs").rglob("*.yaml")) + sorted((ROOT / "tests" / "spec" / "bad_specs").glob("*.yaml")):
        out.append(_copy(src, d / f"{src.parent.name}__{src.name}"))
    return [p for p in out if p is not None]


_SHARDS = {"model-00001-of-00002.safetensors": {"a": ("float32", (2, 3)), "b": ("int64", (4,))},
           "model-00002-of-00002.safetensors": {"c": ("float16", (3, 2)), "d": ("uint8", (5,))}}


def sharded_support(d: Path) -> None:
    """The shards the fuzzed index refers to, beside it (plus one the index never names)."""
    for fname, tensors in _SHARDS.items():
        _save("safetensors", d / fname, {k: _ar(s, dt, i) for i, (k, (dt, s)) in enumerate(tensors.items())})
    _save("safetensors", d / "stray.safetensors", {"e": _ar((2,))})


def sharded(d: Path) -> list:
    wm = {k: f for f, ts in _SHARDS.items() for k in ts}
    full = d / "full.index.json"
    full.write_text(json.dumps({"metadata": {"total_size": 110}, "weight_map": wm}, indent=2))
    one = d / "one.index.json"
    one.write_text(json.dumps({"weight_map": {"c": "model-00002-of-00002.safetensors"}}))
    return [full, one]


BUILDERS: dict[str, Callable[[Path], list]] = {
    "npz": npz, "safetensors": safetensors, "torch": torch, "keras": keras, "mxnet": mxnet,
    "mxnet-symbol": mxnet_symbol, "caffe": caffe, "prototxt": prototxt, "spec": spec, "sharded": sharded,
    "gguf": gguf, "onnx": onnx, "keras-archive": keras_archive,
}


def build(target: str, directory: Path) -> list[Path]:
    """Write the seeds of ``target`` into ``directory`` (plus its regression corpus); their paths."""
    from .commands import SEEDS

    directory.mkdir(parents=True, exist_ok=True)
    paths = list((BUILDERS.get(target) or SEEDS[target])(directory))
    cdir = CORPUS / target
    if cdir.is_dir():
        paths += sorted(p for p in cdir.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".md")
    return paths
