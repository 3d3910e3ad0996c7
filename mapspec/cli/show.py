"""Printing for the terminal: shapes, byte sizes and tables (names from files escaped)."""

from __future__ import annotations

from typing import TextIO

from ..errors import escape


def _shape(shape) -> str:
    if shape is None:
        return "?"
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _table(rows: list[list[str]], out: TextIO, header: list[str]) -> None:
    rows = [[escape(c) for c in r] for r in rows]  # names from files: no control characters reach the terminal
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header).rstrip(), file=out)
    print(fmt.format(*["-" * w for w in widths]).rstrip(), file=out)
    for r in rows:
        print(fmt.format(*r).rstrip(), file=out)
