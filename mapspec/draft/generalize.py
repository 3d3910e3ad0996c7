"""Explicit (source, target) pairs -> pattern rules with placeholders and index arithmetic.

Names are cut into text and numbers (``conv2_1/x1/bn[0]`` -> ``conv``, 2, ``_``, 1, ...).
Pairs whose texts (and transforms, with their tensor names cut the same way) agree form a
group; in a group, a number that never changes stays literal, a source number that changes
becomes a placeholder ``<a>``, and a changing target number must be ``k * a + c`` of one of
them, the same for every pair (``{a-1}``, ``{2*a+5}``).  A group that does not fit is split
by the value of a source number and tried again; a single pair is an explicit rule.  Groups whose
names differ in one alphanumeric word, the same in source and target (``conv_sep`` -> ``.sep.``,
``conv_dw`` -> ``.dw.``), are tried as one with the word as ``<_w:word>``.  Every rule is rendered
for each pair it covers and must give it exactly; every pattern is checked against the source's
names (first match): it takes its own names and no other.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from contextvars import ContextVar
from typing import Optional
from ..language.pattern import Pattern

_NUM = re.compile(r"(0|[1-9][0-9]*)")
# with letters: a lowercase letter right after a number and before no letter or digit counts too (Kaiming's
# res2a_branch2b: block a, branch b), as its place in the alphabet
_NUM_LETTER = re.compile(r"(0|[1-9][0-9]*|(?<=[0-9])[a-z](?![A-Za-z0-9]))")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
LETTER_VAR = "letter"  # the spec var that turns a letter into its number: {letter: {a: 0, b: 1, ...}}
_letters_on: ContextVar = ContextVar("letters", default=False)


class Letter(int):
    """A letter read as a number (``a`` = 0); written back as the letter."""

    def __str__(self) -> str:
        return _LETTERS[int(self)]

    __repr__ = __str__


def cut(name: str) -> tuple[tuple, tuple]:
    """(texts, numbers): ``conv2_1[0]`` -> (("conv", "_", "[", "]"), (2, 1, 0)); while letters are on,
    ``res2a_branch2b`` -> (("res", "", "_branch", "", ""), (2, a, 2, b)) with a, b :class:`Letter`."""
    parts = (_NUM_LETTER if _letters_on.get() else _NUM).split(name)
    return tuple(parts[0::2]), tuple(Letter(_LETTERS.index(p)) if p.isalpha() else int(p) for p in parts[1::2])


def _kinds(nums: tuple) -> tuple:
    return tuple(isinstance(n, Letter) for n in nums)


def letter_vars(rules: list) -> dict:
    """The spec vars the rules need: the letter table, up to the last letter a pattern names."""
    top = -1
    for r in rules:
        for alts in re.findall(r"<[a-z][a-z0-9]*:([a-z|]+)>", r.get("from", "")):
            top = max([top] + [_LETTERS.index(x) for x in alts.split("|")])
    return {LETTER_VAR: {x: i for i, x in enumerate(_LETTERS[:top + 1])}} if top >= 0 else {}


def expressible(name: str) -> bool:
    """Whether a source name can be written as a pattern (``<`` and ``>`` cannot)."""
    return "<" not in name and ">" not in name


def _esc_template(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _replace_strings(obj, fn):
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, list):
        return [_replace_strings(v, fn) for v in obj]
    if isinstance(obj, dict):
        return {k: _replace_strings(v, fn) for k, v in obj.items()}
    return obj


def _is_name(s: str, m, names: set) -> bool:
    """A tensor or layer name inside transform arguments (a reference, an attribute's layer)."""
    return s in names or (m.source.startswith(s) and s != "")


def _signature(m, names: set):
    """What must agree inside a group: name texts, transforms with names cut, constants' names."""
    apply = repr(_replace_strings(m.apply, lambda s: repr(cut(s)[0]) if _is_name(s, m, names) else s))
    also = tuple((cut(a["to"])[0], repr(_replace_strings({k: v for k, v in a.items() if k != "to"},
                                                         lambda s: repr(cut(s)[0]) if _is_name(s, m, names) else s)))
                 for a in m.also)
    return cut(m.source)[0], cut(m.target)[0], apply, also, _kinds(cut(m.source)[1]), _kinds(cut(m.target)[1])


def _target_exprs(group: list, src_nums: list, tgt_pos: int, varying: list):
    """None (the number never changes), ``(source position, k, c)`` with ``t = k * s + c``, or "fail"."""
    vals = [t[tgt_pos] for t in group]
    if len(set(vals)) == 1:
        return None  # literal
    if any(isinstance(v, Letter) for v in vals):
        return "fail"  # a letter that varies in the target is not written from a number
    for i in varying:
        xs = [s[i] for s in src_nums]
        pairs = list(zip(xs, vals))
        (x0, y0) = pairs[0]
        other = next(((x, y) for x, y in pairs if x != x0), None)
        if other is None:
            continue
        dx, dy = other[0] - x0, other[1] - y0
        if dy % dx:
            continue
        k = dy // dx
        c = y0 - k * x0
        if all(y == k * x + c for x, y in pairs):
            return (i, k, c)
    return "fail"


def _exprs_of(group: list) -> list:
    src = [cut(m.source)[1] for m in group]
    tgt = [cut(m.target)[1] for m in group]
    varying = [i for i in range(len(src[0])) if len({s[i] for s in src}) > 1]
    return [_target_exprs(tgt, src, j, varying) for j in range(len(tgt[0]))]


def _expr(name: str, k: int, c: int) -> str:
    e = name if k == 1 else f"{k}*{name}"
    if c > 0:
        e += f"+{c}"
    elif c < 0:
        e += f"-{-c}"
    return "{" + e + "}"


def _render(texts: tuple, nums: list) -> str:
    """Interleave texts and rendered numbers/placeholders."""
    out = [texts[0]]
    for n, t in zip(nums, texts[1:]):
        out += [str(n), t]
    return "".join(out)


def generalize(mappings: list, source_names: list, letters: bool = True) -> list:
    """Rules (dicts) for the mappings, in an order where each source name meets its own rule first.  With
    ``letters``, a letter after a number may be a placeholder too (``res<a><b:a|b|c>_branch2a`` ->
    ``layer{a-1}.{letter[b]}.conv1``; :func:`letter_vars` gives the table the rules then need)."""
    token = _letters_on.set(letters)
    try:
        return _generalize(mappings, source_names)
    finally:
        _letters_on.reset(token)


def _generalize(mappings: list, source_names: list) -> list:
    names = set(source_names)
    groups: "OrderedDict[tuple, list]" = OrderedDict()
    for m in mappings:
        groups.setdefault(_signature(m, names), []).append(m)
    fitted = []
    for members, marked in _word_families(list(groups.values()), names):
        merged = _fit(marked, names, source_names, real=[m for g in members for m in g]) if marked else None
        fitted += merged if merged else [f for g in members for f in _fit(g, names, source_names)]
    while True:
        # a wider pattern that also matches another rule's names goes after that rule (first match wins)
        order = [f for f in fitted if not f[2]] + sorted((f for f in fitted if f[2]), key=lambda f: len(f[2]))
        bad = _misrouted(order, source_names)
        if bad is None:
            return [f[0] for f in order]
        i = fitted.index(bad)
        fitted[i:i + 1] = _explicits(bad[3])


_MARK = "\x00"  # a word that varies between groups, while it is being generalized
_ALNUM = re.compile(r"[A-Za-z0-9]+")


def _common(a: str, b: str, suffix: bool) -> str:
    """The common prefix (or suffix) of two texts, cut back to a non-alphanumeric boundary."""
    if suffix:
        return _common(a[::-1], b[::-1], False)[::-1]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    while n and (a[n - 1:n].isalnum() and (n < len(a) and a[n].isalnum() or n < len(b) and b[n].isalnum())):
        n -= 1
    return a[:n]


def _word_split(a: str, b: str):
    """``(prefix, word_a, word_b, suffix)`` when ``a`` and ``b`` differ in one alphanumeric word."""
    pre = _common(a, b, False)
    suf = _common(a[len(pre):], b[len(pre):], True)
    wa, wb = a[len(pre):len(a) - len(suf)], b[len(pre):len(b) - len(suf)]
    if _ALNUM.fullmatch(wa) and _ALNUM.fullmatch(wb) and wa != wb:
        return pre, wa, wb, suf
    return None


def _mark_name(name: str, pos: int, pre: str, word: str) -> str:
    """``name`` with ``word`` after ``pre`` in its text segment ``pos`` marked, if it is there."""
    texts, nums = cut(name)
    if pos < len(texts):
        seg, head = texts[pos], pre + word
        if seg.startswith(head) and not seg[len(head):len(head) + 1].isalnum():
            texts = texts[:pos] + (pre + _MARK + seg[len(head):],) + texts[pos + 1:]
    return _render(texts, list(nums))


def _marked(m, p: int, q: int, pre: str, tpre: str, word: str, names: set):
    mark_src = lambda s: _mark_name(s, p, pre, word) if _is_name(s, m, names) else s  # noqa: E731
    also = [{**a, "to": _mark_name(a["to"], q, tpre, word),
             **({"apply": _replace_strings(a["apply"], mark_src)} if "apply" in a else {})} for a in m.also]
    return m._replace(source=_mark_name(m.source, p, pre, word),
                      target=_mark_name(m.target, q, tpre, word) if m.target else m.target,
                      apply=_replace_strings(m.apply, mark_src), also=also)


def _word_families(groups: list, names: set) -> list:
    """Groups that differ only in one word of the source name, carried into the target name (``conv_sep``
    -> ``.sep.``, ``conv_dw`` -> ``.dw.``): ``[(member groups, marked mappings or None)]``."""
    keys = [(cut(g[0].source)[0], cut(g[0].target)[0] if g[0].target else ()) for g in groups]
    families: "OrderedDict[tuple, list]" = OrderedDict()
    for i, (s1, t1) in enumerate(keys):
        for j in range(i + 1, len(keys)):
            s2, t2 = keys[j]
            if len(s1) != len(s2) or len(t1) != len(t2):
                continue
            ds = [k for k in range(len(s1)) if s1[k] != s2[k]]
            dt = [k for k in range(len(t1)) if t1[k] != t2[k]]
            if len(ds) != 1 or len(dt) != 1:
                continue
            a, b = _word_split(s1[ds[0]], s2[ds[0]]), _word_split(t1[dt[0]], t2[dt[0]])
            if a is None or b is None or (a[1], a[2]) != (b[1], b[2]):
                continue
            key = (ds[0], dt[0], a[0], b[0], s1[:ds[0]], t1[:dt[0]])
            fam = families.setdefault(key, [])
            for g, w in ((i, a[1]), (j, a[2])):
                if all(g != x for x, _ in fam):
                    fam.append((g, w))
    out, taken = [], set()
    for (p, q, pre, tpre, _, _), fam in sorted(families.items(), key=lambda kv: -len(kv[1])):
        alike: "OrderedDict[tuple, list]" = OrderedDict()  # members whose marked mappings agree
        for g, w in fam:
            if g not in taken:
                ms = [_marked(m, p, q, pre, tpre, w, names) for m in groups[g]]
                alike.setdefault(_signature(ms[0], names), []).append((g, ms))
        for members in alike.values():
            if len(members) > 1:
                taken.update(g for g, _ in members)
                out.append(([groups[g] for g, _ in members], [m for _, ms in members for m in ms]))
    return out + [([g], None) for i, g in enumerate(groups) if i not in taken]


def _misrouted(order: list, source_names: list):
    """The first fitted rule that takes a name meant for another (or for none), else None."""
    patterns = [Pattern(f[0]["from"]) for f in order]
    for name in source_names:
        for f, p in zip(order, patterns):
            try:
                hit = p.match(name) is not None
            except ValueError:
                return f
            if hit:
                if name not in f[1]:
                    return f if f[2] else next((g for g in order if name in g[1] and g[2]), f)
                break
    return None


def _fit(group: list, names: set, source_names: list, real: Optional[list] = None) -> Optional[list]:
    """Rules for one group.  With ``real``, ``group`` holds the same mappings with one word marked
    (``_MARK``), which becomes the placeholder ``<_w:word>``; then None when that does not fit."""
    if real is not None and (len(group) == 1 or any(e == "fail" for e in _exprs_of(group))):
        return None
    src = [cut(m.source)[1] for m in group]
    tgt = [cut(m.target)[1] for m in group]
    s_texts = cut(group[0].source)[0]
    t_texts = cut(group[0].target)[0]
    varying = [i for i in range(len(src[0])) if len({s[i] for s in src}) > 1]
    exprs = [_target_exprs(tgt, src, j, varying) for j in range(len(tgt[0]))]
    if len(group) == 1 or "fail" in exprs:
        if len(group) == 1:
            return _explicits(group)
        # split by the first varying source number and try each part
        i = varying[0]
        parts: "OrderedDict[int, list]" = OrderedDict()
        for m, s in zip(group, src):
            parts.setdefault(s[i], []).append(m)
        if len(parts) == len(group):
            return _explicits(group)
        return [r for p in parts.values() for r in _fit(p, names, source_names)]
    letters = {i: _LETTERS[k % 26] + ("" if k < 26 else str(k // 26)) for k, i in enumerate(varying)}
    s_nums = [(f"<{letters[i]}:{'|'.join(sorted({str(s[i]) for s in src}))}>" if isinstance(src[0][i], Letter)
               else f"<{letters[i]}>") if i in letters else str(src[0][i]) for i in range(len(src[0]))]
    pattern_text = _render(s_texts, s_nums).replace(_MARK, "<_w:word>")

    def var(i: int) -> str:  # a letter placeholder captures the letter: its number comes from the table
        return f"{LETTER_VAR}[{letters[i]}]" if isinstance(src[0][i], Letter) else letters[i]

    t_nums = [str(tgt[0][j]) if e is None else _expr(var(e[0]), e[1], e[2]) for j, e in enumerate(exprs)]
    to_text = _render(tuple(_esc_template(t) for t in t_texts), t_nums).replace(_MARK, "{_w}")
    fail = None if real is not None else _explicits(group)
    real = real if real is not None else group
    # the pattern must match its group and nothing else in the source
    p = Pattern(pattern_text)
    members = {m.source for m in real}
    try:
        extra = [n for n in source_names if n not in members and p.match(n) is not None]
        if any(p.match(m.source) is None for m in real):
            return fail
    except ValueError:
        return fail

    def generic(s: str) -> str:  # a tensor/layer name in arguments, with the same placeholders
        texts, nums = cut(s)
        first = src[0]
        out = []
        for k, n in enumerate(nums):  # position k stands for the source's position k where the texts agree
            same = k < len(first) and texts[:k + 1] == s_texts[:k + 1] and first[k] == n
            out.append("{" + letters[k] + "}" if same and k in letters else str(n))
        return _render(tuple(_esc_template(t) for t in texts), out).replace(_MARK, "{_w}")

    rule = {"from": pattern_text, "drop": True} if not group[0].target else {"from": pattern_text, "to": to_text}
    m0 = group[0]
    if m0.apply:
        rule["apply"] = _replace_strings(m0.apply, lambda s: generic(s) if _is_name(s, m0, names) else s)
    if m0.also:
        also = []
        for a in m0.also:
            texts, nums = cut(a["to"])
            out = []
            for k, n in enumerate(nums):  # the same number positions as the main target's
                out.append(t_nums[k] if k < len(t_nums) and tgt[0][k] == n else str(n))
            item = {**a, "to": _render(tuple(_esc_template(t) for t in texts), out).replace(_MARK, "{_w}")}
            if "apply" in a:
                item["apply"] = _replace_strings(a["apply"], lambda s: generic(s) if _is_name(s, m0, names) else s)
            also.append(item)
        rule["also"] = also
    if not _consistent(rule, real):
        return fail
    return [(rule, members, extra, real)]


def _explicits(group: list) -> list:
    return [(_explicit(m), {m.source}, [], [m]) for m in group]


def _consistent(rule: dict, group: list) -> bool:
    """Render the rule for every member: the target, references and constants must come out as drafted."""
    from ..language.expr import Template

    p = Pattern(rule["from"])
    table = {LETTER_VAR: {x: i for i, x in enumerate(_LETTERS)}}
    for m in group:
        caps = {**table, **p.match(m.source)}
        try:
            if Template(rule.get("to", "")).render(caps) != m.target:
                return False
            got = _replace_strings(rule.get("apply", []), lambda s: Template(s).render(caps) if "{" in s else s)
            if got != m.apply:
                return False
            for item, a in zip(rule.get("also", []), m.also):
                if Template(item["to"]).render(caps) != a["to"]:
                    return False
                if "apply" in a and _replace_strings(item["apply"], lambda s: Template(s).render(caps) if "{" in s
                                                     else s) != a["apply"]:
                    return False
        except Exception:  # noqa: BLE001 - any failure to render means: not this rule
            return False
    return True


def _explicit(m) -> dict:
    if not m.target:
        return {"from": m.source, "drop": True}
    rule = {"from": m.source, "to": _esc_template(m.target)}
    if m.apply:
        rule["apply"] = _replace_strings(m.apply, lambda s: _esc_template(s))
    if m.also:
        rule["also"] = [_replace_strings(a, _esc_template) if "apply" in a else {**a, "to": _esc_template(a["to"])}
                        for a in m.also]
    return rule
