"""Scalar formulas written once in Python, run on every Python-side target.

A formula is a plain function of scalars that calls only arithmetic, ``if``/conditional
expressions on hyperparameters, and the primitives defined below (``exp``, ``log``,
``log1p``, ``tanh``, ``erf``, ``sqrt``, ``sigmoid``, ``where``, ``clip``, ``flush``).
:func:`bind` gives it a target's primitives: NumPy's (the reference runs the formula on
whole arrays), or scalar ones compiled by the target's decorator (``numba.njit`` for the
Numba CPU backend, ``cuda.jit(device=True)`` for numba.cuda). :func:`dispatch` compiles a
function that picks a formula by its integer id, as the kernels receive it.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable

# Plain-Python scalar defaults, so that the formulas read (and lint) as ordinary code; every
# target rebinds them (bind).
exp, log, log1p, tanh, erf, sqrt = math.exp, math.log, math.log1p, math.tanh, math.erf, math.sqrt


def where(c, x, y):
    return x if c else y


def clip(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


def flush(x, tiny):
    """x, or 0 where |x| is below the smallest normal number ``tiny`` (subnormals are ~100x
    slower on x86; the C kernels flush them in hardware)."""
    return x if abs(x) >= tiny else x * 0


def sigmoid(z):
    """1/(1 + e^-z), through e^-|z| (never overflows: exactly 0 or 1 far out, no NaN, and no
    OverflowError where the target evaluates math.exp in Python, as the CUDA simulator does)."""
    e = exp(-abs(z))
    return where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def bind(fn: Callable, names: dict) -> Callable:
    """``fn`` with its global names (exp, where, ...) looked up in ``names`` first."""
    return types.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__)


def numpy_names() -> dict:
    """The primitives on NumPy arrays (elementwise; ``where`` is np.where)."""
    import numpy as np
    from scipy.special import erf, expit

    def flush(x, tiny):
        x = np.asarray(x)
        return np.where(np.abs(x) >= tiny, x, 0).astype(x.dtype)

    return {
        "exp": np.exp,
        "log": np.log,
        "log1p": np.log1p,
        "clip": np.clip,
        "tanh": np.tanh,
        "erf": erf,
        "sqrt": np.sqrt,
        "sigmoid": expit,
        "where": np.where,
        "flush": flush,
    }


def scalar_names(jit: Callable) -> dict:
    """The primitives on scalars, the Python-level ones compiled by ``jit``."""
    names = {"exp": math.exp, "tanh": math.tanh, "erf": math.erf, "sqrt": math.sqrt}
    names |= {"log": math.log, "log1p": math.log1p}
    names["where"] = jit(where)
    names["clip"] = jit(clip)
    names["flush"] = jit(flush)
    names["sigmoid"] = jit(bind(sigmoid, names))
    return names


def dispatch(
    jit: Callable,
    cases: dict[int, Callable],
    args: str,
    name: str,
    raising: bool = True,
    fallback: str | None = None,
) -> Callable:
    """``name(key, *args)`` calling ``cases[key](*args)``, every formula bound to scalar
    primitives and compiled by ``jit``. An unknown key raises ValueError (``raising``), or, where
    a target cannot raise (a CUDA device function), returns ``fallback`` (source text of the
    formulas' return type; default: the first argument): there the caller checks the key before
    any launch."""
    names = scalar_names(jit)
    scope: dict = {}
    lines = [f"def {name}(key, {args}):"]
    for key, fn in cases.items():
        scope[f"case{key}"] = jit(bind(fn, names))
        lines += [f"    if key == {key}:", f"        return case{key}({args})"]
    fallback = fallback or args.split(",")[0].strip()
    unknown = f"raise ValueError('unknown {name} id')" if raising else f"return {fallback}"
    lines.append("    " + unknown)
    exec(compile("\n".join(lines) + "\n", f"<fastbp dispatch {name}>", "exec"), scope)
    return jit(scope[name])
