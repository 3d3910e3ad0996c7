"""decode_image.py IMAGE OUT.npy: MXNet's (OpenCV) decoding of an image as HxWx3 RGB uint8."""
import sys

import numpy as np
import mxnet as mx

np.save(sys.argv[2], mx.image.imread(sys.argv[1], flag=1, to_rgb=True).asnumpy())
