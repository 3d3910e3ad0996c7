"""Protobuf wire encoding and bounds-checked decoding (mapspec/formats/protowire.py), against the protobuf
package's own encoder and serializer."""

from __future__ import annotations

import pytest

from mapspec.errors import FormatError
from mapspec.files import MappedFile
from mapspec.formats import protowire as pw

encoder = pytest.importorskip("google.protobuf.internal.encoder")
descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")

VALUES = [0, 1, 127, 128, 300, 16383, 16384, 2 ** 31 - 1, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1]


def _signed(v: int) -> bytes:
    out = []
    encoder._EncodeSignedVarint(out.append, v, True)
    return b"".join(out)


@pytest.mark.parametrize("v", VALUES)
def test_varint_and_tag_bytes_are_protobufs(v):
    assert pw.encode_varint(v) == encoder._VarintBytes(v)
    assert pw.tag(5, pw.LEN) == encoder.TagBytes(5, pw.LEN)


@pytest.mark.parametrize("v", [-1, -300, -(2 ** 63)])
def test_negative_int64_is_ten_bytes_like_protobuf(v):
    assert pw.encode_varint(v) == _signed(v) and len(pw.encode_varint(v)) == 10
    assert pw.signed64(v + (1 << 64)) == v


def test_fields_walks_a_message_protobuf_serialized(tmp_path):
    msg = descriptor_pb2.FieldDescriptorProto(name="weight", number=300, label=1, default_value="x" * 200)
    path = tmp_path / "m.bin"
    path.write_bytes(msg.SerializeToString())
    mf = MappedFile(path)
    try:
        wire = pw.Wire(mf)
        got = [(f, w) for f, w, *_ in wire.fields(0, mf.size, "a field")]
        # FieldDescriptorProto: name = 1, number = 3, label = 4, default_value = 7 (descriptor.proto)
        assert got == [(1, pw.LEN), (3, pw.VARINT), (4, pw.VARINT), (7, pw.LEN)]
        fields = {f: (v, end) for f, _, v, _, end in wire.fields(0, mf.size, "a field")}
        assert fields[3][0] == 300 and bytes(mf.buffer[fields[1][0]:fields[1][1]]) == b"weight"
        with pytest.raises(FormatError, match="claims 200 bytes"):
            list(wire.fields(0, mf.size - 1, "a field"))  # the last field cut short by one byte
    finally:
        mf.close()
