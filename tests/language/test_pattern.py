import random
import re
import time

import pytest

from mapspec.language.pattern import AmbiguousMatch, Pattern, PatternSyntaxError


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


# -- spec language 1.1: optional parts and alternatives ---------------------------------

def test_optional_part_matches_with_or_without_it():
    p = Pattern("<?transformer.>h.<i>.attn.c_attn.weight")
    assert p.match("transformer.h.3.attn.c_attn.weight") == {"i": 3}
    assert p.match("h.3.attn.c_attn.weight") == {"i": 3}
    assert p.match("model.h.3.attn.c_attn.weight") is None


def test_alternatives():
    p = Pattern("<model.|transformer.|>layers.<i>.w")
    assert p.match("model.layers.0.w") == {"i": 0}
    assert p.match("transformer.layers.1.w") == {"i": 1}
    assert p.match("layers.2.w") == {"i": 2}
    assert p.match("x.layers.2.w") is None


def test_optional_part_that_makes_a_name_ambiguous_is_reported():
    with pytest.raises(AmbiguousMatch) as e:
        Pattern("<?x><p:path>").match("xy")
    assert {r["p"] for r in e.value.readings} == {"y", "xy"}


@pytest.mark.parametrize("text,col", [("a<?>b", 1), ("a<x|x>", 1), ("a<?x|y>", 1), ("a<b c>", 1)])
def test_bad_optional_parts_name_the_column(text, col):
    with pytest.raises(PatternSyntaxError) as e:
        Pattern(text)
    assert e.value.column == col


# -- matching cost: no backtracking ------------------------------------------------------

def _brute(tokens, name):
    """Every reading by plain enumeration (the reference for the bit-mask matcher)."""
    out = []

    def go(i, pos, caps):
        if i == len(tokens):
            if pos == len(name):
                out.append(dict(caps))
            return
        kind, val = tokens[i]
        if kind == "lit":
            if name.startswith(val, pos):
                go(i + 1, pos + len(val), caps)
        elif kind == "alt":
            for o in val:
                if name.startswith(o, pos):
                    go(i + 1, pos + len(o), caps)
        else:
            var, k = val
            for end in range(pos + 1, len(name) + 1):
                piece = name[pos:end]
                if not re.fullmatch({"int": r"0|[1-9][0-9]*", "word": r"[A-Za-z0-9_]+", "path": r".+"}[k],
                                    piece, re.DOTALL):
                    continue
                if var in caps and caps[var] != piece:
                    continue
                go(i + 1, end, {**caps, var: piece})

    go(0, 0, {})
    return out


def test_matcher_agrees_with_enumeration_on_random_patterns():
    rng = random.Random(0)
    for _ in range(3000):
        tokens, text = [], ""
        for _ in range(rng.randint(1, 5)):
            r = rng.random()
            if r < 0.35:
                lit = "".join(rng.choice("a1.") for _ in range(rng.randint(1, 2)))
                if tokens and tokens[-1][0] == "lit":
                    tokens[-1] = ("lit", tokens[-1][1] + lit)
                else:
                    tokens.append(("lit", lit))
                text += lit
            elif r < 0.5:
                opts = tuple(dict.fromkeys(rng.choice(["a", "1", "a.", ""]) for _ in range(2)))
                if len(opts) < 2:
                    continue
                tokens.append(("alt", opts))
                text += "<" + "|".join(opts) + ">"
            else:
                var, kind = rng.choice("xyz"), rng.choice(["int", "word", "path"])
                prev = [t for t in tokens if t[0] == "ph" and t[1][0] == var]
                if prev:
                    kind = prev[0][1][1]
                tokens.append(("ph", (var, kind)))
                text += f"<{var}:{kind}>"
        if not tokens:
            continue
        p = Pattern(text)
        for _ in range(5):
            name = "".join(rng.choice("a1.0_") for _ in range(rng.randint(1, 7)))
            want = _brute(tokens, name)
            if not want:
                assert p.match(name) is None, (text, name)
            elif len(want) == 1:
                got = p.match(name)
                assert {k: str(v) for k, v in got.items()} == want[0], (text, name)
            else:
                with pytest.raises(AmbiguousMatch) as e:
                    p.match(name)
                got = [{k: str(v) for k, v in r.items()} for r in e.value.readings]
                assert got[0] in want and got[1] in want, (text, name)
                assert got[0] != got[1] or len({tuple(sorted(w.items())) for w in want}) < len(want), (text, name)


def test_many_path_placeholders_against_long_names_take_linear_time():
    # A backtracking regex needs minutes here (every split of 200 characters in four or five parts).
    p = Pattern("<a:path><b:path><c:path><d:path>x")
    q = Pattern("<a:path>.<b:path>.<c:path>.<d:path>.x")
    fails = [("ab/" * 67)[:199] + "yx"[i % 2] for i in range(5000)]  # odd ones end in x but are not split by dots
    dotted = [("a." * 100)[:198] + "x" for _ in range(500)]  # thousands of readings: ambiguous
    t0 = time.perf_counter()
    assert sum(p.match(n) is not None for n in fails[::2]) == 0
    for n in fails[1::2]:
        with pytest.raises(AmbiguousMatch):
            p.match(n)
    assert all(q.match(n) is None for n in fails)
    for n in dotted:
        with pytest.raises(AmbiguousMatch):
            q.match(n)
    assert q.match("a.b.c.d.x") == {"a": "a", "b": "b", "c": "c", "d": "d"}
    square = Pattern("<a:path><b:path><a:path><b:path>")  # repeated placeholders: still polynomial
    for n in fails[:50]:
        assert square.match(n) is None
    assert square.match("abab") == {"a": "a", "b": "b"}
    with pytest.raises(AmbiguousMatch):
        square.match("a" * 200)
    assert time.perf_counter() - t0 < 60


def test_named_alternatives_are_captured():
    p = Pattern("layers.<i>.<m:attention.dense|mlp.fc|ln>.<p:word>")
    assert p.match("layers.2.mlp.fc.bias") == {"i": 2, "m": "mlp.fc", "p": "bias"}
    assert p.match("layers.2.mlp.fc2.bias") is None
    assert Pattern("<x:a|>b").match("b") == {"x": ""}
    with pytest.raises(PatternSyntaxError, match="reuse"):
        Pattern("<m:a|b>.<m:c|d>")
