import pytest

from mapspec.errors import SpecError
from mapspec.language.yamlsafe import LocDict, load_text


def test_locations_are_recorded():
    doc = load_text("a: 1\nrules:\n  - from: 'x'\n    to: y\n", "s.yaml")
    assert isinstance(doc, LocDict)
    assert doc.loc_of("a").line == 1
    rule = doc["rules"][0]
    assert (rule.loc_of("from").line, rule.loc_of("from").col) == (3, 12)  # inside the quotes
    assert (rule.loc_of("to").line, rule.loc_of("to").col) == (4, 9)


def test_duplicate_keys_are_an_error():
    with pytest.raises(SpecError, match="duplicate key 'a' \\(first at line 1\\)") as e:
        load_text("a: 1\nb: 2\na: 3\n", "s.yaml")
    assert (e.value.line, e.value.col) == (3, 1)


def test_python_tags_are_refused():
    with pytest.raises(SpecError, match="YAML syntax error") as e:
        load_text("a: !!python/object/apply:os.system ['touch /tmp/pwned']\n", "s.yaml")
    assert e.value.line == 1


def test_billion_laughs_is_bounded():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(SpecError, match="expands to more than"):
        load_text("\n".join(lines) + "\n", "laughs.yaml")


def test_small_aliases_are_fine():
    doc = load_text("t: &t [{transpose: [1, 0]}]\nu: *t\n", "s.yaml")
    assert doc["u"] == [{"transpose": [1, 0]}]


def test_recursive_alias_is_refused():
    with pytest.raises(SpecError, match="recursive"):
        load_text("a: &a [1, *a]\n", "s.yaml")


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(SpecError):
        load_text("a: " + "[" * 20000 + "]" * 20000 + "\n", "s.yaml")


def test_syntax_error_location():
    with pytest.raises(SpecError) as e:
        load_text("a: 1\nb: [1, 2\nc: 3\n", "s.yaml")
    assert str(e.value).startswith("s.yaml:")
    assert e.value.line >= 2


def test_empty_document():
    with pytest.raises(SpecError, match="empty"):
        load_text("# nothing\n", "s.yaml")
