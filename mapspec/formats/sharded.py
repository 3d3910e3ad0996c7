"""Sharded checkpoints: a Hugging Face ``*.index.json`` and the shard files beside it.

Layout (what ``save_pretrained`` writes)::

    model.safetensors.index.json   {"metadata": {"total_size": N}, "weight_map": {tensor: shard file}}
    model-00001-of-00003.safetensors, model-00002-of-00003.safetensors, ...
    (torch: pytorch_model.bin.index.json and pytorch_model-0000k-of-0000n.bin)

Reading: the index's ``weight_map`` is the list of tensors.  Each shard is opened by its
own format module (headers only; data memory-mapped on demand), and checked against the
index: a tensor the index puts in a shard that does not hold it, or a tensor that two
shards hold, is a :class:`FormatError` naming the index, both files and the tensor.  A
shard name must be a plain relative path inside the index's directory (no absolute
path, no ``..``, no symbolic link out of it).  Files beside the index that look like
shards but are not named by it are not read; that is said once (``notes``).

Writing: tensors go into shards in plan order; a shard is closed once the next tensor
would take it past ``max_shard_size`` (a tensor larger than the limit gets a shard of
its own), as ``save_pretrained`` does.  Shards and index are written into a private
staging folder and published together (see :mod:`.shard_output`); on any error the
staging folder is removed.

Sizes (``max_shard_size``, ``--max-shard-size``) are bytes of tensor data, written like
Hugging Face's: ``KB``/``MB``/``GB``/``TB`` are decimal (``5GB`` = 5 * 10**9 bytes),
``KiB``/``MiB``/``GiB``/``TiB`` binary; a plain integer is bytes.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import FormatError, MapspecError
from ..paths import within
from .base import Reader, TensorInfo, Writer
from .shard_index import DEFAULT_NAMES, SHARD_FORMATS, SUFFIX, read_index, split_name

NAME = "sharded"
DEFAULT_MAX_SHARD_SIZE = "5GB"

_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_size(value, what: str = "max_shard_size") -> int:
    """Bytes from ``5GB`` (decimal, as Hugging Face), ``512MiB`` (binary) or an integer."""
    if isinstance(value, bool):
        raise MapspecError(f"{what}: {value!r} is not a size (e.g. 5GB, 500MB, 2GiB or a number of bytes)")
    if isinstance(value, (int, np.integer)):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise MapspecError(f"{what}: {value!r} is not a size (e.g. 5GB, 500MB, 2GiB or a number of bytes; "
                               f"KB/MB/GB are powers of 1000 as in Hugging Face, KiB/MiB/GiB of 1024)")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise MapspecError(f"{what}: {value!r} must be larger than 0 bytes")
    return n


def is_index(path) -> bool:
    return str(path).lower().endswith(SUFFIX)


def sniff(path: str, head: bytes) -> bool:
    return is_index(path) and head.lstrip()[:1] == b"{"


# -- reading -------------------------------------------------------------------------------

def source_path(path) -> str:
    """What to open for ``--source PATH``: the path itself, or, for a directory, its one index
    (or its one checkpoint file)."""
    p = Path(path)
    if not p.is_dir():
        return str(path)
    from .registry import FORMATS, by_suffix

    try:
        names = sorted(e.name for e in os.scandir(p) if not e.name.startswith(".") and e.is_file())
    except OSError as e:
        raise FormatError(path, f"cannot list the directory: {e.strerror}") from None
    indexes = [n for n in names if is_index(n)]
    if len(indexes) == 1:
        return str(p / indexes[0])
    if len(indexes) > 1:
        raise FormatError(path, f"the directory holds {len(indexes)} indexes ({', '.join(indexes)}); "
                          f"name the one to read")
    files = [n for n in names if by_suffix(n) and FORMATS[by_suffix(n)].has_data and not n.endswith(".json")]
    if len(files) == 1:
        return str(p / files[0])
    if not files:
        raise FormatError(path, "the directory holds no *.index.json and no checkpoint file")
    shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
    raise FormatError(path, f"the directory holds {len(files)} checkpoint files ({shown}) and no *.index.json "
                      f"that says how they belong together; name one file")


def check_shard_name(index: str, shard: str) -> Path:
    """The shard's path; a FormatError unless ``shard`` is a plain relative path inside the index's directory."""
    base = Path(index).parent
    bad = None
    if not shard or "\0" in shard:
        bad = "is empty or holds a NUL character"
    elif os.path.isabs(shard) or shard.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", shard):
        bad = "is an absolute path; shards must lie beside the index"
    elif ".." in re.split(r"[/\\]", shard):
        bad = "goes up a directory ('..'); shards must lie beside the index"
    if bad:
        raise FormatError(index, f"shard {shard!r} {bad}")
    path = base / shard
    try:
        inside = within(path, [base])
        kind = "ok" if path.is_file() else "is not a file" if path.exists() else "does not exist"
    except (OSError, ValueError) as e:  # a name too long for the file system, ...
        raise FormatError(index, f"shard {shard!r} cannot be looked up: {getattr(e, 'strerror', None) or e}") \
            from None
    if not inside:
        raise FormatError(index, f"shard {shard!r} resolves to {os.path.realpath(path)}, outside the index's directory "
                          f"(a symbolic link?); shards must lie beside the index")
    if kind != "ok":
        raise FormatError(index, f"shard {shard!r} {kind}")
    return path


def _shard_format(index: str, shard: Path, given: Optional[str]) -> str:
    from .registry import FORMATS, by_suffix, canonical

    if given:
        return canonical(given)
    name = by_suffix(shard)
    if name is None or not FORMATS[name].has_data or name == NAME:
        inner = by_suffix(index[:-len(SUFFIX)])
        if inner in SHARD_FORMATS:
            return inner
        raise FormatError(index, f"cannot tell the format of shard {shard.name!r} from its name; "
                          f"give --source-format")
    return name


class ShardedReader(Reader):
    """Every tensor of the index, read from its shard (each shard a reader of its own format)."""

    format = NAME

    def __init__(self, path: str, shard_format: Optional[str] = None, opened=None, **shard_options):
        """``opened(total, shard)``, if given, is told of each shard opened (``inspect``'s progress bar)."""
        super().__init__(path)
        from .registry import check_options, module

        self.weight_map, self.metadata = read_index(path)
        self.notes: list[str] = []
        self.shards: dict[str, Reader] = {}
        self._shard_of: dict[str, str] = {}
        by_shard: dict[str, list] = {}
        for tensor, shard in self.weight_map.items():
            by_shard.setdefault(shard, []).append(tensor)
        formats = set()
        try:
            for shard in sorted(by_shard):
                try:
                    spath = check_shard_name(path, shard)
                except FormatError as e:
                    raise FormatError(path, f"{e.bare} (the index puts {len(by_shard[shard])} tensor"
                                      f"{'s' if len(by_shard[shard]) > 1 else ''} there, e.g. "
                                      f"{by_shard[shard][0]!r})") from None
                fmt = _shard_format(path, spath, shard_format)
                mod = module(fmt)
                check_options(fmt, mod, shard_options, "read")
                formats.add(fmt)
                try:
                    self.shards[shard] = mod.open(str(spath), **shard_options)
                except FormatError as e:
                    raise FormatError(e.path, f"{e.bare} (shard of {path}, read as {fmt})", offset=e.offset,
                                      tensor=e.tensor) from None
                if opened is not None:
                    opened(len(by_shard), shard)
            self._check(by_shard)
        except BaseException:
            self.close()
            raise
        self.shard_format = formats.pop() if len(formats) == 1 else "mixed"
        self._strays()

    def _check(self, by_shard: dict) -> None:
        path = self.path
        unlisted: dict[str, list] = {}
        for shard, reader in self.shards.items():
            for name, info in reader.infos().items():
                owner = self.weight_map.get(name)
                if owner is None:
                    unlisted.setdefault(shard, []).append(name)
                elif owner != shard:
                    if name in self.shards[owner]:
                        raise FormatError(path, f"two shards hold this tensor: {owner!r} (where the index puts "
                                          f"it) and {shard!r}; which one is meant is not clear", tensor=name)
                    raise FormatError(path, f"the index puts this tensor in shard {owner!r}, which does not hold "
                                      f"it; shard {shard!r} does (index and shards do not belong together)",
                                      tensor=name)
                else:
                    self._infos[name] = TensorInfo(name, info.shape, info.dtype, {**(info.meta or {}),
                                                                                  "shard": shard})
                    self._shard_of[name] = shard
        for shard, names in by_shard.items():
            missing = [n for n in names if n not in self.shards[shard]]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise FormatError(path, f"the index puts this tensor in shard {shard!r}, which does not hold "
                                  f"it{more}", tensor=missing[0])
        for shard, names in unlisted.items():
            self.notes.append(f"{path}: shard {shard!r} also holds {len(names)} tensor"
                              f"{'s' if len(names) > 1 else ''} the index does not name (e.g. {names[0]!r}); "
                              f"not read")

    def _strays(self) -> None:
        """Say once if files beside the index look like shards but the index does not name them."""
        base = Path(self.path).parent
        exts = {os.path.splitext(s)[1] for s in self.shards}
        named = {os.path.normpath(s) for s in self.shards}
        try:
            stray = sorted(e.name for e in os.scandir(base) if e.is_file() and not e.name.startswith(".")
                           and os.path.splitext(e.name)[1] in exts and e.name not in named)
        except OSError:
            return
        if stray:
            shown = ", ".join(stray[:5]) + (", ..." if len(stray) > 5 else "")
            self.notes.append(f"{self.path}: {len(stray)} file{'s' if len(stray) > 1 else ''} beside the index "
                              f"{'are' if len(stray) > 1 else 'is'} not named by it and not read: {shown}")

    def shard_of(self, name: str) -> str:
        self.info(name)
        return self._shard_of[name]

    def _read(self, info: TensorInfo) -> np.ndarray:
        return self.shards[self._shard_of[info.name]].read(info.name)

    def span(self, name: str) -> Optional[tuple]:
        """Where the tensor's bytes lie in its shard, if the shard's format can say (see the safetensors reader)."""
        shard = self.shards[self.shard_of(name)]
        return shard.span(name) if hasattr(shard, "span") else None

    def release(self, name: str) -> None:
        shard = self._shard_of.get(name)
        if shard is not None:
            self.shards[shard].release(name)

    def close(self) -> None:
        for r in self.shards.values():
            with contextlib.suppress(Exception):
                r.close()


# -- writing -------------------------------------------------------------------------------

def is_directory(path) -> bool:
    """Is ``path`` an existing directory?  A name the system cannot look up (too long, a NUL) is not one:
    the output check that follows says what is wrong with it."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def output_target(output, fmt: Optional[str]) -> Optional[tuple]:
    """For a sharded output, ``(index path, shard format)``; None for a single-file output.

    Sharded: format ``sharded``, a ``*.index.json`` name, an existing directory, or a name
    ending with ``/``.  A directory gets the index name ``save_pretrained`` uses.
    """
    from .registry import by_suffix, canonical

    text = str(output)
    fmt = canonical(fmt) if fmt else None
    is_dir = text.endswith(("/", os.sep)) or is_directory(text)
    if not (fmt == NAME or is_index(text) or is_dir):
        return None
    shard_fmt = fmt if fmt and fmt != NAME else None
    if is_dir:
        shard_fmt = shard_fmt or "safetensors"
        if shard_fmt not in DEFAULT_NAMES:
            raise MapspecError(f"{output}: a sharded output holds safetensors or torch shards, not {shard_fmt}")
        return str(Path(text) / DEFAULT_NAMES[shard_fmt][0]), shard_fmt
    if not is_index(text):
        raise MapspecError(f"{output}: a sharded output is a directory or a *.index.json file")
    inner = by_suffix(text[:-len(SUFFIX)])
    shard_fmt = shard_fmt or (inner if inner in DEFAULT_NAMES else "safetensors")
    if shard_fmt not in DEFAULT_NAMES:
        raise MapspecError(f"{output}: a sharded output holds safetensors or torch shards, not {shard_fmt}")
    if inner is not None and inner != NAME and inner != shard_fmt:
        raise MapspecError(f"{output}: the index's name says {inner} shards but the target format is {shard_fmt}; "
                           f"name it {DEFAULT_NAMES[shard_fmt][0]}, or change the target format")
    return text, shard_fmt


def plan_shards(infos: Sequence[TensorInfo], limit: int) -> list[list[TensorInfo]]:
    """Tensors in order, cut into shards of at most ``limit`` bytes (an oversized tensor alone)."""
    shards: list[list[TensorInfo]] = []
    size = 0
    for info in infos:
        n = info.nbytes
        if not shards or (shards[-1] and size + n > limit):
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += n
    return shards or [[]]


class ShardedWriter(Writer):
    """Shards in plan order, then the index (``path``), all in the staging folder of :func:`.shard_output.staged`.

    Options: ``shard_format`` (safetensors or torch), ``max_shard_size`` (default 5GB),
    ``overwrite`` (replace existing shard files; the engine passes ``--force``); anything
    else goes to each shard's writer.
    """

    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], final_path: Optional[str] = None,
                 shard_format: str = "safetensors", max_shard_size=DEFAULT_MAX_SHARD_SIZE, overwrite: bool = False,
                 template: Optional[str] = None, copy_phases: Optional[dict] = None, **shard_options):
        super().__init__(path, infos)
        from .registry import check_options, module

        if len(set(self._order)) != len(self._order):
            raise MapspecError(f"{path}: the same tensor name is announced twice")
        if shard_format not in DEFAULT_NAMES:
            raise MapspecError(f"{final_path or path}: shards are safetensors or torch, not {shard_format!r}")
        self._mod = module(shard_format)
        check_options(shard_format, self._mod, shard_options, "write")
        self._shard_options = shard_options
        self._copy_phases = copy_phases if getattr(self._mod, "COPY_PHASES", False) else None
        final = final_path or path
        self.directory = Path(path).parent  # the staging folder (shard_output.staged) the shards are written in
        stem, ext = split_name(final, shard_format)
        self._final, self._stem, self._ext = final, stem, ext
        groups = plan_shards(self.infos, parse_size(max_shard_size))
        n = len(groups)
        self.names = [f"{stem}-{k + 1:05d}-of-{n:05d}{ext}" for k in range(n)]
        if not overwrite:
            for name in self.names:
                if (Path(final).parent / name).exists():
                    raise MapspecError(f"{Path(final).parent / name}: output exists; pass --force to overwrite it")
        self.groups = groups
        self._shard = {i.name: k for k, g in enumerate(groups) for i in g}
        self._last = {g[-1].name: k for k, g in enumerate(groups) if g}
        self._tmp: list[Optional[str]] = [None] * n
        self._writers: list[Optional[Writer]] = [None] * n
        self._closed = [False] * n
        self._positional_used = False
        self._lock = threading.Lock()
        self.positional = bool(getattr(self._mod, "POSITIONAL", False))

    def _writer(self, k: int) -> Writer:
        w = self._writers[k]
        if w is None:
            # The staging folder is ours alone: each shard is written under its final name.  (A fresh
            # name the shard's writer creates, not a file made empty first (mkstemp), whose re-opening
            # with truncation makes ext4 flush it to disk on close (auto_da_alloc), ~0.1 s a shard.)
            tmp = str(self.directory / self.names[k])
            self._tmp[k] = tmp
            extra = {}
            if self._copy_phases:
                extra["copy_phases"] = {i.name: self._copy_phases[i.name] for i in self.groups[k]
                                        if i.name in self._copy_phases}
            w = self._writers[k] = self._mod.create(tmp, self.groups[k], final_path=str(Path(self._final).parent /
                                                                                        self.names[k]),
                                                    **self._shard_options, **extra)
        return w

    def write(self, name: str, array: np.ndarray) -> None:
        self._check(name, np.asarray(array))
        k = self._shard[name]
        self._writer(k).write(name, array)
        if self._last.get(name) == k:
            self._finish(k)

    def write_at(self, name: str, array: np.ndarray) -> None:
        """Any order, from any thread (for shard formats that place tensors at known offsets)."""
        k = self._shard[name]
        with self._lock:
            w = self._writer(k)
        w.write_at(name, array)
        self._positional_used = True

    def copy_at(self, name: str, info: TensorInfo, span: tuple) -> None:
        """Like :meth:`write_at`, copying the bytes from another file (shard formats that have ``copy_at``)."""
        k = self._shard[name]
        with self._lock:
            w = self._writer(k)
        w.copy_at(name, info, span)
        self._positional_used = True

    def _finish(self, k: int) -> None:
        if not self._closed[k]:
            self._closed[k] = True
            self._writer(k).close()

    def close(self) -> None:
        if not self._positional_used:
            super().close()  # every tensor arrived, in order
        for k in range(len(self.groups)):
            self._finish(k)  # positional shards check that every tensor arrived; an empty checkpoint: one shard
        total = sum(i.nbytes for i in self.infos)
        weight_map = {i.name: self.names[k] for k, g in enumerate(self.groups) for i in g}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with builtins.open(self.path, "w", encoding="utf-8") as f:  # beside the shards; shard_output publishes all
            f.write(json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    def abort(self) -> None:
        for w in self._writers:
            if w is not None:
                with contextlib.suppress(Exception):
                    w.abort()
        for k, tmp in enumerate(self._tmp):
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                self._tmp[k] = None


READ_OPTIONS = ("shard_format",)
WRITE_OPTIONS = ("shard_format", "max_shard_size", "overwrite")
COPY_PHASES = True  # passed on to shard writers that take them (see create_writer)


def open(path: str, **options) -> ShardedReader:  # noqa: A001 - the format API's name
    return ShardedReader(path, **options)


def create(path: str, infos: Sequence[TensorInfo], **options) -> ShardedWriter:
    return ShardedWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    """Write a whole mapping as a sharded checkpoint (index ``path``), published as one (see :mod:`.shard_output`)."""
    from .base import arrays_and_infos, write_all
    from .shard_output import staged

    arrays, infos = arrays_and_infos(tensors, path)
    fmt = options.pop("shard_format", None) or output_target(path, None)[1]
    with staged(path, fmt, force=True, sync=options.pop("sync", True)) as tmp:
        write_all(create(tmp, infos, final_path=str(path), shard_format=fmt, overwrite=True, **options), arrays)
