"""forward.py SYMBOL.json WEIGHTS.params INPUTS.npz OUT.npz [--internals]: MXNet's inference forward.

Binds with is_train=False on cpu; inputs are the members of INPUTS.npz (by variable name);
weights come from an arg:/aux: .params file.  OUT.npz holds every output by its MXNet name
(with --internals: every internal output of sym.get_internals(), e.g. "conv_1_conv2d_output").
"""
import sys

import numpy as np
import mxnet as mx

sym = mx.sym.load(sys.argv[1])
saved = mx.nd.load(sys.argv[2])
arg_params = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
aux_params = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
inputs = dict(np.load(sys.argv[3]))
if "--internals" in sys.argv:
    sym = sym.get_internals()  # every node's outputs, variables included (dropped when saving)
args = {k: mx.nd.array(v, dtype=v.dtype) for k, v in inputs.items()}
for name in sym.list_arguments():
    if name in arg_params:
        args[name] = arg_params[name]
missing = [n for n in sym.list_arguments() if n not in args]
for n in missing:  # labels: not used at inference, any shape MXNet accepts
    shapes, _, _ = sym.infer_shape_partial(**{k: v.shape for k, v in args.items()})
    args[n] = mx.nd.zeros(dict(zip(sym.list_arguments(), shapes))[n])
aux = {n: aux_params[n] for n in sym.list_auxiliary_states()}
exe = sym.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")
outs = exe.forward(is_train=False)
variables = set(sym.list_arguments()) | set(sym.list_auxiliary_states())
np.savez(sys.argv[4], **{n: o.asnumpy() for n, o in zip(sym.list_outputs(), outs) if n not in variables})
