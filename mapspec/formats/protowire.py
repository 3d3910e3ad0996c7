"""Protocol-buffer wire format: a bounds-checked decoder over a memory map and the encoders.

Shared by the formats that scan protobuf files themselves instead of parsing them
with the protobuf library (Caffe's caffemodel, ONNX): field values are located by
offset, so tensor data is never copied and the library's 2 GB message limit does
not apply.
"""

from __future__ import annotations

from ..errors import FormatError
from ..files import MappedFile

# wire types
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
_WIRE_NAMES = {VARINT: "varint", I64: "64-bit", LEN: "length-delimited", SGROUP: "start-group",
               EGROUP: "end-group", I32: "32-bit"}
_FIXED_SIZE = {I32: 4, I64: 8}


class Wire:
    """Bounds-checked protobuf wire decoding over a :class:`MappedFile`."""

    def __init__(self, mf: MappedFile, kind: str = "Caffe", expected: str = "a caffemodel"):
        self.kind, self.expected = kind, expected
        self.mf = mf
        self.buf = mf.buffer
        self.path = mf.path

    def error(self, offset: int, message: str):
        return FormatError(self.path, message, offset=offset)

    def varint(self, pos: int, end: int, what: str) -> tuple:
        """(value, next position) of the varint at ``pos``; at most 10 bytes, never past ``end``."""
        buf = self.buf
        result = shift = 0
        start = pos
        while True:
            if pos >= end:
                raise self.error(start, f"truncated varint in {what} (the data ends at byte {end})")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise self.error(start, f"varint longer than 10 bytes in {what} (corrupt file)")

    def fields(self, start: int, end: int, what: str):
        """Yield ``(field, wire type, value, tag offset, end offset)`` for each field in [start, end).

        ``value`` is the integer for varints, the (offset of the) payload start for fixed and
        length-delimited fields; ``end offset`` is where the field ends.
        """
        pos = start
        while pos < end:
            tag_at = pos
            key, pos = self.varint(pos, end, what)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise self.error(tag_at, f"field number 0 in {what} (corrupt file)")
            if wire == VARINT:
                value, pos = self.varint(pos, end, what)
                yield field, wire, value, tag_at, pos
            elif wire in (I64, I32):
                size = _FIXED_SIZE[wire]
                if pos + size > end:
                    raise self.error(tag_at, f"field {field} of {what} needs {size} bytes but only {end - pos} "
                                     f"remain (truncated file)")
                yield field, wire, pos, tag_at, pos + size
                pos += size
            elif wire == LEN:
                length, body = self.varint(pos, end, what)
                if length > end - body:
                    raise self.error(tag_at, f"field {field} of {what} claims {length} bytes but only "
                                     f"{end - body} remain (truncated or corrupt file)")
                yield field, wire, body, tag_at, body + length
                pos = body + length
            else:
                raise self.error(tag_at, f"field {field} of {what} has wire type {wire} "
                                 f"({_WIRE_NAMES.get(wire, 'invalid')}), which {self.kind} files never use "
                                 f"(corrupt file?)")

    def expect(self, field: int, wire: int, want: int, tag_at: int, what: str) -> None:
        if wire != want:
            raise self.error(tag_at, f"field {field} of {what} has wire type {wire} ({_WIRE_NAMES.get(wire, '?')}),"
                             f" expected {_WIRE_NAMES[want]} (corrupt file, or not {self.expected})")


def signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def encode_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def len_field(field: int, payload_len: int) -> bytes:
    """Tag and length prefix of a length-delimited field."""
    return tag(field, LEN) + encode_varint(payload_len)
