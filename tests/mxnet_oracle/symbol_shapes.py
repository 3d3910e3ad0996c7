"""symbol_shapes.py SYMBOL.json '{"data": [1, 3, 112, 112]}': MXNet's shape inference, as JSON.

Prints {"args": {name: shape}, "aux": {...}, "outputs": {...}, "internals": {output name: shape},
"arg_order": [...], "aux_order": [...]}.
"""
import json
import sys

import mxnet as mx

sym = mx.sym.load(sys.argv[1])
shapes = {k: tuple(v) for k, v in json.loads(sys.argv[2]).items()}
arg, out, aux = sym.infer_shape(**shapes)
internals = sym.get_internals()
_, iout, _ = internals.infer_shape(**shapes)
print(json.dumps({
    "args": dict(zip(sym.list_arguments(), map(list, arg))),
    "aux": dict(zip(sym.list_auxiliary_states(), map(list, aux))),
    "outputs": dict(zip(sym.list_outputs(), map(list, out))),
    "internals": dict(zip(internals.list_outputs(), map(list, iout))),
    "arg_order": sym.list_arguments(),
    "aux_order": sym.list_auxiliary_states(),
}))
