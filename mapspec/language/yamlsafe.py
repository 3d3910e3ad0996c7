"""Safe YAML loading that remembers where every value came from.

* PyYAML's ``SafeLoader``: plain data only (no Python tags, no object construction).
* Every mapping becomes a :class:`LocDict`, every sequence a :class:`LocList`; both
  remember the line/column of each key and value, so that any error can point to
  ``file:line:col``.
* Duplicate keys are an error (PyYAML would silently keep the last one).
* Anchors/aliases are allowed but bounded: the document's size with every alias
  expanded may not exceed ``MAX_NODES`` (the "billion laughs" attack expands to
  billions), and recursive aliases are refused.
* Nesting is bounded (``MAX_DEPTH`` levels, aliases expanded), so that nothing that
  walks the document recursively afterwards can exhaust the Python stack.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import Location, SpecError

MAX_NODES = 200_000
MAX_BYTES = 16 * 1024 * 1024
# A spec is a few levels deep; everything downstream (schema validation, checks) walks the
# document recursively, so a deeper one is refused here, with aliases expanded.
MAX_DEPTH = 64
MAX_INT_DIGITS = 100


class LocDict(dict):
    """A dict that knows the location of itself, of each key and of each value."""

    loc: Location
    key_locs: dict
    value_locs: dict

    def loc_of(self, key) -> Location:
        return self.value_locs.get(key, self.loc)

    def key_loc(self, key) -> Location:
        return self.key_locs.get(key, self.loc)


class LocList(list):
    """A list that knows the location of itself and of each item."""

    loc: Location
    item_locs: list

    def loc_of(self, index: int) -> Location:
        if 0 <= index < len(self.item_locs):
            return self.item_locs[index]
        return self.loc


def loc_of(container, key, default: Location) -> Location:
    """Location of ``container[key]`` if the container knows it."""
    if isinstance(container, (LocDict, LocList)):
        return container.loc_of(key)
    return default


def _mark(filename: str, node: yaml.Node) -> Location:
    """1-based position of a node; for a quoted scalar, of its first character inside the quotes."""
    m = node.start_mark
    quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
    return Location(filename, m.line + 1, m.column + 1 + (1 if quoted else 0))


class _Loader(yaml.SafeLoader):
    filename = "<spec>"


def _construct_mapping(loader: _Loader, node: yaml.MappingNode):
    result = LocDict()
    result.loc = _mark(loader.filename, node)
    result.key_locs, result.value_locs = {}, {}
    loader.flatten_mapping(node)  # YAML merge keys (<<)
    yield result
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise SpecError("a mapping key must be a plain scalar", _mark(loader.filename, key_node)) from None
        if key in result:
            first = result.key_locs[key]
            raise SpecError(f"duplicate key {key!r} (first at line {first.line})", _mark(loader.filename, key_node))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_locs[key] = _mark(loader.filename, key_node)
        result.value_locs[key] = _mark(loader.filename, value_node)


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode):
    result = LocList()
    result.loc = _mark(loader.filename, node)
    result.item_locs = []
    yield result
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_locs.append(_mark(loader.filename, child))


def _construct_int(loader, node: yaml.ScalarNode) -> int:
    """A YAML integer of at most ``MAX_INT_DIGITS`` digits (Python refuses to read 4,300 digits with a
    traceback, and no spec needs more than 20)."""
    digits = sum(c.isdigit() for c in str(node.value))
    if digits > MAX_INT_DIGITS:
        raise SpecError(f"an integer of {digits} digits; mapspec reads integers of at most {MAX_INT_DIGITS} digits",
                        _mark(getattr(loader, "filename", "<value>"), node))
    return yaml.SafeLoader.construct_yaml_int(loader, node)


class _ValueLoader(yaml.SafeLoader):
    """PyYAML's safe loader with integers bounded as in a spec (for command-line values)."""

    filename = "<value>"


_ValueLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_value(text: str) -> Any:
    """One YAML value from a command line (plain dicts and lists; integers bounded: a SpecError)."""
    loader = _ValueLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [c for pair in node.value for c in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node, filename: str) -> int:
    """Number of nodes with every alias expanded; refuses recursion and oversize documents."""
    memo: dict[int, int] = {}
    height: dict[int, int] = {}
    on_stack: set[int] = set()
    # Iterative post-order walk: deep nesting cannot exhaust the Python stack.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_stack.discard(key)
            kids = _children(node)
            total = 1 + sum(memo[id(c)] for c in kids)
            if total > MAX_NODES:
                raise SpecError(f"the YAML document expands to more than {MAX_NODES} nodes "
                                f"(anchors and aliases multiply it); refusing to load it",
                                _mark(filename, node))
            height[key] = 1 + max((height[id(c)] for c in kids), default=0)
            if height[key] > MAX_DEPTH:
                raise SpecError(f"the YAML document is nested more than {MAX_DEPTH} levels deep; a spec needs "
                                f"a handful", _mark(filename, node))
            memo[key] = total
            continue
        if key in memo:
            continue
        if key in on_stack:
            raise SpecError("recursive YAML alias (a node that contains itself)", _mark(filename, node))
        on_stack.add(key)
        stack.append((node, True))
        for c in _children(node):
            if id(c) in on_stack:
                raise SpecError("recursive YAML alias (a node that contains itself)", _mark(filename, c))
            if id(c) not in memo:
                stack.append((c, False))
    return memo[id(root)]


def load_text(text: str, filename: str = "<spec>") -> Any:
    """Parse one YAML document safely into LocDict/LocList/scalars."""
    if len(text) > MAX_BYTES:
        raise SpecError(f"spec is {len(text)} bytes; the limit is {MAX_BYTES}", Location(filename))
    try:
        # The reader checks for non-printable characters on construction already.
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character[:1] or "\0")
        raise SpecError(f"YAML syntax error: control character {code:#04x} is not allowed in YAML text "
                        f"(a binary file, or a stray byte)", Location(filename, line, col)) from None
    loader.filename = filename
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the spec file is empty", Location(filename, 1, 1))
        _expanded_size(node, filename)
        return loader.construct_document(node)
    except SpecError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Location(filename, mark.line + 1, mark.column + 1) if mark else Location(filename)
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            problem = f"{e.context}: {e.problem}"
        raise SpecError(f"YAML syntax error: {problem}", loc) from None
    except yaml.YAMLError as e:
        raise SpecError(f"YAML error: {e}", Location(filename)) from None
    except RecursionError:
        raise SpecError("the YAML document is nested too deeply", Location(filename)) from None
    finally:
        loader.dispose()


def load_file(path) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SpecError(f"cannot read spec: {e.strerror}", Location(str(path))) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec is not UTF-8 text (byte {e.start})", Location(str(path))) from None
    return load_text(text, str(path))
