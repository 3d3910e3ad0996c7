"""The zip container ``torch.save`` writes, written front to back without torch: :class:`ZipStore`.

Used by :class:`~mapspec.formats.torch.TorchWriter`, which streams ``data.pkl`` and each tensor's bytes
into it as records.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

from ..errors import MapspecError

# The zip container torch.save writes (torch's ``PyTorchStreamWriter``): stored records,
# each record's data 64-byte aligned by padding the local header's extra field (id "FB"),
# CRC-32 and sizes in a data descriptor after the data (flag bit 3), UTF-8 names (bit 11),
# ZIP64 fields where a size or offset needs them, and always a ZIP64 end record.
ALIGN = 64
_FLAGS = 0x0808
_DOS_DATE = 0x0021  # 1980-01-01, the earliest DOS date (no clock time in the file)
_U32 = 0xFFFFFFFF  # "see the ZIP64 extra field"
_ZIP64_AT = _U32  # sizes and offsets from here on need ZIP64 fields (tests lower it to exercise them)
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_DESCRIPTOR, _DESCRIPTOR64 = struct.Struct("<IIII"), struct.Struct("<IIQQ")
_END64, _LOCATOR64, _END = struct.Struct("<IQHHIIQQQQ"), struct.Struct("<IIQI"), struct.Struct("<IHHHHIIH")


class _Entry(NamedTuple):
    name: bytes
    offset: int
    crc: int
    size: int
    version: int


class ZipStore:
    """A stored (uncompressed) zip archive written front to back in torch.save's layout.

    ``add(name, pieces, size)`` streams one record from an iterable of byte buffers, hashing
    each piece as it goes (nothing is held but the piece); ``finish()`` writes the central
    directory.  Records live under ``<prefix>/`` as torch expects.
    """

    def __init__(self, fh, prefix: str):
        self._fh = fh
        self._prefix = prefix
        self._pos = 0
        self._entries: list[_Entry] = []

    def add(self, name: str, pieces, size: int) -> None:
        raw = f"{self._prefix}/{name}".encode("utf-8")
        big = size >= _ZIP64_AT
        version = 45 if big else 20
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if big else b""  # sizes follow in the descriptor
        pad = -(self._pos + _LOCAL.size + len(raw) + len(extra) + 4) % ALIGN
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        sizes = _U32 if big else 0
        head = _LOCAL.pack(0x04034B50, version, _FLAGS, 0, 0, _DOS_DATE, 0, sizes, sizes, len(raw), len(extra))
        offset = self._pos
        self._write(head + raw + extra)
        crc = done = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            self._write(piece)
            done += len(piece)
        if done != size:
            raise MapspecError(f"{self._fh.name}: record {name!r} has {done} bytes, {size} were announced "
                               f"(internal error)")
        desc = _DESCRIPTOR64 if big else _DESCRIPTOR
        self._write(desc.pack(0x08074B50, crc, size, size))
        self._entries.append(_Entry(raw, offset, crc, size, version))

    def _write(self, data) -> None:
        self._fh.write(data)
        self._pos += len(data)

    def finish(self) -> None:
        start = self._pos
        for e in self._entries:
            # ZIP64 extra: uncompressed size, compressed size, offset; each only if its own field overflows
            size, offset = _field32(e.size), _field32(e.offset)
            z64 = [e.size, e.size][:2 if size == _U32 else 0] + ([e.offset] if offset == _U32 else [])
            extra = struct.pack(f"<HH{len(z64)}Q", 1, 8 * len(z64), *z64) if z64 else b""
            version = 45 if z64 else e.version
            self._write(_CENTRAL.pack(0x02014B50, version, version, _FLAGS, 0, 0, _DOS_DATE, e.crc, size, size,
                                      len(e.name), len(extra), 0, 0, 0, 0, offset) + e.name + extra)
        n, cd_size, end64 = len(self._entries), self._pos - start, self._pos
        self._write(_END64.pack(0x06064B50, _END64.size - 12, 45, 45, 0, 0, n, n, cd_size, start))
        self._write(_LOCATOR64.pack(0x07064B50, 0, end64, 1))
        count = n if n < min(_ZIP64_AT, 0xFFFF) else 0xFFFF
        self._write(_END.pack(0x06054B50, 0, 0, count, count, _field32(cd_size), _field32(start), 0))


def _field32(v: int) -> int:
    """A 32-bit zip field: the value, or 0xFFFFFFFF when it needs the ZIP64 record."""
    return v if v < _ZIP64_AT else _U32

