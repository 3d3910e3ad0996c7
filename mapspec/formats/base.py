"""What every checkpoint format provides.

A format is one small module with the same four functions (see
:mod:`mapspec.formats` for the table that lists them):

``sniff(path, head) -> bool``
    Does the file look like this format?  ``head`` is its first 64 bytes.
``open(path, **options) -> Reader``
    Lazy: reads headers and structure, never tensor data, until asked.
``create(path, infos, **options) -> Writer``
    A streaming writer: it is told every tensor's name, shape and dtype up front
    (``infos``, in output order) and then receives the tensors one at a time.
    ``path`` is a temporary file; option ``final_path`` is the name it will get
    (for formats whose layout depends on the file name).  On Linux ``path`` is an
    unnamed file reached through ``/proc/self/fd/N`` (see :func:`mapspec.files.atomic_output`): a
    writer that needs a real name (a library that resolves it, files written beside
    it) sets ``NAMED_TEMP = True`` in its module.
``save(path, tensors, **options)``
    Convenience: write a whole ``{name: array}`` mapping through ``create``.

Readers hand out numpy arrays, memory-mapped views where the format allows.
Template-only formats (a ``.prototxt``, a ``-symbol.json``) are readers with
``has_data = False``: names, shapes and attributes, no values.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from .. import dtypes
from ..durable import written
from ..errors import FormatError, MapspecError
from ..files import atomic_output
from ..kernels import copy_range


class TensorInfo(NamedTuple):
    """Metadata of one tensor: what ``inspect`` and ``plan`` work from."""

    name: str
    shape: tuple
    dtype: Optional[str]  # canonical dtype name; None where the format does not fix it
    meta: Optional[Mapping[str, Any]] = None  # format-specific facts (MXNet aux state, Caffe layer type, ...)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * (dtypes.itemsize(self.dtype) if self.dtype else 4)


class Reader:
    """A checkpoint opened lazily.  Subclasses fill ``_infos`` and implement ``_read``."""

    format: str = "?"
    has_data: bool = True

    def __init__(self, path):
        self.path = str(path)
        self._infos: dict[str, TensorInfo] = {}

    # -- metadata ---------------------------------------------------------
    def infos(self) -> dict[str, TensorInfo]:
        """Every tensor's metadata, in file order."""
        return self._infos

    def names(self) -> list[str]:
        return list(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise FormatError(self.path, "no such tensor in this file", tensor=name) from None

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def attrs(self, node: str) -> dict:
        """Attributes of a layer/op (e.g. a BatchNorm's ``eps``); ``{}`` if the format has none."""
        return {}

    def nodes(self) -> list[str]:
        """Names of the layers/ops that carry attributes (empty if the format has none)."""
        return []

    # -- data -------------------------------------------------------------
    def read(self, name: str) -> np.ndarray:
        """The tensor's values (possibly a read-only memory-mapped view)."""
        info = self.info(name)
        if not self.has_data:
            raise FormatError(self.path, f"this {self.format} file describes tensors but holds no values", tensor=name)
        return self._read(info)

    def _read(self, info: TensorInfo) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self, name: str) -> None:
        """A hint that the caller is done with tensor ``name`` (the engine calls it after the last use).

        Readers over a memory map drop the tensor's pages from this process's resident
        memory (they stay in the OS page cache); arrays already handed out stay valid and
        fault the data back in if touched again.  Without it, every page of the source
        read so far would count in the process's RSS until the end.  Default: nothing.
        """

    # -- lifetime ---------------------------------------------------------
    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Writer:
    """A streaming writer.  ``write`` is called once per tensor, in ``infos`` order."""

    format: str = "?"
    RAW_BLOCKS = False  # whether the format records the ggml type of raw quantized blocks (see rawblocks)

    def __init__(self, path, infos: Sequence[TensorInfo], **options):
        from .. import rawblocks

        self.path = str(path)
        self.infos = list(infos)
        for i in self.infos:
            quant = rawblocks.of_info(i)
            if quant and not rawblocks.writer_holds(self):
                raise MapspecError(f"{self.path}: tensor {i.name!r} "
                                   f"{rawblocks.refuse_output(self.format, quant, (i.meta or {}).get('shape'))}")
            if not _utf8(i.name):
                from ..errors import escape

                raise MapspecError(f"tensor name '{escape(i.name)}' is not valid Unicode text (a lone surrogate); "
                                   f"no checkpoint format can store it")
        self._expected = {i.name: i for i in self.infos}
        self._order = [i.name for i in self.infos]
        self._next = 0

    def _check(self, name: str, array: np.ndarray) -> TensorInfo:
        """Check that ``name`` is the next tensor promised and that ``array`` fits it."""
        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing more"
            raise MapspecError(f"{self.path}: writer got tensor {name!r} out of order (expected {expected!r})")
        self._next += 1
        return self._fits(name, array)

    def _fits(self, name: str, array: np.ndarray) -> TensorInfo:
        """The announced info of ``name``; a MapspecError if it was not announced or ``array`` has another shape."""
        info = self._expected.get(name)
        if info is None:
            raise MapspecError(f"{self.path}: writer got tensor {name!r}, which was not announced")
        if tuple(array.shape) != tuple(info.shape):
            raise MapspecError(f"{self.path}: tensor {name!r}: shape {tuple(array.shape)} differs from the "
                               f"announced {tuple(info.shape)}")
        return info

    def _check_dtype(self, name: str, info: TensorInfo, array: np.ndarray,
                     why: str = "cast it before writing") -> str:
        """The announced dtype of ``info``; a MapspecError if ``array`` arrived in another one."""
        want = announced_dtype(info)
        try:
            have = dtypes.name_of(array.dtype)
        except KeyError:  # a dtype mapspec has no name for (complex, object, ...)
            have = str(array.dtype)
        if have != want:
            raise MapspecError(f"{self.path}: tensor {name!r} arrived as {have} but was announced as {want}; {why}")
        return want

    def write(self, name: str, array: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file.  Raises if fewer tensors were written than announced."""
        if self._next != len(self._order):
            missing = self._order[self._next]
            raise MapspecError(f"{self.path}: writer closed before tensor {missing!r} was written")

    def abort(self) -> None:
        """Release resources after a failure; the engine removes the temporary file."""


class PositionalWriter(Writer):
    """A writer whose tensors' offsets follow from its header: ``write`` in the announced order, or
    ``write_at`` / ``copy_at`` in any order from several threads (``apply --jobs``), never both.
    Subclasses flush their header before the first positional write and call :meth:`_place` first."""

    positional = hasattr(os, "pwrite")  # POSIX positional writes

    def __init__(self, path, infos: Sequence[TensorInfo], **options):
        super().__init__(path, infos, **options)
        self._placed: Optional[set] = None  # names written by write_at / copy_at
        self._lock = threading.Lock()
        # One thread at a time in this file's write syscalls.  A buffered write takes the file's inode
        # lock, and a second writer spins on it in the kernel instead of sleeping: two threads copying
        # into one file cost 2.7-2.8 s of system CPU for 4 GiB, one 1.6-2.0 s, the same wall time
        # (measured on this project's 2-core VM).  Held around each syscall only, so one thread's
        # transposes and casts still run beside the other's write.
        self.io = threading.Lock()

    def _place(self, name: str) -> None:
        """Claim ``name`` for a positional write (once; not after ``write``)."""
        with self._lock:
            if self._placed is None:
                if self._next:
                    raise MapspecError(f"{self.path}: write_at after write; use one or the other")
                self._fh.flush()  # the header, before any positional write
                self._placed = set()
            if name in self._placed:
                raise MapspecError(f"{self.path}: tensor {name!r} written twice")
            self._placed.add(name)

    def _put(self, name: str, pieces) -> None:
        """Write ``pieces`` (bytes-like, in order) from tensor ``name``'s offset (``self._offsets``), one
        thread at a time in the syscalls (:attr:`io`); then start a durable output's writeback of them."""
        fd = self._fh.fileno()
        start = pos = self._offsets[name]
        for piece in pieces:
            view = memoryview(piece).cast("B")
            with self.io:
                while len(view):
                    n = os.pwrite(fd, view, pos)
                    pos += n
                    view = view[n:]
        written(fd, start, pos - start)

    def _copy(self, name: str, span: tuple) -> None:
        """Copy ``span`` (descriptor, offset, byte count) to tensor ``name``'s offset inside the kernel, as
        :meth:`_put` writes."""
        fd, at = self._fh.fileno(), self._offsets[name]
        with self.io:
            copy_range(span[0], span[1], fd, at, span[2])
        written(fd, at, span[2])

    def _all_placed(self) -> bool:
        """True when the file was written positionally and every announced tensor came; False when it was
        written in order (the caller's sequential close checks it); a MapspecError when one is missing."""
        if self._placed is None:
            return False
        missing = [n for n in self._order if n not in self._placed]
        if missing:
            raise MapspecError(f"{self.path}: writer closed before tensor {missing[0]!r} was written")
        return True


def _utf8(text) -> bool:
    try:
        str(text).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def announced_dtype(info: TensorInfo) -> str:
    """The announced dtype of a tensor; one whose dtype the source format did not fix is float32."""
    return dtypes.canonical(info.dtype) if info.dtype else "float32"


def save_with(create, path, tensors: Mapping[str, np.ndarray], **options) -> None:
    """Write a whole mapping through a format's ``create`` (atomically)."""
    arrays, infos = arrays_and_infos(tensors, path)
    import inspect

    named = getattr(inspect.getmodule(create), "NAMED_TEMP", False)
    with atomic_output(path, force=True, anonymous=not named) as tmp:
        write_all(create(tmp, infos, final_path=str(path), **options), arrays)


def arrays_and_infos(tensors: Mapping[str, np.ndarray], path="") -> tuple[dict, list]:
    """A ``{name: array}`` mapping as numpy arrays, and the :class:`TensorInfo` of each, in order; a
    dtype mapspec has no name for (complex, object, strings) is an error naming the tensor."""
    arrays = {k: np.asarray(v) for k, v in tensors.items()}
    infos = []
    for k, a in arrays.items():
        try:
            infos.append(TensorInfo(k, tuple(a.shape), dtypes.name_of(a.dtype)))
        except KeyError:
            raise MapspecError(f"{path or 'output'}: tensor {k!r} is {a.dtype}, a dtype mapspec does not write "
                               f"(it writes {', '.join(dtypes.DTYPES)})") from None
    return arrays, infos


def write_all(writer: Writer, arrays: Mapping[str, np.ndarray]) -> None:
    """Write every array and close ``writer``; on any error (an interrupt too) abort it."""
    try:
        for k, a in arrays.items():
            writer.write(k, a)
        writer.close()
    except BaseException:
        writer.abort()
        raise


def shapes_option(path, value) -> dict:
    """The ``input_shapes`` reader option: a mapping of input name -> shape (a list is a mistake, named)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MapspecError(f"{path}: option input_shapes must map input names to shapes, e.g. "
                           f"{{data: [1, 3, 224, 224]}}, not {value!r} (for the single input use input_shape)")
    return dict(value)
