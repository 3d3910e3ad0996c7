"""Names as algebra: target templates read as patterns and source patterns written as templates, holes
linear in one capture solved, and sample names of a pattern."""

from __future__ import annotations

from typing import Optional

from .. import inverse_tables
from ..language import expr as E
from ..language.expr import ExprError, Template
from ..language.pattern import AmbiguousMatch, Choice, Pattern, Placeholder
from ..transforms.inverse import NotInvertible


# -- expressions -----------------------------------------------------------------------

def unparse(n) -> str:
    def wrap(m) -> str:
        return f"({unparse(m)})" if isinstance(m, (E.BinOp, E.Neg)) else unparse(m)

    if isinstance(n, E.Num):
        return str(n.value)
    if isinstance(n, E.Str):
        return f'"{n.value}"' if "'" in n.value else f"'{n.value}'"
    if isinstance(n, E.Name):
        return n.name
    if isinstance(n, E.Neg):
        return f"-{wrap(n.operand)}"
    if isinstance(n, E.BinOp):
        return f"{wrap(n.left)}{n.op}{wrap(n.right)}"
    if isinstance(n, E.Index):
        return f"{unparse(n.target)}[{unparse(n.index)}]"
    raise NotInvertible(f"{getattr(n, 'func', '?')}() is about the tensor the rule matched, which in the reverse is "
                        f"another one")


def substitute(n, mapping: dict):
    """``n`` with names replaced; integer arithmetic on constants folded (``1+1`` -> ``2``)."""
    if isinstance(n, E.Name):
        return mapping.get(n.name, n)
    if isinstance(n, E.Neg):
        inner = substitute(n.operand, mapping)
        return E.Num(-inner.value) if isinstance(inner, E.Num) and inner.value <= 0 else E.Neg(inner)
    if isinstance(n, E.BinOp):
        left, right = substitute(n.left, mapping), substitute(n.right, mapping)
        if isinstance(left, E.Num) and isinstance(right, E.Num):
            v = E.evaluate(E.BinOp(n.op, left, right, 0), {})
            if v >= 0:
                return E.Num(v)
        return E.BinOp(n.op, left, right, n.column)
    if isinstance(n, E.Index):
        return E.Index(substitute(n.target, mapping), substitute(n.index, mapping), n.column)
    return n


def _free(n) -> set:
    return {name for name, _ in E.names(n)}


def linear(n, x: str):
    """``(a, r)`` with ``n == a*x + r`` (``r`` free of ``x``), or None."""
    if x not in _free(n):
        return 0, n
    if isinstance(n, E.Name):
        return 1, E.Num(0)
    if isinstance(n, E.Neg):
        inner = linear(n.operand, x)
        return None if inner is None else (-inner[0], E.Neg(inner[1]))
    if isinstance(n, E.BinOp) and n.op in "+-":
        left, right = linear(n.left, x), linear(n.right, x)
        if left is None or right is None:
            return None
        a = left[0] + right[0] if n.op == "+" else left[0] - right[0]
        return a, E.BinOp(n.op, left[1], right[1], 0)
    if isinstance(n, E.BinOp) and n.op == "*":
        for const, other in ((n.left, n.right), (n.right, n.left)):
            if isinstance(const, E.Num):
                inner = linear(other, x)
                if inner is None:
                    return None
                return const.value * inner[0], E.BinOp("*", const, inner[1], 0)
    return None


def _solve(a: int, r, ph: str):
    """x from ``a*x + r == ph``."""
    c = E.Name(ph, 0)
    if not _free(r):
        v = E.evaluate(r, {})
        diff = c if v == 0 else E.BinOp("-" if v > 0 else "+", c, E.Num(abs(v)), 0)
    else:
        diff = E.BinOp("-", c, r, 0)
    if a == 1:
        return diff
    if a == -1:
        return E.Neg(diff)
    return E.BinOp("//", diff, E.Num(a), 0) if a > 0 else E.BinOp("//", E.Neg(diff), E.Num(-a), 0)


def template_text(t: Template, mapping: dict) -> str:
    """``t`` written back as template text with names replaced by expressions."""
    out = []
    for p in t.parts:
        if isinstance(p, str):
            out.append(p.replace("{", "{{").replace("}", "}}"))
        else:
            node = substitute(p[0], mapping)
            if isinstance(node, (E.Num, E.Str)):  # a known value: written as text
                out.append(str(node.value).replace("{", "{{").replace("}", "}}"))
            else:
                out.append("{" + unparse(node) + "}")
    return "".join(out)


def pattern_template(p: Pattern, mapping: dict, notes: Optional[list] = None, chosen: Optional[dict] = None) -> str:
    """A forward ``from`` pattern as the reverse's ``to`` template.  An alternative the pattern does not
    capture (``<?transformer.>``) is written as the option every source name took (``chosen``: token
    index -> option, from planning the forward on a source file), else as its first option (said in
    ``notes``)."""
    out = []
    for k, tok in enumerate(p.tokens):
        value = mapping.get(tok.name) if isinstance(tok, (Placeholder, Choice)) and tok.name else None
        if isinstance(value, (E.Num, E.Str)):  # one value in every source name: written as text
            out.append(str(value.value).replace("{", "{{").replace("}", "}}"))
        elif isinstance(tok, Placeholder) or (isinstance(tok, Choice) and tok.name):
            out.append("{" + unparse(mapping.get(tok.name, E.Name(tok.name, 0))) + "}")
        elif isinstance(tok, Choice) and chosen and k in chosen:
            out.append(chosen[k].replace("{", "{{").replace("}", "}}"))
        elif isinstance(tok, Choice):
            first = tok.options[0]
            if notes is not None:
                notes.append(f"'{p.text}' accepts {' or '.join(repr(o) for o in tok.options)} there: the reverse "
                             f"writes {first!r}")
            out.append(first.replace("{", "{{").replace("}", "}}"))
        else:
            out.append(tok.replace("{", "{{").replace("}", "}}"))
    return "".join(out)


def template_pattern(t: Template, kinds: dict, fixed: dict) -> tuple[str, dict]:
    """A forward ``to`` template as the reverse's ``from`` pattern.

    ``kinds``: the forward captures (name -> int/word/path), to be recovered; ``fixed``: names
    with known values (vars, the each values of this output).  Returns the pattern text and
    the solutions: capture -> expression over the pattern's placeholders.
    """
    holes = [(i, p[0]) for i, p in enumerate(t.parts) if not isinstance(p, str)]
    literal: dict[int, str] = {}
    solved: dict[str, object] = {}
    placed: dict[int, str] = {}  # part index -> placeholder text
    seen: dict[str, str] = {}  # unparsed hole -> placeholder text
    for i, node in holes:
        if not _free(node) & set(kinds):
            try:
                v = E.evaluate(node, fixed)
            except ExprError as e:
                raise NotInvertible(f"'to' hole {{{unparse(node)}}}: {e}") from None
            literal[i] = str(v)
    progress = True
    while progress:
        progress = False
        for i, node in holes:
            if i in literal or i in placed:
                continue
            key = unparse(node)
            unknown = sorted(n for n in _free(node) if n in kinds and n not in solved)
            if not unknown:
                if key in seen:
                    placed[i] = seen[key]
                    progress = True
                elif isinstance(node, E.Name) and node.name in kinds:
                    placed[i] = seen[key] = _ph(node.name, kinds[node.name])
                    progress = True
                continue
            if len(unknown) != 1:
                continue
            x = unknown[0]
            if isinstance(node, E.Name):
                solved[x] = E.Name(x, 0)
                placed[i] = seen[key] = _ph(x, kinds[x])
                progress = True
                continue
            table = inverse_tables.lookup(node, x, fixed)
            if table is not None:  # {table[x]}: read back through the inverse table, if it is one-to-one
                name = _fresh(x, kinds)
                try:
                    placed[i] = seen[key] = inverse_tables.placeholder(name, inverse_tables.inverse(
                        table, fixed[table], fixed))
                except inverse_tables.TableError as e:
                    raise NotInvertible(f"the target name's {{{key}}} cannot be solved for {x}: {e}") from None
                solved[x], progress = inverse_tables.solution(table, name), True
                continue
            lin = linear(node, x)
            if lin is None or lin[0] == 0 or kinds[x] != "int":
                continue
            name = _fresh(x, kinds)
            solved[x] = _solve(lin[0], substitute(lin[1], solved), name)
            placed[i] = seen[key] = f"<{name}>"
            progress = True
    for i, node in holes:
        if i not in literal and i not in placed:
            raise NotInvertible(f"the target name's {{{unparse(node)}}} cannot be solved for "
                                f"{', '.join(sorted(_free(node) & set(kinds)))} (only sums and multiples of one "
                                f"capture can)")
    missing = sorted(set(kinds) - set(solved))
    if missing:
        raise NotInvertible(f"the target name {t.text!r} does not contain <{missing[0]}>: the reverse cannot tell "
                            f"which source tensor it came from")
    out = []
    for i, p in enumerate(t.parts):
        text = p if isinstance(p, str) else literal.get(i) or placed[i]
        if isinstance(p, str) or i in literal:
            if "<" in text or ">" in text:
                raise NotInvertible(f"the target name {t.text!r} contains '<' or '>', which a pattern cannot hold")
        out.append(text)
    return "".join(out), solved


def _fresh(x: str, kinds: dict) -> str:
    name = f"_{x}"
    while name in kinds:
        name = f"_{name}"
    return name


def _token_text(tok) -> str:
    if isinstance(tok, str):
        return tok
    if isinstance(tok, Placeholder):
        return _ph(tok.name, tok.kind)
    if tok.name:
        return f"<{tok.name}:{'|'.join(tok.options)}>"
    if len(tok.options) == 2 and tok.options[1] == "":
        return f"<?{tok.options[0]}>"
    return f"<{'|'.join(tok.options)}>"


def chosen_options(p: Pattern, names: list) -> dict:
    """Token index -> option, for each alternative ``p`` does not capture that every one of ``names`` matched
    with the same option (``<?transformer.>``: whether the source's names had the prefix)."""
    out = {}
    for k, tok in enumerate(p.tokens):
        if not (isinstance(tok, Choice) and not tok.name) or not names:
            continue
        fits = []
        for option in tok.options:
            fixed = Pattern("".join(option if j == k else _token_text(t) for j, t in enumerate(p.tokens)))
            if all(_matches(fixed, n) for n in names):
                fits.append(option)
        if len(fits) == 1:
            out[k] = fits[0]
    return out


def _ph(name: str, kind) -> str:
    if isinstance(kind, tuple):  # a captured alternative: the same alternatives in the reverse
        return f"<{name}:{'|'.join(kind)}>"
    return f"<{name}>" if kind == "int" else f"<{name}:{kind}>"


def capture_kinds(p: Pattern) -> dict:
    """Capture name -> ``int``/``word``/``path``, or the tuple of options of a captured alternative."""
    kinds = dict(p.captures)
    for tok in p.tokens:
        if isinstance(tok, Choice) and tok.name:
            kinds[tok.name] = tuple(tok.options)
    return kinds


def rewrite(value, mapping: dict):
    """Templates inside raw transform arguments, with names replaced."""
    if isinstance(value, str) and "{" in value:
        return template_text(Template(value), mapping)
    if isinstance(value, list):
        return [rewrite(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: rewrite(v, mapping) for k, v in value.items()}
    return value


def _uses(value, names: set) -> bool:
    if isinstance(value, str) and "{" in value:
        return bool({n for n, _ in Template(value).names()} & names)
    if isinstance(value, list):
        return any(_uses(v, names) for v in value)
    if isinstance(value, dict):
        return any(_uses(v, names) for v in value.values())
    return False


_SAMPLES = {"int": ("0", "7", "12"), "word": ("a", "x_1", "B2"), "path": ("a", "p.q/r[1]", "x_1")}


def _samples(p: Pattern) -> list[str]:
    def one(t, k: int) -> str:
        if isinstance(t, str):
            return t
        if isinstance(t, Choice):
            return t.options[k % len(t.options)]
        return _SAMPLES.get(t.kind, _SAMPLES["word"])[k]
    return ["".join(one(t, k) for t in p.tokens) for k in range(3)]


def _matches(p: Pattern, name: str) -> bool:
    try:
        return p.match(name) is not None
    except AmbiguousMatch:
        return True
