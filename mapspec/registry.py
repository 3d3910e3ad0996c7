"""One lazy registry: a table of name -> module, imported on first use.

mapspec's registries take one of two shapes, and only these two:

* **A lazy module table** (this module's :class:`LazyTable`): name -> ``"package.module"`` or
  ``"package.module:attribute"`` (a string, or a record whose ``module`` field holds it and whose
  optional ``needs`` field lists the optional packages it imports).  Formats
  (:data:`mapspec.formats.registry.FORMATS`), verify runners (:data:`mapspec.language.runners.RUNNERS`),
  frameworks and CLI commands (:data:`mapspec.cli.COMMAND_TABLE`) are tables of this kind: naming an
  entry imports nothing; :meth:`LazyTable.load` imports it.  Every failure is one :class:`MapspecError`:
  an unknown name lists the known names and the nearest one; a missing optional package is
  :class:`~mapspec.errors.MissingDependency` with its ``pip install`` line; a missing mapspec module says
  this build of mapspec lacks the entry.
* **A table of plain functions**: a ``dict`` of name -> function, filled by a decorator where the functions
  live (the transforms: :func:`mapspec.transforms.registry.transform`) or written out as a literal (the
  reference executors' op tables).  Its entries are already imported; it needs no helper.

This module is on the ground floor: it imports only :mod:`mapspec.errors`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any, Iterator, Optional

from .errors import MapspecError, MissingDependency


class UnknownName(MapspecError):
    """A name that a registry does not hold; the message lists the known names and the nearest one."""

    def __init__(self, kind: str, name, known, plural: Optional[str] = None):
        self.kind, self.name, self.known = kind, name, list(known)
        near = difflib.get_close_matches(str(name), self.known, n=1)
        self.nearest = near[0] if near else None
        super().__init__(f"unknown {kind} {name!r}; known {plural or kind + 's'}: {', '.join(self.known)}"
                         + (f" (did you mean {self.nearest!r}?)" if self.nearest else ""))


def _target(entry) -> str:
    return entry if isinstance(entry, str) else entry.module


class LazyTable(Mapping):
    """``kind`` entries by name (a read-only mapping of name -> entry); :meth:`load` imports one.

    ``aliases`` maps other names to entry names (:meth:`canonical` resolves them; the mapping itself
    holds only the entries)."""

    def __init__(self, kind: str, entries: dict, aliases: Optional[dict] = None, plural: Optional[str] = None):
        self.kind, self.plural = kind, plural or kind + "s"
        self._entries = dict(entries)
        self.aliases = dict(aliases or {})
        for alias, name in self.aliases.items():
            if name not in self._entries:
                raise ValueError(f"{kind} alias {alias!r} names no entry ({name!r})")

    def __getitem__(self, name):
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"LazyTable({self.kind!r}, {list(self._entries)})"

    def canonical(self, name) -> str:
        """The entry name ``name`` stands for (itself or via an alias); an unknown name is :class:`UnknownName`."""
        key = self.aliases.get(name, name) if isinstance(name, str) else name
        if not isinstance(key, str) or key not in self._entries:
            raise UnknownName(self.kind, name, self._entries, self.plural)
        return key

    def entry(self, name):
        return self._entries[self.canonical(name)]

    def load(self, name) -> Any:
        """The module (or ``module:attribute``) of entry ``name``, imported now if it was not yet."""
        key = self.canonical(name)
        entry = self._entries[key]
        what = f"{self.kind} {key!r}"
        for package in getattr(entry, "needs", ()) or ():
            if importlib.util.find_spec(package) is None:
                raise MissingDependency(package, what)
        path, _, attr = _target(entry).partition(":")
        try:
            mod = importlib.import_module(path)
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if missing == "mapspec" or missing.startswith("mapspec."):
                raise MapspecError(f"the {what} is not available in this build of mapspec (its module "
                                   f"{missing} is missing); reinstall mapspec") from None
            raise MissingDependency(missing, what) from None
        if not attr:
            return mod
        try:
            return getattr(mod, attr)
        except AttributeError:
            raise MapspecError(f"the {what} is not available in this build of mapspec ({path} has no "
                               f"{attr!r}); reinstall mapspec") from None
