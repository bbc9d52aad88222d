"""Cheap repeated kernel launches for the numba.cuda backend.

``kernel[grid, block](*args)`` through numba's dispatcher types every argument, looks the overload
up and converts each argument to its C form on every call: ~100 µs of Python for a 13-argument
GEMM on the H100 machine's host, while a small net's kernels take a few µs each on the GPU (W3:
~17 launches per step, host-bound). ``Cached(dispatcher)[grid, block](*args)`` launches the first
time through the dispatcher, then keeps, for that (grid, block, arguments), the converted argument
list and the driver's function handle: the next identical launch (the same layer at the same batch
size, the next step) is one ``cuda.core.launch`` call (~15-20 µs there). W3's step went from 3.9
to 1.45 ms with this and fewer workspace views (``layers.head``).

Arguments are keyed by value, never by object: an array by (device pointer, shape, strides,
dtype), which is all its C form holds (views made again each step hit the entry; no array is kept
alive by the cache), a scalar by its type alone (the type picks the compiled overload, the value
does not): a plan converts the scalars of each call again with numba's own conversion
(``_prepare_args``, a few µs), so launches whose scalars change every call (the optimizer's bias
corrections, a dropout seed) replay too. Anything else (a host array, a foreign CUDA Array
Interface object) goes through the dispatcher every time. If numba-cuda's internals differ from
what this module expects, it falls back to the dispatcher for good and warns once. One GPU per
process: a plan holds the function handle of the context current when it was made.
"""

import warnings

import numpy as np
from numba import config

try:  # (numba's class test: cheap, where hasattr(a, "_numba_type_") builds a numba type)
    from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase as _DEVICE_ARRAY
except ImportError:  # no numba.cuda at all: nothing is cached
    _DEVICE_ARRAY = ()
# Entries per kernel before the table is emptied (recurrent layers key one entry per time step).
LIMIT = 4096
_broken = False


def _key(a):
    """Hashable key of one kernel argument, or None where it must not be cached."""
    if isinstance(a, (bool, int, float, np.generic)):
        return (type(a),)  # Python or NumPy scalar: the type picks the overload
    if not isinstance(a, _DEVICE_ARRAY):
        return None  # a host array or a foreign CUDA Array Interface object
    ptr = a.device_ctypes_pointer.value
    return ptr, a.shape, a.strides, a.dtype


class Cached:
    """A numba.cuda kernel whose repeated launches skip the dispatcher (see the module text)."""

    __slots__ = ("dispatcher", "plans")

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.plans = {}

    def __getattr__(self, name):  # py_func, overloads, ... of the wrapped dispatcher
        return getattr(self.dispatcher, name)

    def __getitem__(self, config):
        grid, block = config
        return lambda *args: self.launch(grid, block, args)

    def launch(self, grid, block, args) -> None:
        """kernel[grid, block](*args), from the plan table where the same launch was made."""
        try:
            key = (grid, block) + tuple(map(_key, args))
            plan = None if None in key else self.plans.get(key)
        except TypeError:  # an unhashable scalar
            key, plan = (None,), None
        if callable(plan):
            plan(args)
            return
        self.dispatcher[grid, block](*args)
        if None in key or plan is _NEVER or _broken:
            return
        if len(self.plans) >= LIMIT:
            self.plans.clear()
        # a plan from the second time a launch is seen: a launch made once costs one table
        # entry, not a conversion
        self.plans[key] = _SEEN if plan is None else _plan(self.dispatcher, grid, block, args)


_SEEN, _NEVER = "seen once", "not repeatable"


def _plan(dispatcher, grid, block, args):
    """The launch as one cuda.core call with the arguments converted once (or _NEVER)."""
    global _broken
    try:
        from cuda.core import LaunchConfig, launch
        from numba.cuda.cudadrv import driver

        argtypes = tuple(dispatcher.typeof_pyval(a) for a in args)
        kernel = dispatcher.overloads[argtypes]
        converted = _converter(kernel, args)
        if converted is _NEVER:
            return _NEVER
        dims = [d if isinstance(d, tuple) else (d,) for d in (grid, block)]
        config = LaunchConfig(grid=dims[0], block=dims[1], shmem_size=0)
        stream = driver._to_core_stream(0)  # numba's default (legacy) stream, as kernel[g, b]
        handle = kernel._codelibrary.get_cufunc().kernel
        return lambda args: launch(stream, config, handle, *converted(args))
    except Exception as exc:  # noqa: BLE001 (numba-cuda internals changed: use the dispatcher)
        _broken = True
        warnings.warn(f"fastbp: cached CUDA launches disabled ({exc!r})", stacklevel=3)
        return _NEVER


def _converter(kernel, args):
    """The launch's arguments in C form, converted once by ``kernel._prepare_args`` (or _NEVER):
    a function of a later launch's arguments that converts only their scalars again (a plan's
    arrays are the same memory, by its key)."""
    out, writeback, scalars = [], [], []
    for i, (ty, value) in enumerate(zip(kernel.argument_types, args, strict=True)):
        start = len(out)
        kernel._prepare_args(ty, value, 0, writeback, out)
        if _key(value) == (type(value),):  # a scalar: its slots in the C argument list
            scalars.append((i, start, len(out), ty))
    if writeback:  # host arrays were copied: not a repeatable launch
        return _NEVER
    base, prepare = tuple(out), kernel._prepare_args

    def convert(args) -> tuple:
        if not scalars:
            return base
        now = list(base)
        for i, start, stop, ty in scalars:
            part = []
            prepare(ty, args[i], 0, [], part)
            now[start:stop] = part
        return tuple(now)

    return convert


def cached(dispatcher):
    """``Cached(dispatcher)`` on a GPU; the dispatcher itself under the CUDA simulator."""
    return dispatcher if config.ENABLE_CUDASIM else Cached(dispatcher)
