"""Structure-aware mutations of valid seed files.

``mutate(data, rng, kind, others)`` applies one to four stacked mutations chosen for the
input's structure (``kind`` is a :class:`~fuzz.targets.Target`'s ``mutations``):

* ``binary`` -- truncations, bit flips, interesting bytes and 1/2/4/8-byte words (the
  values that break length fields: 0, -1, 2**31, 2**63, the file size +- a little),
  small arithmetic on words, chunk deletion/duplication/insertion, splices with another
  seed, and protobuf varint edits (tags, lengths and values re-encoded in place).
* ``zip`` -- the member layer of a zip (npz, torch): a member's bytes are mutated (an
  ``.npy`` header as text, a pickle with opcode-aware edits) and the archive rebuilt so
  that it stays a valid zip; or the raw archive bytes are mutated.
* ``safetensors`` -- the JSON header edited as a tree (dtype codes, shapes, offsets),
  the length prefix fixed up or not; or raw bytes.
* ``json`` / ``yaml`` -- the document edited as a tree (subtrees replaced, moved,
  deleted; absurd numbers, deep nesting, MXNet attribute strings) and re-serialized; or
  token-level text edits.  A spec's ``verify:`` section is also pointed at code and paths
  (functions that write or read files, undeclared or ill-typed parameters), and its numbers
  replaced by integers of thousands of digits.
* ``text`` -- token-level edits (numbers, identifiers, brackets, lines).

Every choice comes from ``rng`` (a :class:`random.Random`), so a seed number reproduces
a run exactly.
"""

from __future__ import annotations

import copy
import io
import json
import random
import re
import struct
import warnings
import zipfile
from typing import Any, Callable, Sequence

MAX_SIZE = 1 << 20  # mutated inputs stay below 1 MB

INTERESTING_INTS = (0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 100, 127, 128, 255, 256, 1000, 1023, 1024,
                    4095, 4096, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
                    1 << 40, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, -1, -2, -128, -(1 << 31))
INTERESTING_TEXT_NUMBERS = ("0", "-1", "1", "2", "-0", "3.5", "1e308", "-1e308", "1e-320", "nan", "inf", "-inf",
                            "2147483647", "2147483648", "4294967296", "9223372036854775807",
                            "9223372036854775808", "18446744073709551616", "-9223372036854775809",
                            "99999999999999999999999999999999", "0x10", "1_000", "007", "1.", ".5", "-")
TEXT_TOKENS = ("{", "}", "[", "]", "(", ")", '"', "'", ":", ",", "\n", " ", "\t", "#", "\\", "\x00", "\ufeff",
               "&a ", "*a", "!!python/object/apply:os.system ['true']", "<<: *a", "? ", "- ", "|", ">", "---",
               "...", "%YAML 1.1", "!!binary", "null", "true", "~", "\u00e9", "\ud7ff", "<", ">", "{i}", "{",
               "<i:int>", "**", "*", "{1/0}", "{i+}", "1/0")
NPY_DESCRS = ("'<f4'", "'>f8'", "'|O'", "'<f16'", "'V8'", "'<U3'", "'b1'", "'<c8'", "'|b1'", "'<M8[s]'",
              "[('a', '<f4')]", "'<i8'", "'x'", "1", "None", "'<f2'", "'|V2'", "'<f0'")
PICKLE_TOKENS = (b"cos\nsystem\n", b"c__builtin__\neval\n", b"cbuiltins\ngetattr\n", b"ctorch\nFloatStorage\n",
                 b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_parameter\n",
                 b"ccollections\nOrderedDict\n", b"R", b"b", b"s", b"u", b"e", b"t", b"(", b")", b"]", b"}", b"N",
                 b"\x88", b"\x89", b"J\xff\xff\xff\x7f", b"J\xff\xff\xff\xff", b"K\x00", b"M\xff\xff",
                 b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f", b"X\xff\xff\xff\x7f", b"h\x00", b"q\x00", b".")
SAFETENSORS_DTYPES = ("F32", "F16", "BF16", "F64", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "I64", "U64", "C64",
                      "F4", "F8_E8M0", "X", "", "f32", 7, None)


def _weighted(rng: random.Random, table: Sequence[tuple]) -> Callable:
    total = sum(w for w, _ in table)
    x = rng.uniform(0, total)
    for w, f in table:
        x -= w
        if x <= 0:
            return f
    return table[-1][1]


def _pos(rng: random.Random, n: int) -> int:
    return rng.randrange(n) if n else 0


def _interesting(rng: random.Random, size: int) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.choice(INTERESTING_INTS)
    if r < 0.85:
        return size + rng.randint(-16, 16)
    return rng.getrandbits(rng.choice((8, 16, 32, 64)))


# -- binary ----------------------------------------------------------------------

def truncate(data: bytes, rng: random.Random, **_) -> bytes:
    if not data:
        return data
    if rng.random() < 0.3:  # near the end: tails are where footers and names live
        return data[:max(0, len(data) - rng.randint(1, min(64, len(data))))]
    return data[:_pos(rng, len(data))]


def flip_bits(data: bytes, rng: random.Random, **_) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4, 8))):
        i = _pos(rng, len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def set_byte(data: bytes, rng: random.Random, **_) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    b[_pos(rng, len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    return bytes(b)


def set_word(data: bytes, rng: random.Random, **_) -> bytes:
    """Overwrite a 1/2/4/8-byte integer (length fields, counts, dims, codes)."""
    width = rng.choice((1, 2, 4, 4, 8, 8))
    if len(data) < width:
        return data
    i = _pos(rng, len(data) - width + 1)
    if rng.random() < 0.6:
        i -= i % width
    value = _interesting(rng, len(data)) % (1 << (8 * width))
    order = "little" if rng.random() < 0.9 else "big"
    return data[:i] + value.to_bytes(width, order) + data[i + width:]


def add_word(data: bytes, rng: random.Random, **_) -> bytes:
    width = rng.choice((1, 2, 4, 8))
    if len(data) < width:
        return data
    i = _pos(rng, len(data) - width + 1)
    v = int.from_bytes(data[i:i + width], "little") + rng.choice((-1, 1)) * rng.randint(1, 35)
    return data[:i] + (v % (1 << (8 * width))).to_bytes(width, "little") + data[i + width:]


def delete_chunk(data: bytes, rng: random.Random, **_) -> bytes:
    if len(data) < 2:
        return data
    i = _pos(rng, len(data))
    n = rng.randint(1, max(1, min(len(data) - i, rng.choice((1, 4, 16, 256)))))
    return data[:i] + data[i + n:]


def duplicate_chunk(data: bytes, rng: random.Random, **_) -> bytes:
    if not data:
        return data
    i = _pos(rng, len(data))
    n = rng.randint(1, max(1, min(len(data) - i, rng.choice((4, 16, 256, 4096)))))
    j = _pos(rng, len(data) + 1)
    return data[:j] + data[i:i + n] * rng.choice((1, 1, 2, 8)) + data[j:]


def insert_bytes(data: bytes, rng: random.Random, **_) -> bytes:
    j = _pos(rng, len(data) + 1)
    n = rng.choice((1, 2, 4, 8, 32))
    blob = bytes(rng.randrange(256) for _ in range(n)) if rng.random() < 0.5 else bytes([rng.choice((0, 0xFF))]) * n
    return data[:j] + blob + data[j:]


def splice(data: bytes, rng: random.Random, others: Sequence[bytes] = (), **_) -> bytes:
    if not others:
        return data
    other = rng.choice(others)
    return data[:_pos(rng, len(data) + 1)] + other[_pos(rng, len(other) + 1):]


# -- protobuf varints (caffe, and any binary with LEB128 fields) ----------------------

def _varint_at(data: bytes, i: int) -> tuple:
    """(value, length) of a varint starting at ``i``, or (None, 0)."""
    v, shift = 0, 0
    for k in range(i, min(len(data), i + 10)):
        v |= (data[k] & 0x7F) << shift
        shift += 7
        if data[k] < 0x80:
            return v, k - i + 1
    return None, 0


def _encode_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _wire_fields(data: bytes, start: int, end: int, out: list, depth: int = 0) -> None:
    """Record (kind, offset, length) of every varint reachable by a tolerant protobuf walk."""
    i = start
    while i < end and len(out) < 4096:
        tag, n = _varint_at(data, i)
        if tag is None or tag == 0:
            return
        out.append(("tag", i, n))
        i += n
        wire = tag & 7
        if wire == 0:
            v, m = _varint_at(data, i)
            if v is None:
                return
            out.append(("value", i, m))
            i += m
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            ln, m = _varint_at(data, i)
            if ln is None or i + m + ln > end:
                return
            out.append(("length", i, m))
            if depth < 6 and ln:
                _wire_fields(data, i + m, i + m + ln, out, depth + 1)
            i += m + ln
        else:
            return


def varint_edit(data: bytes, rng: random.Random, **_) -> bytes:
    fields: list = []
    _wire_fields(data, 0, len(data), fields)
    if not fields:
        return set_word(data, rng)
    kind, i, n = rng.choice(fields)
    old, _ = _varint_at(data, i)
    r = rng.random()
    if kind == "length" and r < 0.5:
        new = old + rng.choice((-1, 1, -4, 4, 8, -8, 1 << 31, 1 << 62))
    elif kind == "tag" and r < 0.5:
        new = (rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 147, 536870911)) << 3) | rng.randrange(8)
    else:
        new = _interesting(rng, len(data))
    return data[:i] + _encode_varint(new) + data[i + n:]


BINARY_OPS = ((3, truncate), (4, flip_bits), (2, set_byte), (5, set_word), (2, add_word), (2, delete_chunk),
              (2, duplicate_chunk), (1, insert_bytes), (1, splice), (3, varint_edit))


def mutate_binary(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    return _weighted(rng, BINARY_OPS)(data, rng, others=others)


# -- text ------------------------------------------------------------------------

_TOKEN = re.compile(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|[A-Za-z_][A-Za-z0-9_./-]*|\"[^\"\n]*\"|'[^'\n]*'")


def mutate_text(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    text = data.decode("utf-8", "surrogateescape")
    r = rng.random()
    tokens = list(_TOKEN.finditer(text))
    if r < 0.35 and tokens:
        m = rng.choice(tokens)
        if m.group()[:1].isdigit() or m.group()[:1] == "-" or rng.random() < 0.3:
            new = rng.choice(INTERESTING_TEXT_NUMBERS)
        else:
            new = rng.choice(tokens).group()  # another token of the same file: a name, a type, a key
        text = text[:m.start()] + new + text[m.end():]
    elif r < 0.55:
        lines = text.split("\n")
        if len(lines) > 1:
            i, j = _pos(rng, len(lines)), _pos(rng, len(lines))
            op = rng.randrange(3)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    elif r < 0.75:
        j = _pos(rng, len(text) + 1)
        tok = rng.choice(TEXT_TOKENS)
        text = text[:j] + tok * rng.choice((1, 1, 1, 2, 50, 5000)) + text[j:]
    else:
        return mutate_binary(data, rng, others)
    return text.encode("utf-8", "surrogateescape")


# -- trees (JSON, YAML, the safetensors header) -------------------------------------

_MX_ATTRS = ("(3, 3)", "(0, 0)", "(-1, 3)", "(99999999, 99999999)", "()", "(1,)", "[2L, 2L]", "True", "False",
             "None", "0", "-1", "2e-05", "nan", "inf", "1e308", "relu", "prelu", "max", "avg", "full", "valid",
             "NCHW", "NHWC", "(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,"
             " 1, 1, 1, 1, 1)", "((1, 2), 3)", "(2, -2)", "'x'", "")


def _paths(obj, limit: int = 2000, max_depth: int = 64) -> list:
    """Key paths of the nodes of a JSON-like tree (breadth-first, bounded in count and depth)."""
    out, queue = [], [((), obj)]
    while queue and len(out) < limit:
        prefix, node = queue.pop(0)
        out.append(prefix)
        if len(prefix) >= max_depth:
            continue
        if isinstance(node, dict):
            queue += [(prefix + (k,), v) for k, v in node.items()]
        elif isinstance(node, list):
            queue += [(prefix + (i,), v) for i, v in enumerate(node)]
    return out


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def _random_value(rng: random.Random, doc, strings: Sequence[str]) -> Any:
    r = rng.random()
    if r < 0.25:
        return rng.choice(INTERESTING_INTS + (1e308, -0.0, float("nan"), 0.5, 10 ** 30, -(10 ** 30)))
    if r < 0.45 and strings:
        return rng.choice(strings)
    if r < 0.55:
        return rng.choice(_MX_ATTRS)
    if r < 0.65:
        return rng.choice((None, True, False, "", [], {}, [0], {"a": 1}))
    if r < 0.72:
        depth = rng.choice((10, 200, 5000))
        v: Any = 0
        for _ in range(depth):
            v = [v]
        return v
    if r < 0.8:
        return [rng.choice(INTERESTING_INTS) for _ in range(rng.choice((0, 1, 2, 4, 33)))]
    paths = _paths(doc)
    return _clone(_get(doc, rng.choice(paths)))


def _clone(v):
    try:
        return copy.deepcopy(v)
    except RecursionError:  # a deeply nested value: share it instead
        return v


def _strings(doc, limit: int = 500) -> list:
    out = []
    for path in _paths(doc):
        node = _get(doc, path)
        if isinstance(node, str):
            out.append(node)
        elif path and isinstance(path[-1], str):
            out.append(path[-1])
        if len(out) >= limit:
            break
    return out


def mutate_tree(doc, rng: random.Random, extra_values: Sequence = ()):
    """Edit a JSON-like tree in place (or return a new root)."""
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return _random_value(rng, doc, _strings(doc))
    path = rng.choice(paths)
    parent = _get(doc, path[:-1])
    key = path[-1]
    r = rng.random()
    if r < 0.15:  # delete
        if isinstance(parent, dict):
            del parent[key]
        else:
            del parent[key]
    elif r < 0.25 and isinstance(parent, list):  # duplicate an item
        parent.insert(rng.randrange(len(parent) + 1), _clone(parent[key]))
    elif r < 0.3 and isinstance(parent, dict):  # rename a key to another string of the document
        strings = _strings(doc)
        if strings:
            parent[rng.choice(strings)] = parent.pop(key)
    elif r < 0.45 and extra_values:
        parent[key] = rng.choice(extra_values)
    elif r < 0.6 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] = parent[key] + rng.choice((-1, 1, -2, 2, 1 << 31, 1 << 32, 1 << 63, -(1 << 63)))
    else:
        parent[key] = _random_value(rng, doc, _strings(doc))
    return doc


def mutate_json(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    if rng.random() < 0.65:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
        if doc is not None:
            for _ in range(rng.choice((1, 1, 2, 3))):
                doc = mutate_tree(doc, rng, _MX_ATTRS)
            try:
                return json.dumps(doc, indent=rng.choice((None, 1))).encode()
            except Exception:  # noqa: BLE001 - an unrepresentable tree (cycles, depth): edit the text instead
                pass
    return mutate_text(data, rng, others)


# What a hostile spec's verify: section may try to name: code (file writers and readers, the standard
# library), paths for it to touch, parameters a factory does not declare or of the wrong type.
HOSTILE_MODELS = ("mapspec.models.seeded:write_caffemodel", "mapspec.models.seeded:caffe_weights", "os:system",
                  "builtins:open", "shutil:rmtree", "../../evil.py:f", "/tmp/evil.py:f", "densenet121",
                  "mobilefacenet", "hf_llama", "caffe_weights", "", 7, None, ["densenet121"], {"a": 1})
HOSTILE_PARAMS = ({"prototxt": "../../creds.txt", "path": "/tmp/mapspec-fuzz-owned"}, {"weights": "/etc/passwd"},
                  {"num_classes": 10 ** 30}, {"num_classes": "10"}, {"num_classes": 0}, {"normalize": 1},
                  {"num_classes": 10}, {"normalize": True}, [], "../x", None)
HUGE_INT = "9" * 5000  # past Python's 4300-digit limit of int(text)


def _hostile_verify(doc, rng: random.Random):
    """Point a spec's verify: section at code or paths (the tree edit the registry must refuse)."""
    if not isinstance(doc, dict):
        return doc
    verify = doc.get("verify") if isinstance(doc.get("verify"), dict) else {}
    side = verify.setdefault(rng.choice(("source", "target")), {"run": "torch"})
    if isinstance(side, dict):
        side["model"] = rng.choice(HOSTILE_MODELS)
        if rng.random() < 0.6:
            side["params"] = rng.choice(HOSTILE_PARAMS)
    verify.setdefault("source" if "target" in verify else "target", {"run": "torch"})
    doc["verify"] = verify
    if rng.random() < 0.5:
        doc["vars"] = {"prototxt": "../../creds.txt", "path": "/tmp/mapspec-fuzz-owned", "weights": "/etc/passwd"}
    return doc


def _huge_integer(data: bytes, rng: random.Random) -> bytes:
    """A run of digits (in a YAML number or inside a {expr}) replaced by thousands of digits."""
    text = data.decode("utf-8", "surrogateescape")
    runs = list(re.finditer(r"\d+", text))
    if not runs:
        return (text + f"\nvars: {{huge: {HUGE_INT}}}\n").encode("utf-8", "surrogateescape")
    m = rng.choice(runs)
    return (text[:m.start()] + rng.choice((HUGE_INT, HUGE_INT[:4301], "1" + "0" * 100)) + text[m.end():]).encode(
        "utf-8", "surrogateescape")


def mutate_yaml(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    r = rng.random()
    if r < 0.08:
        return _huge_integer(data, rng)
    if r < 0.16:
        import yaml

        try:
            doc = yaml.safe_load(data)
        except Exception:  # noqa: BLE001 - not YAML any more: edit the text instead
            doc = None
        if isinstance(doc, dict):
            try:
                return yaml.safe_dump(_hostile_verify(doc, rng), default_flow_style=rng.random() < 0.5).encode()
            except Exception:  # noqa: BLE001 - an unrepresentable tree: edit the text instead
                pass
    if rng.random() < 0.4:
        import yaml

        try:
            doc = yaml.safe_load(data)
        except Exception:  # noqa: BLE001 - not YAML any more: edit the text instead
            doc = None
        if isinstance(doc, (dict, list)):
            for _ in range(rng.choice((1, 1, 2, 3))):
                doc = mutate_tree(doc, rng, ("{i}", "<i:int>", "conv<i>.weight", "{1/0}", "{i * 99999999999}",
                                             "*", "**", "float99", "transpose", {"range": [0, 10 ** 9]},
                                             # numeric and size edges for the apply target
                                             1.0e30, float("nan"), 2 ** 63, -2 ** 63 - 1, "float16", "int8",
                                             ["overflow"], {"take": [0] * 64}, [2 ** 62, 2 ** 62, 0]))
            try:
                return yaml.safe_dump(doc, default_flow_style=rng.random() < 0.5).encode()
            except Exception:  # noqa: BLE001 - an unrepresentable tree (cycles, depth): edit the text instead
                pass
    return mutate_text(data, rng, others)


# -- safetensors ------------------------------------------------------------------

def mutate_safetensors(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    if len(data) >= 8 and rng.random() < 0.6:
        (n,) = struct.unpack("<Q", data[:8])
        try:
            header = json.loads(data[8:8 + n])
        except (ValueError, RecursionError):
            header = None
        if isinstance(header, dict):
            for _ in range(rng.choice((1, 1, 2))):
                header = mutate_tree(header, rng, SAFETENSORS_DTYPES + ([0, 1 << 62], [5, 3], [-1, 2], [0]))
            try:
                raw = json.dumps(header).encode()
            except Exception:  # noqa: BLE001 - cycles, depth
                return mutate_binary(data, rng, others)
            rest = data[8 + n:]
            if rng.random() < 0.15:
                raw += b" " * rng.randrange(8)
            length = len(raw) if rng.random() < 0.85 else _interesting(rng, len(raw)) % (1 << 64)
            return struct.pack("<Q", length) + raw + rest
    return mutate_binary(data, rng, others)


# -- zip archives (npz, torch) ------------------------------------------------------

def _mutate_member(name: str, raw: bytes, rng: random.Random) -> bytes:
    if name.endswith(".npy") and raw[:6] == b"\x93NUMPY" and len(raw) >= 12 and rng.random() < 0.7:
        major = raw[6]
        hl_size = 2 if major == 1 else 4
        start = 8 + hl_size
        (hlen,) = struct.unpack("<H" if hl_size == 2 else "<I", raw[8:start])
        text = raw[start:start + hlen].decode("latin1")
        body = raw[start + hlen:]
        r = rng.random()
        if r < 0.3:
            text = re.sub(r"'descr': [^,]+", "'descr': " + rng.choice(NPY_DESCRS), text)
        elif r < 0.6:
            shape = rng.choice(("()", "(0,)", "(-1,)", "(1 << 62,)", "(99999999999,)", "(2, 3)", "(3, 2)",
                                "(True,)", "(2.0,)", "[2, 3]", "(" + "1," * 40 + ")", "(9223372036854775807, 2)",
                                "(4611686018427387904, 4)"))
            text = re.sub(r"'shape': \([^)]*\)", "'shape': " + shape, text)
        elif r < 0.75:
            text = text.replace("False", "True") if "False" in text else text.replace("True", "False")
        else:
            text = mutate_text(text.encode("latin1"), rng).decode("latin1", "replace")
        new = text.encode("latin1", "replace")
        if rng.random() < 0.8:
            hl_size = 4 if len(new) > 0xFFFF else hl_size
            version = (major if major in (2, 3) else 2) if hl_size == 4 else 1
            hdr = struct.pack("<BB", version, 0)
            hdr += struct.pack("<H", len(new)) if hl_size == 2 else struct.pack("<I", len(new))
        else:
            hdr = raw[6:start]
        return b"\x93NUMPY" + hdr + new + body
    if name.endswith(".pkl") and rng.random() < 0.5:
        i = _pos(rng, len(raw) + 1)
        if rng.random() < 0.5:
            return raw[:i] + rng.choice(PICKLE_TOKENS) + raw[i:]
        return raw[:i] + rng.choice(PICKLE_TOKENS) + raw[i + rng.randint(1, 8):]
    return mutate_binary(raw, rng)


def mutate_zip(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    if rng.random() < 0.6:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = [(zi, z.read(zi)) for zi in z.infolist()]
        except Exception:  # noqa: BLE001 - any unreadable archive: fall back to raw bytes
            members = None
        if members:
            k = rng.randrange(len(members))
            zi, raw = members[k]
            r = rng.random()
            if r < 0.8:
                members[k] = (zi, _mutate_member(zi.filename, raw, rng))
            elif r < 0.9:
                del members[k]
            else:
                members.insert(rng.randrange(len(members) + 1), (zi, raw))  # duplicate member name
            buf = io.BytesIO()
            try:
                with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as out:
                    warnings.simplefilter("ignore")  # "Duplicate name": intended
                    for zi, raw in members:
                        info = zipfile.ZipInfo(zi.filename, zi.date_time)
                        info.compress_type = zi.compress_type
                        with out.open(info, "w", force_zip64=rng.random() < 0.2) as f:
                            f.write(raw)
            except Exception:  # noqa: BLE001 - e.g. duplicate names warn; fall back to raw bytes
                return mutate_binary(data, rng, others)
            return buf.getvalue()
    return mutate_binary(data, rng, others)


MUTATORS: dict[str, Callable] = {
    "binary": mutate_binary, "text": mutate_text, "json": mutate_json, "yaml": mutate_yaml,
    "safetensors": mutate_safetensors, "zip": mutate_zip,
}


def mutate(data: bytes, rng: random.Random, kind: str, others: Sequence[bytes] = ()) -> bytes:
    """One to four stacked mutations of ``data`` suited to ``kind``; never larger than MAX_SIZE."""
    f = MUTATORS[kind]
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        data = f(data, rng, others)
        if len(data) > MAX_SIZE:
            data = data[:MAX_SIZE]
    return data
