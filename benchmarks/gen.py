"""Seeded benchmark inputs, written without mapspec's writers (so the inputs do not depend on the code measured).

``vgg16_caffemodel(path, scale=1.0, seed=0)``
    A Caffe ``NetParameter`` with VGG16's layers (conv1_1 ... conv5_3, fc6, fc7, fc8, with the
    ReLU/Pooling/Dropout/Softmax layers between them) and blobs in the legacy 4-D
    ``num/channels/height/width`` form, as in the published VGG_ILSVRC_16_layers.caffemodel:
    conv weights ``(O, I, 3, 3)``, biases ``(1, 1, 1, O)``, fc weights ``(1, 1, O, I)``.
    At ``scale=1`` that is 138,357,544 float32 values (553 MB), largest blob fc6
    ``4096 x 25088`` (411 MB).  ``scale`` multiplies the byte count (approximately) by scaling
    every width by ``sqrt(scale)``; fc8 keeps 1000 outputs.
``llama_gguf(path, layers=8, scale=1.0, seed=0)``
    A GGUF v3 file (written by hand) of 8 Llama-shaped layers with llama.cpp's names, float16:
    48 tensors of 4096 x 4096 to 8192 x 4096, 2 GiB.
``safetensors_checkpoint(path, count=64, rows=4096, cols=4096, seed=0)``
    ``count`` float32 tensors of ``rows x cols`` named ``layers.<i>.<kind>.weight`` with kinds
    ``attn.q``, ``attn.o``, ``mlp.up``, ``mlp.down`` (a quarter each): 64 x 64 MiB = 4 GiB at the
    defaults.

Values are seeded (``numpy.random.default_rng(seed)``), generated and written in blocks of
at most 16 MiB so that generating a 4 GiB file needs little memory.

    python benchmarks/gen.py vgg16 out.caffemodel [--scale 0.125]
    python benchmarks/gen.py safetensors out.safetensors [--count 64 --rows 4096 --cols 4096]
    python benchmarks/gen.py gguf out.gguf [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

_BLOCK = 4 << 20  # values per generated block (16 MiB of float32)

# VGG16 configuration "D": channels per conv block, three convs in blocks 3-5.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_FC = (4096, 4096, 1000)


class BlobSpec(NamedTuple):
    layer: str
    index: int
    dims: tuple  # legacy (num, channels, height, width)

    @property
    def count(self) -> int:
        return math.prod(self.dims)


class LayerSpec(NamedTuple):
    name: str
    type: str
    bottom: str
    top: str
    params: dict  # field name -> dict of a *_param message
    blobs: tuple  # BlobSpec


def _width(c: int, scale: float) -> int:
    return max(1, round(c * math.sqrt(scale)))


def vgg16_layers(scale: float = 1.0) -> list[LayerSpec]:
    """VGG16's deploy layers with blob shapes for ``scale`` (1.0: the real network)."""
    layers: list[LayerSpec] = []
    prev, c_in, top = "data", 3, "data"
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        for i, c in enumerate(block, start=1):
            c_out = _width(c, scale)
            name = f"conv{b}_{i}"
            layers.append(LayerSpec(name, "Convolution", prev, name,
                                    {"convolution_param": {"num_output": c_out, "pad": [1], "kernel_size": [3]}},
                                    (BlobSpec(name, 0, (c_out, c_in, 3, 3)), BlobSpec(name, 1, (1, 1, 1, c_out)))))
            layers.append(LayerSpec(f"relu{b}_{i}", "ReLU", name, name, {}, ()))
            prev, c_in = name, c_out
        pool = f"pool{b}"
        layers.append(LayerSpec(pool, "Pooling", prev, pool,
                                {"pooling_param": {"pool": 0, "kernel_size": 2, "stride": 2}}, ()))
        prev = pool
    n_in = c_in * 7 * 7
    for k, n in enumerate(VGG16_FC, start=6):
        n_out = n if k == 8 else _width(n, scale)
        name = f"fc{k}"
        layers.append(LayerSpec(name, "InnerProduct", prev, name, {"inner_product_param": {"num_output": n_out}},
                                (BlobSpec(name, 0, (1, 1, n_out, n_in)), BlobSpec(name, 1, (1, 1, 1, n_out)))))
        prev, n_in = name, n_out
        if k < 8:
            layers.append(LayerSpec(f"relu{k}", "ReLU", name, name, {}, ()))
            layers.append(LayerSpec(f"drop{k}", "Dropout", name, name, {"dropout_param": {"dropout_ratio": 0.5}},
                                    ()))
    layers.append(LayerSpec("prob", "Softmax", prev, "prob", {}, ()))
    return layers


# -- protobuf wire format (just what a caffemodel needs) ----------------------------------------

def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _len_field(field: int, payload: int) -> bytes:
    return _key(field, 2) + _varint(payload)


def _string(field: int, text: str) -> bytes:
    raw = text.encode()
    return _len_field(field, len(raw)) + raw


def _layer_params(layer: LayerSpec) -> bytes:
    """The non-blob part of a LayerParameter, through the runtime caffe.proto classes."""
    from mapspec.frameworks.caffe import schema

    msg = schema.LayerParameter()
    msg.name, msg.type = layer.name, layer.type
    msg.bottom.append(layer.bottom)
    msg.top.append(layer.top)
    for field, values in layer.params.items():
        sub = getattr(msg, field)
        for k, v in values.items():
            if isinstance(v, list):
                getattr(sub, k).extend(v)
            else:
                setattr(sub, k, v)
    return msg.SerializeToString()


def _blob_head(blob: BlobSpec) -> bytes:
    """BlobProto fields before the packed data: legacy num/channels/height/width, then data's tag+length."""
    dims = b"".join(_key(f, 0) + _varint(d) for f, d in zip((1, 2, 3, 4), blob.dims))
    return dims + _len_field(5, blob.count * 4)


def _values(rng: np.random.Generator, count: int, std: float) -> Iterator[np.ndarray]:
    done = 0
    while done < count:
        n = min(_BLOCK, count - done)
        yield (rng.standard_normal(n, dtype=np.float32) * np.float32(std)).astype("<f4", copy=False)
        done += n


def vgg16_caffemodel(path: str, scale: float = 1.0, seed: int = 0) -> dict:
    """Write the VGG16-shaped caffemodel; returns its facts (values, bytes, largest blob)."""
    rng = np.random.default_rng(seed)
    layers = vgg16_layers(scale)
    largest = max((b for l in layers for b in l.blobs), key=lambda b: b.count)
    values = 0
    with open(path, "wb") as f:
        f.write(_string(1, "VGG_ILSVRC_16_layers"))
        for layer in layers:
            head = _layer_params(layer)
            blob_bodies = [(_blob_head(b), b) for b in layer.blobs]
            framed = sum(len(_len_field(7, len(h) + b.count * 4)) + len(h) + b.count * 4 for h, b in blob_bodies)
            f.write(_len_field(100, len(head) + framed))
            f.write(head)
            for h, b in blob_bodies:
                f.write(_len_field(7, len(h) + b.count * 4))
                f.write(h)
                fan_in = math.prod(b.dims[1:]) if b.index == 0 else 1
                for block in _values(rng, b.count, 1.0 / math.sqrt(fan_in)):
                    f.write(memoryview(block))
                values += b.count
        size = f.tell()
    return {"path": str(path), "bytes": size, "values": values, "largest": f"{largest.layer}[{largest.index}]",
            "largest_shape": list(largest.dims), "largest_bytes": largest.count * 4}


SAFETENSORS_KINDS = ("attn.q", "attn.o", "mlp.up", "mlp.down")


def _write_safetensors(path: str, entries: list, rng: np.random.Generator, dtype: str = "F32") -> int:
    """A safetensors file of float32 (or ``dtype="F16"``: float16, centred) tensors ``[(name, shape), ...]``
    with seeded uniform values; its size."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    size = {"F32": 4, "F16": 2}[dtype]
    for name, shape in entries:
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, shape in entries:
            total, done = int(np.prod(shape)), 0
            while done < total:
                n = min(_BLOCK, total - done)
                x = rng.random(n, dtype=np.float32)
                f.write(memoryview(x.astype("<f4", copy=False) if dtype == "F32" else (x - 0.5).astype("<f2")))
                done += n
        return f.tell()


def safetensors_checkpoint(path: str, count: int = 64, rows: int = 4096, cols: int = 4096, seed: int = 0) -> dict:
    """Write ``count`` float32 ``rows x cols`` tensors (names cycling through SAFETENSORS_KINDS)."""
    rng = np.random.default_rng(seed)
    names = [f"layers.{i // len(SAFETENSORS_KINDS)}.{SAFETENSORS_KINDS[i % len(SAFETENSORS_KINDS)]}.weight"
             for i in range(count)]
    size = _write_safetensors(path, [(n, (rows, cols)) for n in names], rng)
    return {"path": str(path), "bytes": size, "tensors": count, "largest_bytes": rows * cols * 4,
            "largest_shape": [rows, cols]}


# A Llama-shaped model (TinyLlama-1.1B's widths: hidden 2048, MLP 5632, 32000 tokens, 4 KV heads of 64),
# with as many layers as the wanted size needs; Hugging Face names, float32.
LLAMA = {"hidden": 2048, "mlp": 5632, "vocab": 32000, "kv": 256}


def llama_entries(gib: float) -> list:
    h, m, v, kv = LLAMA["hidden"], LLAMA["mlp"], LLAMA["vocab"], LLAMA["kv"]
    layer = [("self_attn.q_proj.weight", (h, h)), ("self_attn.k_proj.weight", (kv, h)),
             ("self_attn.v_proj.weight", (kv, h)), ("self_attn.o_proj.weight", (h, h)),
             ("mlp.gate_proj.weight", (m, h)), ("mlp.up_proj.weight", (m, h)), ("mlp.down_proj.weight", (h, m)),
             ("input_layernorm.weight", (h,)), ("post_attention_layernorm.weight", (h,))]
    per_layer = sum(int(np.prod(s)) * 4 for _, s in layer)
    fixed = (2 * v * h + h) * 4
    layers = max(1, round((gib * (1 << 30) - fixed) / per_layer))
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(layers):
        out += [(f"model.layers.{i}.{n}", s) for n, s in layer]
    return out + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def llama_sharded(directory: str, gib: float = 4.0, shard_bytes: int = 2 * 10 ** 9, seed: int = 0,
                  scale: float = 1.0) -> dict:
    """A sharded checkpoint as save_pretrained writes it (model-0000k-of-0000n.safetensors + index);
    ``scale`` < 1 shrinks every dimension (tests)."""
    entries = [(n, tuple(max(1, int(d * scale)) for d in s)) for n, s in llama_entries(gib)]
    shards, size = [[]], 0
    for name, shape in entries:
        n = int(np.prod(shape)) * 4
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    rng = np.random.default_rng(seed)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    weight_map, total_file = {}, 0
    for k, group in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        total_file += _write_safetensors(str(d / fname), group, rng)
        weight_map.update({name: fname for name, _ in group})
    total = sum(int(np.prod(s)) * 4 for _, s in entries)
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    largest = max(int(np.prod(s)) * 4 for _, s in entries)
    return {"path": str(d), "bytes": total_file, "tensors": len(entries), "shards": len(shards),
            "largest_bytes": largest, "layers": (len(entries) - 3) // 9}


def llama_hf(directory: str, gib: float = 2.0, scale: float = 1.0, seed: int = 0) -> dict:
    """A Hugging Face Llama checkpoint as save_pretrained lays it out for llama.cpp's converter: config.json
    (transformers' LlamaConfig, TinyLlama's widths, as many layers as ``gib`` of float16 needs), one float16
    model.safetensors, and a tiny sentencepiece tokenizer.model; ``scale`` < 1 shrinks every width (tests)."""
    import io

    import sentencepiece as spm
    import transformers

    entries = [(n, tuple(max(1, int(d * scale)) for d in s)) for n, s in llama_entries(gib * 2)]
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    h, m, v, kv = (max(1, int(LLAMA[k] * scale)) for k in ("hidden", "mlp", "vocab", "kv"))
    heads = max(1, int(32 * scale))
    layers = (len(entries) - 3) // 9
    transformers.LlamaConfig(vocab_size=v, hidden_size=h, intermediate_size=m, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads * kv // h),
                             max_position_embeddings=2048, architectures=["LlamaForCausalLM"],
                             tie_word_embeddings=False, dtype="float16").save_pretrained(d)
    size = _write_safetensors(str(d / "model.safetensors"), entries, np.random.default_rng(seed), "F16")
    model = io.BytesIO()
    text = ["the quick brown fox jumps over the lazy dog", "weights and tensors of a model"] * 50
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model, vocab_size=min(48, v),
                                   model_type="bpe", hard_vocab_limit=False, minloglevel=2)
    (d / "tokenizer.model").write_bytes(model.getvalue())
    return {"path": str(d), "bytes": size, "tensors": len(entries), "layers": layers,
            "largest_bytes": max(int(np.prod(s)) * 2 for _, s in entries)}


# A Llama-shaped GGUF (llama.cpp names, float16): per layer attn_q/k/v/output 4096 x 4096, ffn_up 8192 x 4096,
# ffn_down 4096 x 8192; 8 layers = 48 tensors, 2 GiB.  Written by hand (the GGUF v3 layout), not by a GGUF writer.
GGUF_LAYER = (("attn_q", (4096, 4096)), ("attn_k", (4096, 4096)), ("attn_v", (4096, 4096)),
              ("attn_output", (4096, 4096)), ("ffn_up", (8192, 4096)), ("ffn_down", (4096, 8192)))
_GGUF_ALIGN = 32


def _gguf_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def llama_gguf(path: str, layers: int = 8, scale: float = 1.0, seed: int = 0) -> dict:
    """A GGUF v3 file of float16 tensors ``blk.<i>.<kind>.weight`` (GGUF_LAYER, every width times
    ``scale``), metadata general.architecture/general.name/llama.block_count; its facts."""
    entries = [(f"blk.{i}.{kind}.weight", tuple(max(1, int(d * scale)) for d in shape))
               for i in range(layers) for kind, shape in GGUF_LAYER]
    kv = [("general.architecture", 8, _gguf_str("llama")), ("general.name", 8, _gguf_str("bench-llama")),
          ("llama.block_count", 4, struct.pack("<I", layers))]  # 8: string, 4: uint32
    head = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(entries), len(kv)))
    for key, vtype, value in kv:
        head += _gguf_str(key) + struct.pack("<I", vtype) + value
    offset = 0
    for name, shape in entries:
        ne = tuple(reversed(shape))  # fastest dimension first
        head += _gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
        head += struct.pack("<IQ", 1, offset)  # ggml type 1: F16
        offset += -(-int(np.prod(shape)) * 2 // _GGUF_ALIGN) * _GGUF_ALIGN
    head += b"\0" * (-len(head) % _GGUF_ALIGN)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(head)
        for _, shape in entries:
            total, done = int(np.prod(shape)), 0
            while done < total:
                n = min(_BLOCK, total - done)
                f.write(memoryview((rng.random(n, dtype=np.float32) - 0.5).astype("<f2")))
                done += n
            f.write(b"\0" * (-total * 2 % _GGUF_ALIGN))
        size = f.tell()
    return {"path": str(path), "bytes": size, "tensors": len(entries),
            "largest_bytes": max(int(np.prod(s)) * 2 for _, s in entries)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("vgg16")
    p.add_argument("path")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("safetensors")
    p.add_argument("path")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("gguf", help="a Llama-shaped float16 GGUF file")
    p.add_argument("path")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("llama", help="a Llama-shaped sharded safetensors checkpoint (directory)")
    p.add_argument("path")
    p.add_argument("--gib", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.kind == "vgg16":
        print(json.dumps(vgg16_caffemodel(a.path, a.scale, a.seed)))
    elif a.kind == "gguf":
        print(json.dumps(llama_gguf(a.path, a.layers, seed=a.seed)))
    elif a.kind == "llama":
        print(json.dumps(llama_sharded(a.path, a.gib, seed=a.seed)))
    else:
        print(json.dumps(safetensors_checkpoint(a.path, a.count, a.rows, a.cols, a.seed)))


if __name__ == "__main__":
    main()
