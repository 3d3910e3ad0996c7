"""The command line in-process for the tests under tests/cli/: (exit status, stdout, stderr)."""

from __future__ import annotations

import io

from mapspec import cli


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()
