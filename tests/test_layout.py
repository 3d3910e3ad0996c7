"""Tests mirror the modules: ``mapspec/a/b.py`` is tested in ``tests/a/test_b.py`` (or ``tests/a/test_b_*.py``),
a package's ``__init__.py`` with code of its own in ``tests/a/test_a.py``.

The modules without a test file at their mirrored path are listed in ``ALLOWED``, each with where it is
tested instead; the list may only shrink: a new module needs its test file, and a module that gets one
must leave the list.  ``python tests/test_layout.py`` prints the modules without one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mapspec"
TESTS = ROOT / "tests"

DRAFT = "draft internals, end to end: tests/draft/"
RUNNER = "every runner runs a tiny model: tests/verify/runners/test_contract.py"
FACTORY = "a model factory: tests/models/test_registry.py, tests/specs/"

ALLOWED: dict[str, str] = {
    "mapspec/__init__.py": "the public API (plan, apply, load_spec): tests/engine/, tests/language/test_load.py",
    "mapspec/cli/foldbn.py": "the fold-bn pipeline: tests/specs/test_caffe_specs.py (fold-bn command)",
    "mapspec/cli/show.py": "table printing: tests/cli/test_checkpoints.py (the inspect table)",
    "mapspec/cli/signals.py": "signal handling: tests/test_hostile_publish.py, tests/test_hostile_output.py",
    "mapspec/cli/tools.py": "fold-bn/example/graph commands: tests/specs/test_caffe_specs.py, tests/test_example.py",
    "mapspec/cli/verify.py": "the verify command: tests/verify/test_verify.py",
    "mapspec/engine/tokenizer.py": "the plan's tokenizer hook (no tokenizer files, --no-tokenizer, --tokenizer-pre, "
                                   "vocab_size): tests/formats/test_gguf_vocab.py, tests/specs/test_llama_gguf.py",
    "mapspec/draft/graph.py": DRAFT,
    "mapspec/draft/match.py": DRAFT,
    "mapspec/draft/names.py": DRAFT,
    "mapspec/draft/settle.py": DRAFT,
    "mapspec/draft/todo.py": DRAFT,
    "mapspec/draft/units.py": DRAFT,
    "mapspec/engine/steps.py": "plan data types: tests/engine/test_plan.py",
    "mapspec/formats/__init__.py": "tests/formats/test_output_format.py, test_contract.py (detect, open, create)",
    "mapspec/formats/keras_hdf5.py": "the keras format's HDF5 layer: tests/formats/test_keras.py",
    "mapspec/formats/keras_weights.py": "the keras format's reader and writer: tests/formats/test_keras.py",
    "mapspec/formats/registry.py": "every entry: tests/formats/test_contract.py, tests/test_registry.py",
    "mapspec/formats/shard_output.py": "publishing: tests/formats/test_sharded.py, tests/test_hostile_publish.py",
    "mapspec/formats/torch_load.py":
        "the torch reader's pickle walk: tests/formats/test_torch.py, tests/test_hostile.py",
    "mapspec/formats/torch_zip.py": "the torch zip layout: tests/formats/test_torch.py, tests/test_streaming.py",
    "mapspec/frameworks/caffe/foldbn.py": "fold-bn's chains: tests/specs/test_caffe_specs.py (fold-bn command)",
    "mapspec/frameworks/caffe/ops/__init__.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/caffe/ops/activation.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/caffe/ops/common.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/caffe/ops/conv.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/caffe/ops/dense_block.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/caffe/ops/norm.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/caffe/ops/pool.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/caffe/ops/tensor.py": "Caffe layer kernels: tests/frameworks/caffe/test_ops.py",
    "mapspec/frameworks/convert/command.py": "graph conversion: tests/frameworks/convert/",
    "mapspec/frameworks/convert/common.py": "graph conversion: tests/frameworks/convert/",
    "mapspec/frameworks/convert/spec.py": "graph conversion: tests/frameworks/convert/",
    "mapspec/frameworks/executor_base.py":
        "tests/frameworks/caffe/test_executor.py, tests/frameworks/mxnet/test_executor.py",
    "mapspec/frameworks/gguf/ggml.py": "ggml types and limits: tests/frameworks/gguf/test_quant.py",
    "mapspec/frameworks/mxnet/attrs.py": "symbol attributes: tests/frameworks/mxnet/test_graph.py",
    "mapspec/frameworks/mxnet/exec_ops/__init__.py": "MXNet op kernels: tests/frameworks/mxnet/test_executor.py",
    "mapspec/frameworks/mxnet/exec_ops/nn.py": "MXNet op kernels: tests/frameworks/mxnet/test_executor.py",
    "mapspec/frameworks/mxnet/exec_ops/tensor.py": "MXNet op kernels: tests/frameworks/mxnet/test_executor.py",
    "mapspec/frameworks/mxnet/ops.py": "op shape rules: tests/frameworks/mxnet/test_graph.py",
    "mapspec/invert/order.py": "reverse rule order: tests/invert/test_build.py (every shipped spec)",
    "mapspec/language/args.py": "argument binding: tests/language/test_bad_specs.py, tests/transforms/",
    "mapspec/language/inputstep.py": "verify input steps: tests/verify/test_inputs.py, tests/verify/test_preprocess.py",
    "mapspec/language/model.py": "spec data types: tests/language/",
    "mapspec/language/rules.py": "the rules: section: tests/language/test_bad_specs.py, tests/engine/",
    "mapspec/language/runners.py": RUNNER,
    "mapspec/language/verifycheck.py": "verify: checks: tests/language/test_bad_specs.py, tests/verify/test_runners.py",
    "mapspec/models/caffenet.py": FACTORY,
    "mapspec/models/densenet.py": FACTORY,
    "mapspec/models/densenet_caffe.py": FACTORY,
    "mapspec/models/iresnet.py": FACTORY,
    "mapspec/models/llm.py": FACTORY,
    "mapspec/models/mobilefacenet.py": FACTORY,
    "mapspec/models/seeded.py": FACTORY,
    "mapspec/transforms/inverse.py": "every declared inverse: tests/transforms/test_contract.py, tests/invert/",
    "mapspec/verify/core.py": "verify(): tests/verify/test_verify.py",
    "mapspec/verify/runners/__init__.py": RUNNER,
    "mapspec/verify/runners/base.py": RUNNER,
    "mapspec/verify/runners/caffe.py": RUNNER,
    "mapspec/verify/runners/choice.py": "picking a side's runner: tests/verify/test_choice.py",
    "mapspec/verify/runners/executor.py": RUNNER,
    "mapspec/verify/runners/keras.py": RUNNER,
    "mapspec/verify/runners/model.py": RUNNER,
    "mapspec/verify/runners/mxnet.py": RUNNER,
    "mapspec/verify/runners/onnx.py": RUNNER,
    "mapspec/verify/runners/torch.py": RUNNER,
    "mapspec/verify/runners/transformers.py": RUNNER,
}


def has_code(path: Path) -> bool:
    """Whether a module defines anything (an ``__init__`` of imports, ``__all__`` and a docstring does not)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            continue
        return True
    return False


def mirrored(module: Path) -> tuple:
    """The test folder and the test file stem(s) that mirror ``module`` (a path under mapspec/)."""
    rel = module.relative_to(PACKAGE)
    if rel.name == "__init__.py":
        folder = TESTS.joinpath(*rel.parts[:-1])
        stem = rel.parts[-2] if len(rel.parts) > 1 else "mapspec"
    else:
        folder = TESTS.joinpath(*rel.parts[:-1])
        stem = rel.stem
    return folder, {f"test_{stem}", f"test_{stem.strip('_')}"}


def untested() -> list:
    out = []
    for module in sorted(PACKAGE.rglob("*.py")):
        if not has_code(module):
            continue
        folder, stems = mirrored(module)
        files = [p.stem for p in folder.glob("test_*.py")] if folder.is_dir() else []
        if not any(f in stems or any(f.startswith(s + "_") for s in stems) for f in files):
            out.append(module.relative_to(ROOT).as_posix())
    return out


def test_every_module_has_a_mirrored_test_file_or_a_reason():
    missing = untested()
    new = [m for m in missing if m not in ALLOWED]
    assert not new, ("these modules have no test file at their mirrored path (tests/<package>/test_<module>.py): "
                     f"add one, or list the module in ALLOWED with where it is tested: {new}")
    stale = sorted(set(ALLOWED) - set(missing))
    assert not stale, f"these modules have a mirrored test file (or are gone) now: remove them from ALLOWED: {stale}"


def test_allowed_entries_give_a_reason():
    assert all(isinstance(why, str) and why.strip() for why in ALLOWED.values())


if __name__ == "__main__":
    for m in untested():
        print(m, "" if m in ALLOWED else "(not allowed)")
