# cython: language_level=3
"""Compiled CPU kernels of the fastbp contract (see fastbp/backends/contract.py).

Every ``def`` here is the API edge of compiled code: it checks shapes, dtypes and contiguity
(typed memoryviews reject the wrong dtype or a non-contiguous array), then runs ``nogil``
without bounds checks. The ``cdef`` functions work on raw pointers so that compiled loops
(a future whole-epoch loop) can call them without Python in between.
"""

from cython cimport floating
from libc.stdint cimport uint64_t
from libc.math cimport fma, isfinite, log, pow, sqrt
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

# Ids shared with fastbp/backends/contract.py (a test checks they agree); activations and
# optimizers are numbered in the C headers whose kernels switch on them.
cdef extern from "_act.h":
    cdef enum:
        LINEAR "FASTBP_LINEAR"
        SOFTMAX "FASTBP_SOFTMAX"

cdef extern from "_loss.h":
    cdef enum:
        MSE "FASTBP_MSE"
        CATEGORICAL_CE "FASTBP_CATEGORICAL_CROSSENTROPY"
        SPARSE_CE "FASTBP_SPARSE_CATEGORICAL_CROSSENTROPY"
        FASTBP_N_LOSSES
    const char* const fastbp_loss_names[]
    const int fastbp_loss_ids[]

cdef extern from "_optim.h":
    cdef enum:
        SGD "FASTBP_SGD"
        ADAM "FASTBP_ADAM"
        ADAMW "FASTBP_ADAMW"
        FASTBP_N_OPTIMIZERS
    const char* const fastbp_optimizer_names[]
    const int fastbp_optimizer_ids[]



include "_team.pxi"
include "_signals.pxi"
include "_blas.pxi"
include "_dense.pxi"
include "_loss.pxi"
include "_optim.pxi"
include "_train.pxi"
include "_norm.pxi"
include "_rnn.pxi"

# activation, optimizer and loss names and ids from the X-macro lists of _act_list.h, _optim.h
# and _loss.h
ACTIVATION_IDS = {fastbp_act_names[i].decode().lower(): fastbp_act_ids[i]
                  for i in range(FASTBP_N_ACTIVATIONS)}
OPTIMIZER_IDS = {fastbp_optimizer_names[i].decode().lower(): fastbp_optimizer_ids[i]
                 for i in range(FASTBP_N_OPTIMIZERS)}
LOSS_IDS = {fastbp_loss_names[i].decode().lower(): fastbp_loss_ids[i]
            for i in range(FASTBP_N_LOSSES)}
