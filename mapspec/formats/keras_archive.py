"""Keras 3 ``.keras`` archives: a zip of ``metadata.json``, ``config.json`` and ``model.weights.h5``.

``model.save("x.keras")`` writes the three members (stored, not compressed; a model with
assets adds ``assets/...``).  The weights member is a Keras 3 ``.weights.h5`` file, so the
tensors and their names are exactly those of :mod:`mapspec.formats.keras` (``dense/kernel``,
``block1/conv1/kernel``); this module only handles the zip around it.

Reading: the zip directory is checked (one ``model.weights.h5``, no member name that would
leave a folder when extracted, sizes against the archive, a compressed member may not expand
more than 16:1, so a zip bomb is refused before anything is extracted; Keras itself stores the
members uncompressed), the weights member is copied, with a byte cap, into an unnamed
temporary file (nothing is left behind, even by a kill -9), and opened by the Keras HDF5
reader as a file object (which parses it in a child process first, handing it the open file:
libhdf5 can hang on damaged files).

Writing: a template ``.keras`` archive is required (it holds the model's architecture).  The
weights stream into a temporary ``.weights.h5`` through the Keras HDF5 writer with the
template's weights as its template (same groups, names and shapes); ``close`` writes the
output archive: every member of the template in its order, with ``model.weights.h5``
replaced by ours, so ``keras.saving.load_model`` builds the template's model and loads the
converted weights.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from typing import Optional, Sequence

import numpy as np

from ..errors import FormatError, MapspecError
from . import keras_hdf5 as kh5
from ..files import read_head
from .base import Reader, TensorInfo, Writer, save_with
from .keras_weights import KerasReader, KerasWriter

NAME = "keras-archive"
WEIGHTS = "model.weights.h5"
MEMBERS = ("metadata.json", "config.json", WEIGHTS)
MAX_RATIO = 16  # a compressed member may expand at most this much (weights are extracted to disk)
MAX_JSON = 64 << 20  # bytes of config.json / metadata.json
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError,
               RuntimeError, KeyError)
WRITE_DTYPES = kh5.WRITE_DTYPES
NAMED_TEMP = True  # the weights stream into a temporary .weights.h5 beside the output's (libhdf5 needs a name)


def sniff(path: str, head: bytes) -> bool:
    """A zip whose first member is one of the files Keras puts in a ``.keras`` archive."""
    if head[:4] != b"PK\x03\x04" or len(head) < 30:
        return False
    n = int.from_bytes(head[26:28], "little")
    return head[30:30 + n].decode("latin-1") in MEMBERS


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(path)
        members = zf.infolist()
    except _ZIP_ERRORS as e:
        raise FormatError(path, f"not a readable zip archive (a .keras file is one): {e}") from None
    size = os.path.getsize(path)
    names = [m.filename for m in members]
    for zi in members:
        if zi.compress_size > size or zi.header_offset > size:
            zf.close()
            raise FormatError(path, f"zip member {zi.filename!r} claims {zi.compress_size} bytes at "
                              f"{zi.header_offset}, past the end of the {size}-byte archive", offset=zi.header_offset)
        if zi.compress_type != zipfile.ZIP_STORED and zi.file_size > MAX_RATIO * zi.compress_size + (1 << 20):
            zf.close()
            raise FormatError(path, f"zip member {zi.filename!r} claims {zi.file_size} bytes from "
                              f"{zi.compress_size} compressed, more than {MAX_RATIO}:1 (a zip bomb, or an archive "
                              f"re-compressed by another tool: Keras stores its members uncompressed)",
                              offset=zi.header_offset)
    for zi in members:
        if _unsafe(zi.filename):
            zf.close()
            raise FormatError(path, f"zip member {zi.filename!r} has an unsafe name (absolute, '..', a backslash "
                              f"or a drive letter: extracted, it would leave its folder); refused",
                              offset=zi.header_offset)
    if names.count(WEIGHTS) != 1 or "config.json" not in names:
        zf.close()
        raise FormatError(path, f"a .keras archive holds exactly one {WEIGHTS} and a config.json; this zip "
                          f"has {', '.join(names[:8]) or 'no members'}")
    return zf


def _unsafe(name: str) -> bool:
    """A member name that extraction would put outside its folder (as on any system that reads it)."""
    parts = name.split("/")
    return (not name or name.startswith("/") or "\\" in name or "\0" in name or ".." in parts
            or (len(name) > 1 and name[1] == ":"))


def _extract(path: str, zf: zipfile.ZipFile, out) -> None:
    """Copy the weights member into the open file ``out``, never more bytes than the directory promised."""
    zi = zf.getinfo(WEIGHTS)
    written = 0
    try:
        with zf.open(zi) as src:
            while True:
                chunk = src.read(16 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > zi.file_size:
                    raise FormatError(path, f"{WEIGHTS} expands past its declared {zi.file_size} bytes "
                                      f"(corrupt file or zip bomb)", offset=zi.header_offset)
                out.write(chunk)
    except _ZIP_ERRORS as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(path, f"cannot read {WEIGHTS} from the archive: {e}", offset=zi.header_offset) from None


class KerasArchiveReader(Reader):
    """The weights of a ``.keras`` archive, named as the Keras HDF5 reader names them."""

    format = NAME

    def __init__(self, path: str, isolate: bool = True, timeout: float = kh5.PROBE_TIMEOUT):
        super().__init__(path)
        self._inner: Optional[KerasReader] = None
        self._weights = None
        try:
            with _open_zip(path) as zf:
                self.members = [zi.filename for zi in zf.infolist()]
                self._weights = tempfile.TemporaryFile(prefix="mapspec-keras-archive-")  # unnamed (O_TMPFILE)
                _extract(path, zf, self._weights)
                self._weights.flush()
            try:
                self._inner = KerasReader(self.weights_name, isolate=isolate, timeout=timeout,
                                              fileobj=self._weights)
            except FormatError as e:
                raise FormatError(path, f"{WEIGHTS} in the archive: {e.bare}", offset=e.offset,
                                  tensor=e.tensor) from None
            if self._inner.layout != kh5.KERAS3:
                raise FormatError(path, f"{WEIGHTS} in the archive is not in the Keras 3 layout")
        except BaseException:
            self.close()
            raise
        self._infos = self._inner.infos()
        self.layout = self._inner.layout
        self.entries = self._inner.entries

    def nodes(self) -> list:
        return self._inner.nodes()

    def attrs(self, node: str) -> dict:
        return self._inner.attrs(node)

    def _read(self, info: TensorInfo) -> np.ndarray:
        return self._inner.read(info.name)

    @property
    def weights_name(self) -> str:
        """How messages name the weights member: ``model.keras!model.weights.h5``."""
        return f"{self.path}!{WEIGHTS}"

    def weights_reader(self) -> KerasReader:
        """Another reader of the weights member (already probed), for the caller to close before this one."""
        return KerasReader(self.weights_name, isolate=False, fileobj=self._weights)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None
        if self._weights is not None:
            self._weights.close()
            self._weights = None


class KerasArchiveWriter(Writer):
    """Streams the weights into a temporary ``.weights.h5``; ``close`` writes the archive (see module doc)."""

    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], template: Optional[str] = None,
                 final_path: Optional[str] = None, **options):
        super().__init__(path, infos)
        if template is None or not sniff(str(template), read_head(str(template))):
            raise MapspecError(f"{path}: writing a .keras archive needs a template .keras file (target: "
                               f"{{template: model.keras}} or --template): it holds the model's architecture")
        self._template = KerasArchiveReader(str(template))
        self._h5path = path + ".weights.h5"
        try:
            self._inner = KerasWriter(self._h5path, infos, layout=kh5.KERAS3,
                                          template=self._template.weights_reader())
        except BaseException:
            self._template.close()
            raise

    def write(self, name: str, array: np.ndarray) -> None:
        self._check(name, np.asarray(array))
        self._inner.write(name, array)

    def close(self) -> None:
        super().close()
        self._inner.close()
        try:
            with zipfile.ZipFile(self._template.path) as src, \
                    zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as out:
                for zi in src.infolist():
                    if zi.filename == WEIGHTS:
                        out.write(self._h5path, WEIGHTS)
                    elif zi.filename.endswith(".json") and zi.file_size > MAX_JSON:
                        raise MapspecError(f"{self._template.path}: {zi.filename} is {zi.file_size} bytes; "
                                           f"more than {MAX_JSON} is not a Keras config")
                    else:
                        with src.open(zi) as f, out.open(zipfile.ZipInfo(zi.filename, zi.date_time), "w",
                                                         force_zip64=zi.file_size > 1 << 31) as o:
                            shutil.copyfileobj(f, o, 16 << 20)
        except _ZIP_ERRORS as e:
            raise MapspecError(f"{self._template.path}: cannot copy the template archive: {e}") from None
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._h5path)
        self._template.close()

    def abort(self) -> None:
        self._inner.abort()
        self._cleanup()


READ_OPTIONS = ("isolate", "timeout")
WRITE_OPTIONS = ()


def open(path: str, **options) -> KerasArchiveReader:  # noqa: A001 - the format API's name
    """Options: ``isolate`` and ``timeout``, as for the Keras HDF5 reader."""
    isolate, timeout = kh5.reader_options(path, options)
    return KerasArchiveReader(path, isolate=isolate, timeout=timeout)


def create(path: str, infos: Sequence[TensorInfo], **options) -> KerasArchiveWriter:
    return KerasArchiveWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
