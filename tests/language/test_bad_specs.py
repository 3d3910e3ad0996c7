"""The catalogue of bad specs (tests/language/bad_specs/): each file is one mistake, with its exact message.

Each file's header says at which stage the mistake is caught (validate: no data
read; plan: metadata of a source; apply: the data itself), which tiny source (and
template) to use, and the exact message expected, with line and column.  The
expected messages live in EXPECTED below, written by hand.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import module

HERE = Path(__file__).parent / "bad_specs"


def _basic():
    return {
        "conv1[0]": np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3),
        "conv1[1]": np.arange(4, dtype=np.float32),
        "bn1[0]": np.arange(4, dtype=np.float32) + 1,
        "bn1[1]": np.arange(4, dtype=np.float32) + 2,
        "bn1[2]": np.array([2.0], dtype=np.float32),
    }


SOURCES = {
    "basic": _basic,
    "zero-factor": lambda: {**_basic(), "bn1[2]": np.array([0.0], dtype=np.float32)},
    "experts-gap": lambda: {f"layers.0.experts.{e}.w": np.arange(4, dtype=np.float32) + 10 * e for e in (0, 1, 3)},
    "basic-template": lambda: {"conv.weight": np.zeros((3, 3, 3, 4), np.float32),
                               "conv.bias": np.zeros(4, np.float32)},
}

# file -> (stage, exact message without the "<path>:" prefix)
EXPECTED = {
    "unknown_transform.yaml": (
        "validate", "8:9: rule 1 (from 'conv<i>[0]'): unknown transform 'transpos' (did you mean 'transpose'?)"),
    "placeholder_not_captured.yaml": (
        "validate", "6:34: rule 1 (from 'conv<i>[0]'): 'to': {j} is not captured by 'from', an 'each' variable "
                    "or a var (known names: i)"),
    "undefined_var.yaml": (
        "validate", "8:24: rule 1 (from 'conv<i>[0]'): 'to': {blocks} is not captured by 'from', an 'each' "
                    "variable or a var (did you mean {block_sizes}?)"),
    "argument_wrong_type.yaml": (
        "validate", "8:24: rule 1 (from 'conv<i>[0]'): split parts must be an integer, an expression \"{...}\" or "
                    "{attr: NAME, of: LAYER}, not 'two'"),
    "unknown_argument.yaml": (
        "validate", "8:27: rule 1 (from 'conv<i>[0]'): transform 'split' has no argument 'tkae' (did you mean "
                    "'take'?)"),
    "unknown_key.yaml": (
        "validate", "6:5: rule 1 (from 'conv<i>[0]'): unknown key 'too' (did you mean 'to'?)"),
    "wrong_version.yaml": (
        "validate", "3:10: unsupported spec language version 2; this mapspec reads versions 1 and 1.1"),
    "bad_yaml.yaml": (
        "validate", "7:1: YAML syntax error: while parsing a flow sequence: expected ',' or ']', but got "
                    "'<stream end>'"),
    "text_arithmetic.yaml": (
        "validate", "6:17: rule 1 (from '<layer:word>[0]'): 'to': operator '+' needs integers, but one side is "
                    "text (a <name:word> or <name:path> capture, or a text var)"),
    "constant_without_value.yaml": (
        "validate", "5:5: rule 1 (to 'features.norm0.num_batches_tracked'): a rule without 'from' is a constant "
                    "and needs 'value' (with 'dtype' and 'shape')"),
    "unknown_dtype.yaml": (
        "validate", "7:20: rule 1 (from 'conv<i>[0]'): cast dtype: unknown dtype 'float23' (did you mean "
                    "'float32'?)"),
    "verify_user_factory.yaml": (
        "validate", "9:32: verify.target.model: 'check_gpt2:HF' names code, not a registered model factory (a spec "
                    "names only factories registered in mapspec.models.registry; pass your own with --target-model "
                    "on the command line)"),
    "verify_seeded_writer.yaml": (
        "validate", "9:32: verify.source.model: 'mapspec.models.seeded:write_caffemodel' names code, not a "
                    "registered model factory (a spec names only factories registered in mapspec.models.registry; "
                    "pass your own with --source-model on the command line)"),
    "verify_undeclared_param.yaml": (
        "validate", "9:70: verify.target.params: densenet121 takes no parameter 'prototxt' (its parameters: "
                    "num_classes)"),
    "verify_param_wrong_type.yaml": (
        "validate", "8:67: verify.source.params.normalize: mobilefacenet parameter normalize must be true or false, "
                    "not 'yes please'\n{spec}:9:66: verify.target.params.num_classes: densenet121 parameter "
                    "num_classes must be an integer (1..32768), not 1.5"),
    "verify_unknown_runner.yaml": (
        "validate", "8:17: verify.source.run: unknown runner 'tensorflow'; known: caffe, mxnet, torch, keras, "
                    "transformers, onnx, model"),
    "rule_matches_nothing.yaml": (
        "plan", "6:12: rule 1 (from 'cnv<i>[<k>]'): matches no source tensor; closest source names: 'conv1[0]', "
                "'conv1[1]'"),
    "two_rules_one_target.yaml": (
        "plan", "9:10: rule 2 (from 'conv1[1]'): target 'weight' is produced twice: by rule 1 (from 'conv1[0]') "
                "from 'conv1[0]' (line 6) and by rule 2 (from 'conv1[1]') from 'conv1[1]'"),
    "template_shape_mismatch.yaml": (
        "plan", "8:10: rule 1 (from 'conv1[0]'): tensor 'conv1[0]': produces shape 4x3x3x3 but the template "
                "{template} expects 3x3x3x4 for 'conv.weight'; same dimensions in another order: a transpose may "
                "be missing"),
    "reshape_count_mismatch.yaml": (
        "plan", "8:14: rule 1 (from 'conv1[0]'): tensor 'conv1[0]': reshape(shape=[4,20]): cannot reshape 108 "
                "elements (shape (4, 3, 3, 3)) into (4, 20) (80 elements) (input 4x3x3x3 float32)"),
    "reference_missing.yaml": (
        "plan", "9:15: rule 1 (from 'bn<i>[0]'): tensor 'bn1[0]': div by refers to 'bn1[3]', which is not in "
                "the source"),
    "metadata_bad_expression.yaml": (
        "validate", "7:34: metadata: expected a number, a name or '(', found 'end of expression'"),
    "metadata_undefined_var.yaml": (
        "plan", "8:48: target metadata: undefined name 'n_layers'"),
    "unused_source.yaml": (
        "plan", "{spec}: 3 source tensors are not matched by any rule, not referenced and not ignored (add rules, "
                "or list them under 'ignore:'):\n  bn1[0] (4 float32)\n  bn1[1] (4 float32)\n  bn1[2] (1 float32)"),
    "ambiguous_match.yaml": (
        "plan", "6:12: rule 1 (from '<a:path><b:path>'): 'conv1[0]' matches in more than one way: a='c', "
                "b='onv1[0]' or a='co', b='nv1[0]'; make the pattern stricter (e.g. <name:word> instead of "
                "<name:path>, or more literal text between placeholders)"),
    "division_by_zero_factor.yaml": (
        "apply", "9:9: rule 1 (from 'bn1[0]'): tensor 'bn1[0]': div(by=bn1[2]): division by zero: the divisor "
                 "has 1 zero value; add 'zero: 0' to div to give 0 there (Caffe's convention for a zero "
                 "BatchNorm factor), or fix the source"),
    "transpose_not_a_permutation.yaml": (
        "validate", "7:25: rule 1 (from 'conv1[0]'): transpose axes [1, 1, 2, 3] are not a permutation of 0..3"),
    "reshape_chain_mismatch.yaml": (
        "validate", "7:55: rule 1 (from 'conv1[0]'): reshape to [9, 9]: an earlier reshape in this rule gives 108 "
                    "elements"),
    "each_too_large.yaml": (
        "validate", "7:11: rule 1 (from 'conv1[0]'): 'each' expands to 4611686018427387904 outputs, more than "
                    "100000"),
    "bad_optional_part.yaml": (
        "validate", "5:12: rule 1 (from '<?>h.<i>.weight'): 'from': optional part <?> at column 1 needs a text "
                    "without '|' (<?transformer.>)"),
    "ignored_and_matched.yaml": (
        "plan", "{spec}: 3 source tensors are listed under 'ignore:' but also matched by a rule (the rule takes "
                "them; narrow the rule or the ignore pattern, or relax ignored-and-matched):\n"
                "  bn1[0] (by rule 1 (from '<l:path>[<k>]'))\n  bn1[1] (by rule 1 (from '<l:path>[<k>]'))\n"
                "  bn1[2] (by rule 1 (from '<l:path>[<k>]'))"),
    "rows_not_used.yaml": (
        "plan", "{spec}: rows 2..3 of 'conv1[0]' along axis 0 are not used by any rule (its 4 rows must all be "
                "taken; relax unused-elements if dropping them is intended)"),
    "rows_used_twice.yaml": (
        "plan", "{spec}: row 2 of 'conv1[0]' along axis 0 is used by more than one output ('conv.a', 'conv.b'); "
                "relax overlapping-elements if that is intended"),
    "stack_gap.yaml": (
        "plan", "6:12: rule 1 (from 'layers.<i>.experts.<e>.w'): stack over 'e' for i=0: the matches must number "
                "e=0..N-1, but e=2 is missing"),
}


def _header(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*(\w+):\s*(.*)", line)
        if not m:
            break
        out[m.group(1)] = m.group(2).strip()
    return out


def test_every_catalogue_file_has_an_expectation():
    assert sorted(p.name for p in HERE.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec(name, tmp_path):
    path = HERE / name
    header = _header(path)
    stage, expected = EXPECTED[name]
    assert header["stage"] == stage
    argv = []
    template = None
    if "template" in header:
        template = tmp_path / "template.npz"
        module("npz").save(template, SOURCES[header["template"]]())
    if stage == "validate":
        argv = ["validate", str(path)]
    else:
        source = tmp_path / "source.npz"
        module("npz").save(source, SOURCES[header["source"]]())
        argv = [stage, str(path), "--source", str(source)]
        if template:
            argv += ["--template", str(template)]
        if stage == "apply":
            argv += ["--output", str(tmp_path / "out.npz")]
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(argv, stdout=out, stderr=err)
    assert code == 1
    expected = expected.replace("{spec}", str(path)).replace("{template}", str(template))
    if not expected.startswith(str(path)):
        expected = f"{path}:{expected}"
    lines = err.getvalue()
    assert "Traceback" not in lines
    if stage == "validate":
        first = lines.split(f"\n{path}: ")[0]
        assert first == expected
    elif stage == "plan":
        assert lines.startswith(expected), lines
    else:
        assert lines == f"mapspec: error: {expected}\n"
        assert list(tmp_path.iterdir()) == [tmp_path / "source.npz"], "no output, no temporary file left behind"
