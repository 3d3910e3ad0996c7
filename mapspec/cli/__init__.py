"""The ``mapspec`` command line.

``main()`` is ``sys.exit(run(sys.argv[1:]))``; ``run`` takes ``stdout``/``stderr`` so
that tests call the CLI in-process.  Exit status: 0 success, 1 a user error reported
in one clear message (no traceback), 2 bad usage.  ``mapspec diff`` exits 1 when
the checkpoints differ.

The rooms: :mod:`.flags` (the parser, the flag vocabulary, the :class:`~.flags.Command` record),
:mod:`.show` (terminal tables), one module per command group (:mod:`.convert`: plan, apply;
:mod:`.checkpoints`: inspect, diff; :mod:`.verify`; :mod:`.spectools`: validate, specs, formats,
transforms, invert, draft; :mod:`.tools`: fold-bn, graph, example), and :mod:`.signals`.  Each group
module defines its commands; :data:`COMMAND_TABLE` below (a lazy table, :mod:`mapspec.registry`) names each
command's home and is the table the parser is built from.
Command modules import what they run only when they run it (start-up stays light).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence, TextIO

from .. import __version__
from ..errors import OPTIONAL_PACKAGES, MapspecError, MissingDependency, UsageError, escape
from ..registry import LazyTable
from .flags import Command, _Parser
from .signals import Terminated, _handle_signals

# The table of commands (name -> its Command in its group's module), in the order `mapspec --help` lists them.
COMMAND_TABLE = LazyTable("command", {
    "validate": "mapspec.cli.spectools:VALIDATE",
    "inspect": "mapspec.cli.checkpoints:INSPECT",
    "plan": "mapspec.cli.convert:PLAN",
    "apply": "mapspec.cli.convert:APPLY",
    "diff": "mapspec.cli.checkpoints:DIFF",
    "verify": "mapspec.cli.verify:VERIFY",
    "fold-bn": "mapspec.cli.tools:FOLD_BN",
    "invert": "mapspec.cli.spectools:INVERT",
    "draft": "mapspec.cli.spectools:DRAFT",
    "example": "mapspec.cli.tools:EXAMPLE",
    "specs": "mapspec.cli.spectools:SPECS",
    "formats": "mapspec.cli.spectools:FORMATS",
    "transforms": "mapspec.cli.spectools:TRANSFORMS",
    "graph": "mapspec.cli.tools:GRAPH",
})


def commands() -> list[Command]:
    """Every command, in the table's order (building the parser needs each one's arguments)."""
    return [COMMAND_TABLE.load(name) for name in COMMAND_TABLE]


def build_parser() -> _Parser:
    parser = _Parser(prog="mapspec", description="Move pretrained weights between frameworks and checkpoint "
                                                 "layouts with a declarative YAML spec.")
    parser.add_argument("--version", action="version", version=f"mapspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for c in commands():
        p = sub.add_parser(c.name, help=c.help)
        c.add_arguments(p)
        p.set_defaults(func=c.run, **({"output_required": True} if c.output_required else {}))
    parser.set_defaults(run_command=run)  # a command that runs others (example) runs them through this
    return parser


def run(argv: Optional[Sequence[str]] = None, stdout: Optional[TextIO] = None,
        stderr: Optional[TextIO] = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    args = None
    restore = _handle_signals()
    from ..files import PUBLISHED

    published_before = len(PUBLISHED)
    try:
        try:
            args = parser.parse_args(list(argv) if argv is not None else None)
        except SystemExit as e:  # --help / --version
            return int(e.code or 0)
        if not getattr(args, "command", None):
            parser.print_help(out)
            return 2
        for note in getattr(args, "deprecations", None) or ():
            print(note, file=err)
        if getattr(args, "output_required", False) and not args.output:
            raise UsageError(f"mapspec {args.command}: the following arguments are required: -o/--output\n"
                             f"(see mapspec {args.command} --help)")
        return args.func(args, out, err)
    except ModuleNotFoundError as e:  # an optional package (torch, keras, pillow) this command needs
        if (e.name or "").split(".")[0] not in OPTIONAL_PACKAGES:
            raise
        what = f"mapspec {args.command}" if args is not None else "mapspec"
        print(f"mapspec: error: {MissingDependency(e.name, what)}", file=err)
        return 1
    except MapspecError as e:
        print(f"mapspec: error: {escape(e, keep_newlines=True)}", file=err)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (Terminated)
        from ..files import PUBLISHED

        done = PUBLISHED[published_before:]
        what = (f"{' and '.join(escape(d) for d in done)} {'was' if len(done) == 1 else 'were'} written completely "
                f"before it" if done else "no output was written")
        print(f"mapspec: {getattr(e, 'name', 'interrupted')}: stopped; {what}" if isinstance(e, Terminated) else
              f"mapspec: interrupted; {what}", file=err)
        return 128 + getattr(e, "signum", 2)
    except BrokenPipeError:
        return 1
    finally:
        restore()



def main() -> None:
    sys.exit(run())
