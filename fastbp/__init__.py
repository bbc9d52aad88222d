"""fastbp: backpropagation with compiled kernels under a thin Keras-like API.

>>> import fastbp as fb
>>> model = fb.Sequential([fb.layers.Dense(3, "sigmoid", input_dim=2),
...                        fb.layers.Dense(1, "sigmoid")])
"""

from . import (
    activations,
    backends,
    callbacks,
    initializers,
    layers,
    losses,
    metrics,
    optimizers,
    regularizers,
)
from .gradcheck import gradcheck
from .model import Sequential, load
from .profiler import profile
from .threads import get_num_threads, set_num_threads

__all__ = [
    "Sequential",
    "activations",
    "backends",
    "blas",
    "callbacks",
    "get_num_threads",
    "gradcheck",
    "initializers",
    "layers",
    "load",
    "losses",
    "metrics",
    "optimizers",
    "profile",
    "regularizers",
    "set_num_threads",
]
__version__ = "0.1.0"
