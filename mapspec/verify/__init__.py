"""mapspec verify: run the original and the converted model on the same input and compare.

``runners/`` runs one side each (a registry: Caffe and MXNet executors, torch modules, Keras
models, transformers models), ``inputs`` makes the bounded input, ``metrics`` compares and holds
the tolerances, ``layers`` lines up layers from the spec (``rotary``: how each side lays out
q/k rotary features), ``diagnose`` says what most likely
differs, ``core`` puts them together.
"""

from .core import Verdict, align_outputs, run_verify, verify
from .diagnose import diagnose, diagnose_weights
from .inputs import load_input
from .layers import LayerPair, LayerResult, compare_layers, derive_layers
from .metrics import ATOL, COSINE, LAYER_REL_TOL, Comparison, compare
from .runners import RUNNERS, Runner, Side, make_runner

__all__ = ["ATOL", "COSINE", "LAYER_REL_TOL", "RUNNERS", "Comparison", "LayerPair", "LayerResult", "Runner",
           "Side", "Verdict", "align_outputs", "compare", "compare_layers", "derive_layers", "diagnose",
           "diagnose_weights", "load_input", "make_runner", "run_verify", "verify"]
