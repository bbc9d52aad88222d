# cython: language_level=3
"""Compiled CPU kernels of the fastbp contract (see fastbp/backends/contract.py).

Every ``def`` here is the API edge of compiled code: it checks shapes, dtypes and contiguity
(typed memoryviews reject the wrong dtype or a non-contiguous array), then runs ``nogil``
without bounds checks. The ``cdef`` functions work on raw pointers so that compiled loops
(a future whole-epoch loop) can call them without Python in between.
"""

from cython cimport floating
from libc.stdint cimport uint64_t
from libc.math cimport exp, fabs, fma, fmaf, log, sqrt, sqrtf, tanh
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

# Ids shared with fastbp/backends/contract.py (a test checks they agree).
cdef enum:
    LINEAR = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    LEAKY_RELU = 4
    SOFTMAX = 5

cdef enum:
    MSE = 0
    BINARY_CE = 1
    CATEGORICAL_CE = 2
    SPARSE_CE = 3

cdef enum:
    SGD = 0
    RMSPROP = 1
    ADAM = 2
    ADAMW = 3

ACTIVATION_IDS = {"linear": LINEAR, "sigmoid": SIGMOID, "tanh": TANH, "relu": RELU,
                  "leaky_relu": LEAKY_RELU, "softmax": SOFTMAX}
LOSS_IDS = {"mse": MSE, "binary_crossentropy": BINARY_CE,
            "categorical_crossentropy": CATEGORICAL_CE,
            "sparse_categorical_crossentropy": SPARSE_CE}
OPTIMIZER_IDS = {"sgd": SGD, "rmsprop": RMSPROP, "adam": ADAM, "adamw": ADAMW}

include "_team.pxi"
include "_blas.pxi"
include "_dense.pxi"
include "_loss.pxi"
include "_optim.pxi"
include "_train.pxi"
include "_norm.pxi"
include "_rnn.pxi"
