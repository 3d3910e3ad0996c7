"""op_cases.py CASES.json ARRAYS.npz OUT.npz: run single MXNet ops at inference, for per-op tests.

CASES.json is a list of {"id", "op", "attrs": {name: str}, "inputs": [[slot, variable], ...],
"positional": bool}; ARRAYS.npz holds "<id>/<variable>" for every variable.  For each case
the op is built with mx.sym (variables passed by slot name, or positionally for variadic
ops), bound with is_train=False and run; OUT.npz gets "<id>/json" (the symbol as MXNet
serialises it), "<id>/out" (the first output), or "<id>/error" when MXNet refuses the case.
"""
import json
import sys

import numpy as np
import mxnet as mx

cases = json.load(open(sys.argv[1]))
arrays = np.load(sys.argv[2])
out = {}
for case in cases:
    cid = case["id"]
    try:
        fn = getattr(mx.sym, case["op"], None) or getattr(mx.sym._internal, case["op"])
        variables = [(slot, mx.sym.Variable(var)) for slot, var in case["inputs"]]
        if case.get("positional"):
            sym = fn(*[v for _, v in variables], name=cid, **case["attrs"])
        else:
            sym = fn(name=cid, **dict(variables), **case["attrs"])
        feed = {var: mx.nd.array(arrays["%s/%s" % (cid, var)]) for _, var in case["inputs"]}
        args = {n: feed[n] for n in sym.list_arguments()}
        aux = {n: feed[n] for n in sym.list_auxiliary_states()}
        exe = sym.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")
        res = exe.forward(is_train=False)[0].asnumpy()
        out[cid + "/json"] = np.array(sym.tojson())
        out[cid + "/out"] = res
    except Exception as e:  # report per case; the test decides
        out[cid + "/error"] = np.array("%s: %s" % (type(e).__name__, str(e).strip().splitlines()[-1][:500]))
np.savez(sys.argv[3], **out)
