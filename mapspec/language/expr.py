"""``{...}`` expressions and templates: our own tiny evaluator, never Python's ``eval``.

Grammar (integers only, as in a spec's names)::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "//" | "%") unary)*
    unary   := "-" unary | postfix
    postfix := atom ("[" expr "]")*
    atom    := INTEGER | NAME | STRING | "(" expr ")" | NAME "(" [expr] ")"

A call is one of :data:`FUNCTIONS`: ``shape("model.embed_tokens.weight")`` is a source
tensor's shape (a list, so ``shape("x")[1]`` is its second dimension) and ``shape()``
the shape of the tensor the rule matched; both are known when planning, not in
``validate``.

Names are captures of the rule's ``from`` pattern, ``each`` variables and the spec's
``vars``.  ``block_sizes[i]`` looks up a var (a mapping or a list).  A template is
text with ``{expr}`` holes; ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Union
from ..errors import MapspecError

_TOKEN = re.compile(r"\s*(?:(?P<int>[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>'[^']*'|\"[^\"]*\")"
                    r"|(?P<op>//|[-+*%()\[\]]))")

MAX_INT = 1 << 62
# Bounds that keep parsing, type checking and evaluation (all recursive over the tree) far
# from Python's recursion limit; a spec's expressions are a few tokens long.
MAX_TOKENS = 256
MAX_NESTING = 32


class ExprError(MapspecError, ValueError):
    """A syntax or evaluation error; ``column`` is 0-based within the expression text."""

    def __init__(self, message: str, column: int = 0):
        super().__init__(message)
        self.column = column


class Num(NamedTuple):
    value: int


class Str(NamedTuple):
    value: str


class Name(NamedTuple):
    name: str
    column: int


class BinOp(NamedTuple):
    op: str
    left: Any
    right: Any
    column: int


class Neg(NamedTuple):
    operand: Any


class Index(NamedTuple):
    target: Any
    index: Any
    column: int


class Call(NamedTuple):
    func: str
    args: tuple
    column: int


FUNCTIONS = {"shape": "a source tensor's shape: shape(\"name\") or shape() for the matched tensor"}
SHAPE_OF = "$shape"  # the environment key of the function that answers shape(); '$' is no var name

Node = Union[Num, Str, Name, BinOp, Neg, Index, Call]


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ExprError(f"unexpected character {text[pos:].lstrip()[:1]!r}", pos)
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            if len(self.tokens) > MAX_TOKENS:
                raise ExprError(f"expression is too long (more than {MAX_TOKENS} tokens)", m.start(kind))
            pos = m.end()
        self.i = 0
        self.depth = 0

    def _enter(self, col: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExprError(f"expression is nested too deeply (more than {MAX_NESTING} levels of (), [] or -)",
                            col)

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text))

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, value: str):
        kind, text, col = self.take()
        if text != value or kind != "op":
            raise ExprError(f"expected {value!r}, found {text or 'end of expression'!r}", col)

    def parse(self) -> Node:
        if not self.tokens:
            raise ExprError("empty expression {}", 0)
        node = self.expr()
        kind, text, col = self.peek()
        if kind != "end":
            raise ExprError(f"unexpected {text!r}", col)
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.peek()[1] in ("+", "-") and self.peek()[0] == "op":
            _, op, col = self.take()
            node = BinOp(op, node, self.term(), col)
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek()[1] in ("*", "//", "%") and self.peek()[0] == "op":
            _, op, col = self.take()
            node = BinOp(op, node, self.unary(), col)
        return node

    def unary(self) -> Node:
        if self.peek() [1] == "-" and self.peek()[0] == "op":
            _, _, col = self.take()
            self._enter(col)
            node = Neg(self.unary())
            self.depth -= 1
            return node
        return self.postfix()

    def postfix(self) -> Node:
        node = self.atom()
        while self.peek()[1] == "[" and self.peek()[0] == "op":
            _, _, col = self.take()
            self._enter(col)
            idx = self.expr()
            self.expect("]")
            self.depth -= 1
            node = Index(node, idx, col)
        return node

    def call(self, func: str, col: int) -> Node:
        if func not in FUNCTIONS:
            raise ExprError(f"unknown function {func!r} (known: {', '.join(FUNCTIONS)})", col)
        self.take()
        self._enter(col)
        args = () if self.peek()[1] == ")" and self.peek()[0] == "op" else (self.expr(),)
        self.expect(")")
        self.depth -= 1
        return Call(func, args, col)

    def atom(self) -> Node:
        kind, text, col = self.take()
        if kind == "int":
            digits = text.lstrip("0")
            # a length test first: int() of a 5000-digit text is Python's digit-limit error
            if len(digits) > len(str(MAX_INT)) or int(digits or "0") > MAX_INT:
                shown = text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
                raise ExprError(f"integer {shown} is too large (at most 2**62 = {MAX_INT})", col)
            return Num(int(text))
        if kind == "name":
            if self.peek()[1] == "(" and self.peek()[0] == "op":
                return self.call(text, col)
            return Name(text, col)
        if kind == "str":
            return Str(text[1:-1])
        if text == "(":
            self._enter(col)
            node = self.expr()
            self.expect(")")
            self.depth -= 1
            return node
        raise ExprError(f"expected a number, a name or '(', found {text or 'end of expression'!r}", col)


def parse(text: str) -> Node:
    return _Parser(text).parse()


def names(node: Node) -> list[tuple[str, int]]:
    """Free names of an expression with their columns."""
    out: list[tuple[str, int]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Name):
            out.append((n.name, n.column))
        elif isinstance(n, BinOp):
            stack += [n.right, n.left]
        elif isinstance(n, Neg):
            stack.append(n.operand)
        elif isinstance(n, Index):
            stack += [n.index, n.target]
        elif isinstance(n, Call):
            stack += list(n.args)
    return sorted(out, key=lambda x: x[1])


def check_types(node: Node, types: dict[str, str]) -> None:
    """Static check: arithmetic on text captures is an error.  ``types``: name -> 'int' | 'str' | 'any'."""

    def t(n) -> str:
        if isinstance(n, Num):
            return "int"
        if isinstance(n, Str):
            return "str"
        if isinstance(n, Name):
            return types.get(n.name, "any")
        if isinstance(n, Neg):
            if t(n.operand) == "str":
                raise ExprError("cannot negate text", 0)
            return "int"
        if isinstance(n, BinOp):
            for side in (n.left, n.right):
                if t(side) == "str":
                    raise ExprError(f"operator {n.op!r} needs integers, but one side is text "
                                    f"(a <name:word> or <name:path> capture, or a text var)", n.column)
            return "int"
        if isinstance(n, Call):
            for a in n.args:
                if t(a) == "int":
                    raise ExprError(f"{n.func}() takes a tensor name (text), not an integer", n.column)
            return "any"
        if isinstance(n, Index):
            t(n.index)
            if t(n.target) in ("int", "str"):
                raise ExprError("only a var holding a mapping or a list can be indexed", n.column)
            return "any"
        return "any"

    t(node)


def evaluate(node: Node, env: dict[str, Any]) -> Any:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Str):
        return node.value
    if isinstance(node, Name):
        if node.name not in env:
            raise ExprError(f"undefined name {node.name!r}", node.column)
        return env[node.name]
    if isinstance(node, Neg):
        v = evaluate(node.operand, env)
        return -_int(v, 0)
    if isinstance(node, BinOp):
        a = _int(evaluate(node.left, env), node.column)
        b = _int(evaluate(node.right, env), node.column)
        if node.op == "+":
            r = a + b
        elif node.op == "-":
            r = a - b
        elif node.op == "*":
            r = a * b
        else:
            if b == 0:
                raise ExprError(f"division by zero in {node.op!r}", node.column)
            r = a // b if node.op == "//" else a % b
        if abs(r) > MAX_INT:
            raise ExprError("integer too large", node.column)
        return r
    if isinstance(node, Call):
        fn = env.get(SHAPE_OF)
        if fn is None:
            raise ExprError(f"{node.func}() is known only when planning against a source checkpoint", node.column)
        args = [evaluate(a, env) for a in node.args]
        if args and not isinstance(args[0], str):
            raise ExprError(f"{node.func}() takes a tensor name, got {args[0]!r}", node.column)
        try:
            return fn(*args)
        except KeyError as e:
            raise ExprError(f"{node.func}({args[0]!r}): {e.args[0]}" if args else
                            f"{node.func}(): {e.args[0]}", node.column) from None
    if isinstance(node, Index):
        target = evaluate(node.target, env)
        key = evaluate(node.index, env)
        if isinstance(target, dict):
            if key in target:
                return target[key]
            alt = str(key) if isinstance(key, int) else (int(key) if isinstance(key, str) and key.isdigit() else None)
            if alt is not None and alt in target:
                return target[alt]
            keys = ", ".join(repr(k) for k in list(target)[:10])
            raise ExprError(f"key {key!r} not in mapping (keys: {keys})", node.column)
        if isinstance(target, list):
            if not isinstance(key, int) or isinstance(key, bool):
                raise ExprError(f"a list index must be an integer, got {key!r}", node.column)
            if not -len(target) <= key < len(target):
                raise ExprError(f"index {key} out of range for a list of {len(target)}", node.column)
            return target[key]
        raise ExprError(f"cannot index {type(target).__name__} value {target!r}", node.column)
    raise ExprError("bad expression", 0)  # pragma: no cover


def _int(v: Any, column: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ExprError(f"arithmetic needs integers, got {v!r}", column)
    return v


class Template:
    """Text with ``{expr}`` holes."""

    def __init__(self, text: str):
        self.text = text
        self.parts: list[Union[str, tuple[Node, int]]] = []
        buf: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c == "{" and text.startswith("{{", i):
                buf.append("{")
                i += 2
            elif c == "}" and text.startswith("}}", i):
                buf.append("}")
                i += 2
            elif c == "{":
                end = text.find("}", i + 1)
                if end < 0:
                    raise ExprError("unclosed '{' (write '{{' for a literal brace)", i)
                if buf:
                    self.parts.append("".join(buf))
                    buf = []
                inner = text[i + 1:end]
                try:
                    node = parse(inner)
                except ExprError as e:
                    raise ExprError(str(e), i + 1 + e.column) from None
                self.parts.append((node, i + 1))
                i = end + 1
            elif c == "}":
                raise ExprError("unmatched '}' (write '}}' for a literal brace)", i)
            else:
                buf.append(c)
                i += 1
        if buf:
            self.parts.append("".join(buf))
        self.is_constant = all(isinstance(p, str) for p in self.parts)

    def names(self) -> list[tuple[str, int]]:
        out = []
        for p in self.parts:
            if not isinstance(p, str):
                node, offset = p
                out += [(n, offset + c) for n, c in names(node)]
        return out

    def check_types(self, types: dict[str, str]) -> None:
        for p in self.parts:
            if not isinstance(p, str):
                node, offset = p
                try:
                    check_types(node, types)
                except ExprError as e:
                    raise ExprError(str(e), offset + e.column) from None

    def render(self, env: dict[str, Any]) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            else:
                node, offset = p
                try:
                    v = evaluate(node, env)
                except ExprError as e:
                    raise ExprError(str(e), offset + e.column) from None
                if isinstance(v, bool) or not isinstance(v, (int, str)):
                    raise ExprError(f"expression gives {v!r}; a name needs an integer or text", offset)
                out.append(str(v))
        return "".join(out)

    def value(self, env: dict[str, Any]) -> Any:
        """A template that is exactly one ``{expr}``: its value (an int for ``reshape: ["{c*2}"]``)."""
        if len(self.parts) == 1 and not isinstance(self.parts[0], str):
            node, offset = self.parts[0]
            try:
                return evaluate(node, env)
            except ExprError as e:
                raise ExprError(str(e), offset + e.column) from None
        return self.render(env)
