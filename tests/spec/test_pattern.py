import pytest

from mapspec.spec.pattern import AmbiguousMatch, Pattern, PatternSyntaxError


def test_integer_captures_are_ints():
    p = Pattern("conv<i>_<j>/x1/bn[0]")
    assert p.match("conv2_3/x1/bn[0]") == {"i": 2, "j": 3}
    assert p.match("conv12_10/x1/bn[0]") == {"i": 12, "j": 10}


def test_match_is_anchored_on_the_whole_name():
    p = Pattern("conv<i>[0]")
    assert p.match("conv1[0]") == {"i": 1}
    assert p.match("xconv1[0]") is None
    assert p.match("conv1[0]x") is None
    assert p.match("conv1[1]") is None


def test_literal_dot_is_not_a_wildcard():
    p = Pattern("features.conv<i>.weight")
    assert p.match("features.conv3.weight") == {"i": 3}
    assert p.match("featuresXconv3.weight") is None
    assert p.match("features.conv3Xweight") is None


def test_brackets_and_regex_metacharacters_are_literal():
    p = Pattern("a+b(c)[<k>]*?")
    assert p.match("a+b(c)[7]*?") == {"k": 7}
    assert p.match("aab(c)[7]*?") is None


def test_integers_have_no_leading_zeros():
    p = Pattern("conv<i>")
    assert p.match("conv0") == {"i": 0}
    assert p.match("conv01") is None


def test_word_and_path_kinds():
    assert Pattern("<l:word>_weight").match("conv_1_weight") == {"l": "conv_1"}
    assert Pattern("<l:word>/bn").match("a/b/bn") is None
    assert Pattern("<l:path>/bn[2]").match("conv2_1/x1/bn[2]") == {"l": "conv2_1/x1"}


def test_repeated_placeholder_must_capture_the_same_text():
    p = Pattern("<l:word>/<l:word>_bn")
    assert p.match("conv1/conv1_bn") == {"l": "conv1"}
    assert p.match("conv1/conv2_bn") is None


def test_ambiguous_match_is_reported_not_guessed():
    p = Pattern("conv<i><j>")
    assert p.match("conv12") == {"i": 1, "j": 2}
    with pytest.raises(AmbiguousMatch) as e:
        p.match("conv123")
    assert "more than one way" in str(e.value)
    with pytest.raises(AmbiguousMatch):
        Pattern("<a:path>/<b:path>").match("x/y/z")


def test_unambiguous_multi_placeholder_patterns():
    assert Pattern("<a:path>_<b>").match("conv_1_2") == {"a": "conv_1", "b": 2}
    assert Pattern("<a:word>.<b:word>").match("x.y") == {"a": "x", "b": "y"}


@pytest.mark.parametrize("text,col", [("conv<i:float>", 4), ("conv<", 4), ("a>b", 1), ("", 0)])
def test_syntax_errors_name_the_column(text, col):
    with pytest.raises(PatternSyntaxError) as e:
        Pattern(text)
    assert e.value.column == col


def test_placeholder_kind_conflict():
    with pytest.raises(PatternSyntaxError, match="both int and word"):
        Pattern("<i>_<i:word>")
