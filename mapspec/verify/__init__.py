"""mapspec verify: run the original and the converted model on the same input and compare."""

from .core import *  # noqa: F401,F403
from .core import compare, diagnose, load_input, make_runner, spec_verify_config, verify  # noqa: F401
