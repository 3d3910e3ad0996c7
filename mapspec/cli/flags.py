"""The command line's parser, its one flag vocabulary (a flag means the same in every command that has
it) and argument types, and the :class:`Command` record of the command table."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import MapspecError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would sys.exit(2) from deep inside; we raise instead
        raise UsageError(f"{self.prog}: {message}\n(see {self.prog} --help)")


class _Deprecated(argparse.Action):
    """An old spelling that still works: stores like ``new`` and leaves a note for stderr."""

    def __init__(self, option_strings, dest, new: str = "", append: bool = False, **kw):
        super().__init__(option_strings, dest, **kw)
        self.new, self.append = new, append

    def __call__(self, parser, namespace, values, option_string=None):
        if self.append:
            values = (getattr(namespace, self.dest, None) or []) + [values]
        setattr(namespace, self.dest, values)
        notes = getattr(namespace, "deprecations", None) or []
        notes.append(f"mapspec: note: {parser.prog} {option_string} is deprecated; use {self.new}")
        namespace.deprecations = notes


def _check_flag_options(flag: str, fmt: Optional[str], options: dict, kind: str) -> None:
    """Options given on the command line that the format does not take: an error naming the flag."""
    from ..formats import canonical, check_options, module

    if not options or not fmt:
        return
    name = canonical(fmt)
    try:
        check_options(name, module(name), options, kind)
    except MapspecError as e:
        raise UsageError(f"{flag}: {e}") from None


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number >= 1, not {text!r}")
    return n


def _size_arg(text: str):
    """--max-output-size: a size as for max_shard_size (5GB, 512MiB, bytes), or 'any'."""
    if text.strip().lower() in ("any", "unlimited"):
        return float("inf")
    from ..formats.sharded import parse_size

    try:
        return parse_size(text, "--max-output-size")
    except MapspecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


RELAX_HELP = ("relax a coverage check: unused-source, unmatched-rule, missing-target, unexpected-target, "
              "dtype-mismatch, unused-elements, overlapping-elements, ignored-and-matched")
PAIR = "KEY=VALUE"
VALUE_HELP = "VALUE is typed: 6, 1e-5, true, 1,3,224,224 or [1,3,224,224] or (1, 3, 224, 224), {data: [1,3,8,8]}"


# The one option vocabulary: a flag means the same in every command that has it (README, "Commands").
def _add_output(p: argparse.ArgumentParser, help: str, metavar: str = "FILE") -> None:
    p.add_argument("--output", "-o", metavar=metavar, help=help)
    p.add_argument("-O", dest="output", action=_Deprecated, new="-o/--output", help=argparse.SUPPRESS)


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (bytes, rate, time left); default: only when stderr is a terminal")


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", "-f", action="store_true", help="overwrite existing output")
    p.add_argument("--no-sync", dest="sync", action="store_false",
                   help="do not fsync outputs before putting them in place (faster; for scratch outputs: after a "
                        "power loss they may be empty or hold zeros)")


def _add_vars(p: argparse.ArgumentParser) -> None:
    p.add_argument("--var", action="append", metavar="NAME=VALUE",
                   help="override one of the spec's vars (VALUE as for the options: 6, [1, 2], {2: 6, 3: 12})")
    p.add_argument("--vars-file", metavar="FILE", help="the model's config (JSON/YAML) to read the spec's config "
                                                       "vars from, instead of the file beside the source")


def _add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a spec file, a shipped spec's name, or a family-picked name (hf-to-gguf, "
                                "gguf-to-hf: the source's architecture picks the family; see `mapspec specs`)")
    p.add_argument("--source", "-s", required=True, metavar="FILE", help="the source checkpoint")
    p.add_argument("--template", "-t", metavar="FILE", help="a file whose tensor names and shapes the output must match "
                                            "(overrides the spec's target template)")
    p.add_argument("--source-format", help="the source's format (default: the spec's, else detected)")
    p.add_argument("--target-format", help="the output's format (default: the spec's, else from the file name)")
    p.add_argument("--source-option", action="append", metavar=PAIR,
                   help="a reader option of the source's format, added to the spec's source.options; " + VALUE_HELP)
    p.add_argument("--template-option", action="append", metavar=PAIR,
                   help="a reader option of the template's format (e.g. input_shape=1,3,224,224), added to the "
                        "spec's target.template_options")
    from ..language.model import RELAXATIONS

    p.add_argument("--relax", action="append", choices=list(RELAXATIONS), help=RELAX_HELP)
    p.add_argument("--no-tokenizer", action="store_true",
                   help="a spec whose GGUF target takes the tokenizer from the source's folder: write none (llama.cpp "
                        "cannot run the file without one)")
    p.add_argument("--tokenizer-pre", metavar="NAME",
                   help="the llama.cpp name of a tokenizer.json's BPE pre-tokenizer that llama.cpp's table does not "
                        "list (when you know which it is)")
    _add_vars(p)
    _add_allow_path(p)


ALLOW_PATH_HELP = ("let the spec's paths (include, template, verify graph, symbol) reach files under DIR too "
                   "(by default only under the spec's own folder)")


def _add_allow_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-path", action="append", metavar="DIR", help=ALLOW_PATH_HELP)


@dataclass(frozen=True)
class Command:
    """One sub-command: its name and help, the function adding its arguments, the function running it
    (``args, out, err -> exit status``), and whether it needs ``-o/--output``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable
    output_required: bool = False
