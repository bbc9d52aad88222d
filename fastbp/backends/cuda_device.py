"""What every numba.cuda module of the backend shares: launch-shape constants, the device-function
decorator, the activations as device functions, and the placeholder for absent arrays."""

from functools import cache

from numba import config, cuda

from .. import activations

SIMULATOR = bool(config.ENABLE_CUDASIM)
# No fastmath: in numba.cuda any fastmath flag also compiles with flush-to-zero and approximate
# division/sqrt (and "afn" gives tanh.approx/ex2.approx); a float32 LSTM/RNN then drifts ~1e-4
# from the reference over its steps. Multiply-adds are still fused (NVVM's default).
FASTMATH = False
# Device functions are inlined by NVVM (forceinline), not copied into every caller's numba IR
# (inline=True): a GEMM calls its epilogue 64 times, and IR inlining made it compile ~10x longer.
# The simulator's jit knows no forceinline.
device_function = cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True)
THREADS = 32 if SIMULATOR else 256  # element-wise kernels: threads per block
MAX_BLOCKS = 64 if SIMULATOR else 132 * 16  # grid-stride kernels: cap on blocks


def blocks(n: int) -> int:
    """Blocks for a grid-stride loop over n items."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS)))


# the registry's formulas as device functions, picked by id (fastbp.activations); ids are
# checked on the host before any launch
_act_forward, _act_backward = activations.compile_scalar(device_function, raising=False)


@device_function
def _act(v, act, slope):
    """act(v) for the element-wise activations (softmax is a row kernel)."""
    return _act_forward(act, v, slope)


@device_function
def _dact(a, d, act, slope):
    """d ⊙ act'(z) written through a = act(z), for activations whose derivative does not need
    z (the callers refuse the others)."""
    return _act_backward(act, a, a, d, slope)


@cache
def placeholder(dtype, ndim: int):
    """A 1-element device array passed where an optional array is absent (numba.cuda kernels
    take no None arguments; a flag says not to read it)."""
    return cuda.device_array((1,) * ndim, dtype=dtype)
