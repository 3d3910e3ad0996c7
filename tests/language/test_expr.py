import pytest

from mapspec.language.expr import ExprError, Template, check_types, evaluate, parse


@pytest.mark.parametrize("text,env,value", [
    ("1 + 2 * 3", {}, 7),
    ("(1 + 2) * 3", {}, 9),
    ("i - 1", {"i": 2}, 1),
    ("-i + 10 // 3", {"i": 2}, 1),
    ("17 % 5", {}, 2),
    ("-7 // 2", {}, -4),
    ("sizes[i]", {"sizes": {2: 6, 3: 12}, "i": 3}, 12),
    ("sizes['a']", {"sizes": {"a": 5}}, 5),
    ("sizes[i]", {"sizes": {"2": 6}, "i": 2}, 6),
    ("lst[i - 1]", {"lst": [10, 20, 30], "i": 3}, 30),
    ("m[i][j]", {"m": [[1, 2], [3, 4]], "i": 1, "j": 0}, 3),
])
def test_evaluate(text, env, value):
    assert evaluate(parse(text), env) == value


@pytest.mark.parametrize("text,env,message", [
    ("1 // 0", {}, "division by zero"),
    ("x", {}, "undefined name 'x'"),
    ("s + 1", {"s": "abc"}, "arithmetic needs integers"),
    ("d[5]", {"d": {1: 2}}, "key 5 not in mapping"),
    ("l[3]", {"l": [1]}, "index 3 out of range"),
])
def test_evaluation_errors(text, env, message):
    with pytest.raises(ExprError, match=message):
        evaluate(parse(text), env)


@pytest.mark.parametrize("text", ["__import__('os')", "a.b", "a(1)", "1 ** 2", "lambda: 1", "1 if 1 else 2", ""])
def test_not_python(text):
    """Only the small grammar parses: no calls, attributes, power, lambdas."""
    with pytest.raises(ExprError):
        parse(text)


def test_static_type_check_rejects_arithmetic_on_text():
    with pytest.raises(ExprError, match="needs integers"):
        check_types(parse("l + 1"), {"l": "str"})
    check_types(parse("i + 1"), {"i": "int"})


def test_template_render_and_escapes():
    t = Template("features.denseblock{i-1}.denselayer{j}.norm1")
    assert t.render({"i": 2, "j": 3}) == "features.denseblock1.denselayer3.norm1"
    assert Template("a{{b}}c").render({}) == "a{b}c"
    assert [n for n, _ in t.names()] == ["i", "j"]
    assert Template("{c*2}").value({"c": 4}) == 8


def test_template_error_columns():
    with pytest.raises(ExprError) as e:
        Template("abc{1 +}")
    assert e.value.column == 7
    with pytest.raises(ExprError, match="unclosed"):
        Template("abc{i")
    with pytest.raises(ExprError, match="unmatched"):
        Template("abc}")
