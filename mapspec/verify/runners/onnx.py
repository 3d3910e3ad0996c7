"""Runs an ONNX model with onnxruntime: the converted ``.onnx`` (graph and initializers) as it is.

With ``capture``, every node's first output is added to the graph's outputs (with the onnx
package) so that layers can be compared.  A node is named by its name (else its first output);
an initializer belongs to the first node that consumes it.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ...errors import MapspecError
from .base import Runner, RunError, Side


class OnnxRunner(Runner):
    kind = "onnx"

    def __init__(self, path: str):
        import onnx
        import onnxruntime

        self.ort = onnxruntime
        try:
            self.model = onnx.load(path)
            self.session = self._session(self.model)
        except Exception as e:  # onnx/onnxruntime raise their own exception types for a bad model
            raise MapspecError(f"{path}: onnxruntime cannot load this model: {type(e).__name__}: {e}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.takes_tokens = "int" in first.type
        self._declared = tuple(first.shape) if all(isinstance(d, int) and d > 0 for d in first.shape) else None
        self.labels = OrderedDict((n.output[0], n.name or n.output[0]) for n in self.model.graph.node if n.output)
        inits = {t.name for t in self.model.graph.initializer}
        self.owner: dict = {}
        for n in self.model.graph.node:
            for i in n.input:
                if i in inits:
                    self.owner.setdefault(i, n.name or n.output[0])

    def _session(self, model):
        return self.ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def layer_of(self, tensor: str) -> str:
        return self.owner.get(tensor, tensor)

    def input_shape(self):
        return self._declared

    def run(self, x, capture=False):
        import onnx

        session, names = self.session, [o.name for o in self.session.get_outputs()]
        if capture:
            probe = onnx.ModelProto()
            probe.CopyFrom(self.model)
            extra = [o for o in self.labels if o not in names]
            probe.graph.output.extend([onnx.ValueInfoProto(name=o) for o in extra])
            session = self._session(probe)
            names = names + extra
        try:
            values = session.run(names, {self.input_name: self.prepare(x)})
        except Exception as e:  # onnxruntime's errors on a shape that does not fit
            raise RunError(f"the onnx model failed on the input: {type(e).__name__}: {e}") from None
        got = dict(zip(names, values))
        outputs = OrderedDict([(names[0], np.asarray(values[0]))])
        acts = OrderedDict((label, np.asarray(got[n])) for n, label in self.labels.items() if capture and n in got)
        return outputs, acts


def build(side: Side) -> OnnxRunner:
    return OnnxRunner(side.weights)
