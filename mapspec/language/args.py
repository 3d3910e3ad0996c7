"""Transform arguments: static checks (``validate``) and binding (``plan``).

Argument kinds are declared by each transform (see :mod:`mapspec.transforms.registry`).
Two mapping forms appear in arguments:

* a tensor reference with options: ``{ref: "conv1[1]", optional: true}`` (a plain
  string is a required reference);
* an attribute of a source layer/op: ``{attr: eps, of: "conv1/bn", default: 1e-5}``,
  read from the source file (a caffemodel's layer parameters, an MXNet symbol's op
  attributes) so that a spec need not hard-code what the file already says.

Strings in arguments are templates: ``"conv{i}_{j}/x1/bn[2]"``; an integer argument
may be an expression ``"{c * 2}"``.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator, NamedTuple, Optional

from .. import dtypes
from ..errors import Location, SpecError
from ..transforms.registry import Arg
from .expr import ExprError, Template


class Ref(NamedTuple):
    """A bound reference to a source tensor."""

    name: str


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_attr(v) -> bool:
    return isinstance(v, dict) and "attr" in v


def _is_ref_map(v) -> bool:
    return isinstance(v, dict) and "ref" in v


def _sub_loc(container, key, default: Location) -> Location:
    if hasattr(container, "loc_of"):
        return container.loc_of(key)
    return default


def _loc_in(loc: Location, column: int) -> Location:
    return Location(loc.file, loc.line, loc.col + column) if loc.line else loc


class Checker:
    """Static checks of one argument value; ``names`` are the names a template may use."""

    def __init__(self, names: dict[str, str], rule_label: str):
        self.names = names  # name -> 'int' | 'str' | 'any'
        self.label = rule_label

    def err(self, msg: str, loc: Location) -> SpecError:
        return SpecError(msg, loc, self.label)

    def template(self, text: str, loc: Location, what: str) -> Iterator[SpecError]:
        try:
            t = Template(text)
        except ExprError as e:
            yield self.err(f"{what}: {e}", _loc_in(loc, e.column))
            return
        for name, col in t.names():
            if name not in self.names:
                hint = difflib.get_close_matches(name, list(self.names), n=1)
                known = ", ".join(sorted(self.names)) or "none"
                yield self.err(f"{what}: {{{name}}} is not captured by 'from', an 'each' variable or a var"
                               + (f" (did you mean {{{hint[0]}}}?)" if hint else f" (known names: {known})"),
                               _loc_in(loc, col))
        try:
            t.check_types(self.names)
        except ExprError as e:
            yield self.err(f"{what}: {e}", _loc_in(loc, e.column))

    def int_like(self, v, loc: Location, what: str) -> Iterator[SpecError]:
        if _is_int(v):
            return
        if isinstance(v, str) and v.startswith("{") and v.endswith("}"):
            yield from self.template(v, loc, what)
            return
        if _is_attr(v):
            yield from self.attr(v, loc, what, _is_int, "an integer")
            return
        yield self.err(f"{what} must be an integer, an expression \"{{...}}\" or {{attr: NAME, of: LAYER}}, "
                       f"not {v!r}", loc)

    def ref(self, v, loc: Location, what: str) -> Iterator[SpecError]:
        if isinstance(v, str):
            yield from self.template(v, loc, what)
        elif _is_ref_map(v):
            extra = set(v) - {"ref", "optional"}
            if extra:
                yield self.err(f"{what}: unknown key {sorted(extra)[0]!r} in a reference (keys: ref, optional)", loc)
            if not isinstance(v["ref"], str):
                yield self.err(f"{what}: 'ref' must be a tensor name (a string)", _sub_loc(v, "ref", loc))
            else:
                yield from self.template(v["ref"], _sub_loc(v, "ref", loc), what)
            if "optional" in v and not isinstance(v["optional"], bool):
                yield self.err(f"{what}: 'optional' must be true or false", _sub_loc(v, "optional", loc))
        else:
            yield self.err(f"{what} must be a tensor reference (a name, or {{ref: NAME, optional: true}}), "
                           f"not {v!r}", loc)

    def attr(self, v, loc: Location, what: str, want: Callable[[Any], bool], want_text: str) -> Iterator[SpecError]:
        extra = set(v) - {"attr", "of", "default"}
        if extra:
            yield self.err(f"{what}: unknown key {sorted(extra)[0]!r} in an attribute reference "
                           f"(keys: attr, of, default)", loc)
        if not isinstance(v.get("attr"), str) or not v.get("attr"):
            yield self.err(f"{what}: 'attr' must name an attribute, e.g. eps", _sub_loc(v, "attr", loc))
        if "of" not in v:
            yield self.err(f"{what}: an attribute reference needs 'of' (the layer or op name)", loc)
        elif not isinstance(v["of"], str):
            yield self.err(f"{what}: 'of' must be a layer/op name (a string)", _sub_loc(v, "of", loc))
        else:
            yield from self.template(v["of"], _sub_loc(v, "of", loc), what)
        if "default" in v and not want(v["default"]):
            yield self.err(f"{what}: 'default' must be {want_text}", _sub_loc(v, "default", loc))

    def check(self, arg: Arg, v, loc: Location, what: str) -> Iterator[SpecError]:
        k = arg.kind
        if v is None and not arg.required and arg.default is None:
            return
        if k == "int":
            yield from self.int_like(v, loc, what)
        elif k == "ints":
            if not isinstance(v, list) or not v and arg.required:
                yield self.err(f"{what} must be a list of integers, not {v!r}", loc)
                return
            for i, item in enumerate(v):
                yield from self.int_like(item, _sub_loc(v, i, loc), f"{what}[{i}]")
        elif k == "number":
            if _is_attr(v):
                yield from self.attr(v, loc, what, _is_number, "a number")
            elif not _is_number(v):
                yield self.err(f"{what} must be a number or {{attr: NAME, of: LAYER}}, not {v!r}", loc)
        elif k == "bool":
            if _is_attr(v):
                yield from self.attr(v, loc, what, lambda x: isinstance(x, bool), "true or false")
            elif not isinstance(v, bool):
                yield self.err(f"{what} must be true, false or {{attr: NAME, of: LAYER}}, not {v!r}", loc)
        elif k == "operand":
            if _is_number(v):
                return
            if _is_attr(v):
                yield from self.attr(v, loc, what, _is_number, "a number")
            else:
                yield from self.ref(v, loc, what)
        elif k == "ref":
            yield from self.ref(v, loc, what)
        elif k == "refs":
            if not isinstance(v, list):
                yield self.err(f"{what} must be a list of tensor references, not {v!r}", loc)
                return
            for i, item in enumerate(v):
                yield from self.ref(item, _sub_loc(v, i, loc), f"{what}[{i}]")
        elif k == "dtype":
            if not isinstance(v, str):
                yield self.err(f"{what} must be a dtype name, not {v!r}", loc)
                return
            try:
                dtypes.canonical(v)
            except KeyError:
                hint = difflib.get_close_matches(v, dtypes.known(), n=1)
                yield self.err(f"{what}: unknown dtype {v!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                                 f"; known: {', '.join(dtypes.known())}"), loc)
        elif k == "choice":
            if v not in arg.choices:
                yield self.err(f"{what} must be one of {', '.join(map(str, arg.choices))}, not {v!r}", loc)


class Binder:
    """Binds raw argument values for one matched source tensor.

    ``env`` holds captures, each-variables and vars; ``exists(name)`` says whether a
    source tensor exists; ``attrs(node)`` returns a source layer's attributes.
    """

    def __init__(self, env: dict, exists: Callable[[str], bool], attrs: Callable[[str], dict],
                 fail: Callable[[str, Location], Exception]):
        self.env = env
        self.exists = exists
        self.attrs = attrs
        self.fail = fail

    def render(self, text: str, loc: Location) -> str:
        try:
            return Template(text).render(self.env)
        except ExprError as e:
            raise self.fail(str(e), _loc_in(loc, e.column)) from None

    def int_value(self, v, loc: Location, what: str) -> int:
        if _is_int(v):
            return v
        if _is_attr(v):
            return self.attr(v, loc, what, _is_int, "an integer")
        try:
            out = Template(v).value(self.env)
        except ExprError as e:
            raise self.fail(f"{what}: {e}", _loc_in(loc, e.column)) from None
        if not _is_int(out):
            raise self.fail(f"{what}: {v!r} gives {out!r}, not an integer", loc)
        return out

    def ref(self, v, loc: Location, what: str) -> Optional[Ref]:
        optional = False
        if isinstance(v, dict):
            optional = bool(v.get("optional", False))
            loc = _sub_loc(v, "ref", loc)
            v = v["ref"]
        name = self.render(v, loc)
        if not self.exists(name):
            if optional:
                return None
            raise self.fail(f"{what} refers to {name!r}, which is not in the source", loc)
        return Ref(name)

    def attr(self, v, loc: Location, what: str, want: Callable[[Any], bool], want_text: str):
        node = self.render(v["of"], _sub_loc(v, "of", loc))
        attrs = self.attrs(node)
        key = v["attr"]
        if key in attrs and attrs[key] is not None:
            value = attrs[key]
        elif "default" in v:
            return v["default"]
        elif not attrs:
            raise self.fail(f"{what}: the source has no attributes for layer/op {node!r} (it may not exist, or this "
                            f"format stores no attributes: give 'default', or the graph file through the source "
                            f"options)", loc)
        else:
            raise self.fail(f"{what}: layer/op {node!r} has no attribute {key!r} (it has: "
                            f"{', '.join(sorted(map(str, attrs)))}); give 'default'", loc)
        if isinstance(value, str) and want is _is_number:
            try:
                value = float(value)
            except ValueError:
                pass
        if not want(value):
            raise self.fail(f"{what}: attribute {key!r} of {node!r} is {value!r}, not {want_text}", loc)
        return value

    def bind(self, arg: Arg, v, loc: Location, what: str):
        k = arg.kind
        if v is None:
            return None
        if k == "int":
            return self.int_value(v, loc, what)
        if k == "ints":
            return [self.int_value(item, _sub_loc(v, i, loc), f"{what}[{i}]") for i, item in enumerate(v)]
        if k == "number":
            if _is_attr(v):
                return float(self.attr(v, loc, what, _is_number, "a number"))
            return float(v) if isinstance(v, float) else v
        if k == "bool":
            if _is_attr(v):
                return bool(self.attr(v, loc, what, lambda x: isinstance(x, bool), "true or false"))
            return v
        if k == "operand":
            if _is_number(v):
                return v
            if _is_attr(v):
                return float(self.attr(v, loc, what, _is_number, "a number"))
            r = self.ref(v, loc, what)
            if r is None:  # an optional reference to a tensor the source lacks
                if arg.absent is None:
                    raise self.fail(f"{what}: the optional reference {v['ref']!r} names no source tensor and this "
                                    f"operand has no meaning without it", _sub_loc(v, "ref", loc))
                return arg.absent
            return r
        if k == "ref":
            return self.ref(v, loc, what)
        if k == "refs":
            out = [self.ref(item, _sub_loc(v, i, loc), f"{what}[{i}]") for i, item in enumerate(v)]
            return [r for r in out if r is not None]
        if k == "dtype":
            return dtypes.canonical(v)
        return v
