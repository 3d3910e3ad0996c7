"""Runs a Keras 3 model built by a factory, with the converted weights (an HDF5 weights file)."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from ...errors import MapspecError
from .base import Runner, Side, build_model


class KerasRunner(Runner):
    kind = "keras"
    kernel_layout = "hwio"
    layout = "nhwc"

    def __init__(self, model, weights: str):
        import keras

        self.keras = keras
        self.model = model
        try:
            self.model.load_weights(weights)
        except Exception as e:  # keras raises ValueError/KeyError/OSError variants
            raise MapspecError(f"{weights}: keras could not load these weights: {e}") from None

    def layer_of(self, tensor: str) -> str:
        return tensor.split("/", 1)[0]

    def run(self, x, capture=False):
        keras = self.keras
        xin = self.prepare(x)  # channels last unless this side's input step says otherwise
        acts: OrderedDict = OrderedDict()
        if capture:
            layers = [l for l in self.model.layers if not isinstance(l, keras.layers.InputLayer)]
            probe = keras.Model(self.model.inputs, [l.output for l in layers])
            outs = probe.predict(xin, verbose=0)
            for l, o in zip(layers, outs):
                o = np.asarray(o)
                acts[l.name] = o.transpose(0, 3, 1, 2) if o.ndim == 4 else o
            y = np.asarray(outs[-1])
        else:
            y = np.asarray(self.model.predict(xin, verbose=0))
        return OrderedDict([("output", y.transpose(0, 3, 1, 2) if y.ndim == 4 else y)]), acts


def build(side: Side) -> KerasRunner:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if not side.model:
        raise MapspecError(f"the keras {side.name} needs a model factory (module:function): pass {side.flag}-model")
    model = build_model(side, (keras.Model,), "a keras Model")
    return KerasRunner(model, side.weights)
