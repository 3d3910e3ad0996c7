"""``mapspec verify --report FILE.html``: the per-layer error along the network, as one self-contained page.

The page holds inline SVG drawn here (no script, no stylesheet or font fetched, no plotting library):
three panels over the compared layers in network order (max abs error, relative error, cosine
distance ``1 - cosine``), each on a log scale, the first divergence marked, every point titled with
its layer pair; then the outputs, the verdict, the likely causes and a table of every layer. Text
from the files (layer names, notes) is HTML-escaped, so a hostile name cannot add markup.
"""

from __future__ import annotations

import html
import math
from typing import Optional

FLOOR = 1e-12            # zero error is drawn at the floor of the log scale
W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 170, 70, 20, 24, 22
PANELS = (("max |a-b|", lambda c: c.max_abs), ("relative error", lambda c: c.max_rel),
          ("1 - cosine", lambda c: 1.0 - c.cosine))
RED, BLUE, GREY = "#c62828", "#1565c0", "#9e9e9e"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _log(v: float) -> Optional[float]:
    """log10 of a value on the plot, None for NaN; infinity and values below the floor are clamped later."""
    if math.isnan(v):
        return None
    return math.log10(max(v, FLOOR)) if math.isfinite(v) else math.inf


def _panel(title: str, values: list, labels: list, bad: Optional[int], tol: Optional[float]) -> str:
    """One SVG panel: values (floats or None: not compared) along x, log10 y."""
    logs = [None if v is None else _log(v) for v in values]
    finite = [y for y in logs if y is not None and math.isfinite(y)] + ([math.log10(tol)] if tol else [])
    lo = math.floor(min(finite)) if finite else -12
    hi = max(math.ceil(max(finite)) if finite else 0, lo + 1)
    n = max(len(values), 1)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        v = min(max(v, lo), hi)
        return TOP + ph * (hi - v) / (hi - lo)

    out = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{_esc(title)} per layer">',
           f'<text x="{LEFT}" y="15" font-size="13" font-weight="bold">{_esc(title)} (log scale)</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="{GREY}"/>']
    for e in range(lo, hi + 1):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(e):.1f}" y2="{y(e):.1f}" stroke="#eeeeee"/>'
                   f'<text x="{LEFT - 6}" y="{y(e) + 4:.1f}" font-size="10" text-anchor="end">1e{e}</text>')
    if tol:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(math.log10(tol)):.1f}" y2="{y(math.log10(tol)):.1f}" '
                   f'stroke="{GREY}" stroke-dasharray="4 3"><title>tolerance {tol:g}</title></line>')
    if bad is not None:
        out.append(f'<line class="first-divergence" x1="{x(bad):.1f}" x2="{x(bad):.1f}" y1="{TOP}" y2="{TOP + ph}" '
                   f'stroke="{RED}" stroke-width="2"><title>first divergence: {_esc(labels[bad])}</title></line>')
    points = [(x(i), y(v)) for i, v in enumerate(logs) if v is not None]
    if len(points) > 1:
        out.append(f'<polyline fill="none" stroke="{BLUE}" stroke-width="1" points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b in points) + '"/>')
    for i, v in enumerate(logs):
        if v is None:
            continue
        color = RED if i == bad else BLUE
        shown = values[i]
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{4 if i == bad else 2.5}" fill="{color}">'
                   f'<title>{i}: {_esc(labels[i])}: {shown:.3g}</title></circle>')
    out.append(f'<text x="{LEFT}" y="{H - 6}" font-size="10">layer 0</text>'
               f'<text x="{LEFT + pw}" y="{H - 6}" font-size="10" text-anchor="end">layer {len(values) - 1}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def html_report(v, title: str) -> str:
    """The page for a :class:`mapspec.verify.core.Verdict` (``title``: what was compared)."""
    layers = v.layers
    labels = [f"{l.source} -> {l.target}" for l in layers]
    bad = layers.index(v.first_bad) if v.first_bad is not None and v.first_bad in layers else None
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>mapspec verify: {_esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:960px}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;font-size:13px;text-align:left}"
             f"tr.first-divergence td{{background:#ffebee;color:{RED};font-weight:bold}}"
             ".pass{color:#2e7d32}.fail{color:#c62828}</style></head><body>",
             f"<h1>mapspec verify</h1><p>{_esc(title)}</p>",
             f"<p>input: {_esc(v.input_desc)}, shape {_esc('x'.join(map(str, v.input_shape)))}</p>"]
    verdict = "PASS" if v.ok else "FAIL"
    parts.append(f'<p class="{verdict.lower()}"><b>{verdict}</b> (max |a-b| &lt;= {v.atol:g} and cosine &gt;= '
                 f"{v.cosine:g})</p><ul>")
    for name, o in v.outputs:
        parts.append(f"<li>output {_esc(name)} {_esc('x'.join(map(str, o.shape)))}: max |a-b| {o.max_abs:.3g}, "
                     f"relative {o.max_rel:.3g}, cosine {o.cosine:.9f}</li>")
    parts.append("</ul>")
    if v.error:
        parts.append(f'<p class="fail">error: {_esc(v.error)}</p>')
    if bad is not None:
        parts.append(f'<h2 class="fail">First divergence: layer {bad}, {_esc(labels[bad])}</h2>')
        parts += [f"<p>likely cause: {_esc(c)}</p>" for c in v.causes]
    if not layers:
        parts.append(f"<p>No layer compared{': ' + _esc(v.layers_note) if v.layers_note else ''}.</p>")
    else:
        parts.append(f"<h2>Error along the network ({len(layers)} layers)</h2>")
        for name, get in PANELS:
            values = [None if l.cmp is None else float(get(l.cmp)) for l in layers]
            tol = 1.0 - v.cosine if name == "1 - cosine" else (v.atol if name == "max |a-b|" else None)
            parts.append(_panel(name, values, labels, bad, tol if tol and tol > 0 else None))
        parts.append("<h2>Every layer</h2><table><tr><th>#</th><th>source layer</th><th>target layer</th>"
                     "<th>max |a-b|</th><th>relative</th><th>cosine</th><th></th></tr>")
        for i, l in enumerate(layers):
            c = l.cmp
            row = ' class="first-divergence"' if i == bad else ""
            note = "first divergence" if i == bad else l.note
            parts.append(f"<tr{row}><td>{i}</td><td>{_esc(l.source)}</td><td>{_esc(l.target)}</td>"
                         f"<td>{_num(c and c.max_abs)}</td><td>{_num(c and c.max_rel)}</td>"
                         f"<td>{'-' if c is None else f'{c.cosine:.7f}'}</td><td>{_esc(note)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _files(path) -> list:
    """The files a verify input stands for: a file itself; a folder (or a sharded checkpoint's index) every
    regular file in its folder (shards, config.json)."""
    import os

    if not path:
        return []
    path = os.fspath(path)
    folder = path if os.path.isdir(path) else (os.path.dirname(path) if path.endswith(".index.json") else None)
    if folder is None:
        return [path]
    try:
        return [path] + [e.path for e in os.scandir(folder or ".") if e.is_file()]
    except OSError:
        return [path]


def check_report_path(path: str, force: bool, inputs, spec=None) -> None:
    """Before anything runs: the report may not be an input of verify (``inputs``: (kind, path) pairs; the
    spec and its includes are added), by name or through a link (:mod:`mapspec.guard`), nor replace a file
    without ``--force``."""
    from ..files import check_output_path
    from ..guard import refuse_inputs

    check_output_path(path, force, "--report")
    files = [(kind, f) for kind, p in inputs for f in _files(p)]
    if spec is not None:
        files += [("spec", f) for f in [spec.path, *spec.includes] if f]
    refuse_inputs([("--report", path)], files)


def write_report(v, path: str, force: bool, title: str) -> None:
    """Write the page atomically (the same rules as every output: nothing half-written, nothing replaced
    without ``--force``)."""
    from ..files import atomic_output

    with atomic_output(path, force=force, what="--report", anonymous=True) as tmp, \
            open(tmp, "w", encoding="utf-8") as f:
        f.write(html_report(v, title))
