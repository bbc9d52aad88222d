"""Activations: ONE table, each entry declared once with its formula.

An element-wise activation is two scalar formulas written in plain Python:

- ``forward(z, alpha)``: :math:`a = f(z)`;
- ``backward(z, a, d, alpha)``: :math:`dz = d \\cdot f'(z)`, written through :math:`a = f(z)`
  where the derivative allows it (then ``z`` is not read and never stored).

The same two functions serve every Python-side backend: the NumPy reference runs them on whole
arrays (:func:`numpy_formulas`), Numba compiles them with ``numba.njit`` and numba.cuda with
``cuda.jit(device=True)`` (:func:`compile_scalar`); the names they call (``exp``, ``tanh``,
``erf``, ``sigmoid``, ``where``) are bound to each target's versions. The C kernels take the
same formulas from one X-macro list, ``src_c/_act_list.h`` (a test checks the ids agree).
An activation whose derivative needs the pre-activation ``z`` (``needs_z``: GELU) makes its
layer keep ``Z``; the others keep only ``A``. Softmax is a row operation, special in every
backend (its Jacobian-vector product ``dz = a ⊙ (d − <d, a>)``).

Adding an activation: an entry in ``REGISTRY`` below and one ``X(...)`` line in
``src_c/_act_list.h``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from . import _formulas
from ._formulas import erf, exp, sigmoid, tanh, where

#: Slope of ``leaky_relu`` for z < 0 (``keras.activations.leaky_relu``'s default).
LEAKY_RELU_SLOPE = 0.2

_INV_SQRT2 = 0.7071067811865476  # 1/√2
_INV_SQRT_2PI = 0.3989422804014327  # 1/√(2π)


# -- the formulas --------------------------------------------------------------------------------
def linear(z, alpha):
    return z


def linear_backward(z, a, d, alpha):
    return d


def sigmoid_forward(z, alpha):
    return sigmoid(z)


def sigmoid_backward(z, a, d, alpha):
    return d * (a * (1 - a))


def tanh_forward(z, alpha):
    return tanh(z)


def tanh_backward(z, a, d, alpha):
    return d * (1 - a * a)


def relu(z, alpha):
    return where(z < 0, 0, z)  # NaN stays NaN (z < 0 is False), -inf gives 0


def relu_backward(z, a, d, alpha):
    return where(a > 0, d, 0 * d)


def leaky_relu(z, alpha):
    return where(z > 0, z, alpha * z)


def leaky_relu_backward(z, a, d, alpha):  # a > 0 exactly where z > 0 (alpha >= 0)
    return where(a > 0, d, alpha * d)


def gelu(z, alpha):
    """Keras' exact GELU: :math:`z·Φ(z) = ½z(1 + erf(z/√2))`."""
    return 0.5 * z * (1 + erf(z * _INV_SQRT2))


def gelu_backward(z, a, d, alpha):
    """:math:`Φ(z) + z·φ(z)`, φ the standard normal density."""
    return d * (0.5 * (1 + erf(z * _INV_SQRT2)) + z * exp(-0.5 * z * z) * _INV_SQRT_2PI)


@dataclass(frozen=True)
class Activation:
    """One activation: its contract id, its formulas, and whether its derivative needs ``z``.

    ``forward``/``backward`` are None for a row activation (softmax), which each backend
    implements itself.
    """

    name: str
    id: int
    forward: Callable | None
    backward: Callable | None
    needs_z: bool = False
    recurrent: bool = True  # usable as a SimpleRNN activation


REGISTRY: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("linear", 0, linear, linear_backward),
        Activation("sigmoid", 1, sigmoid_forward, sigmoid_backward),
        Activation("tanh", 2, tanh_forward, tanh_backward),
        Activation("relu", 3, relu, relu_backward),
        Activation("leaky_relu", 4, leaky_relu, leaky_relu_backward),
        Activation("softmax", 5, None, None, recurrent=False),
        Activation("gelu", 6, gelu, gelu_backward, needs_z=True, recurrent=False),
    )
}
BY_ID: dict[int, Activation] = {a.id: a for a in REGISTRY.values()}
ELEMENTWISE = tuple(a for a in REGISTRY.values() if a.forward is not None)
NEEDS_Z = frozenset(a.id for a in REGISTRY.values() if a.needs_z)
SOFTMAX_ID = REGISTRY["softmax"].id


def get(identifier: str | None) -> str:
    """Return the canonical activation name for ``identifier`` (None means "linear")."""
    if identifier is None:
        return "linear"
    if not isinstance(identifier, str) or identifier not in REGISTRY:
        raise ValueError(
            f"activation must be None or one of {sorted(REGISTRY)}, got {identifier!r}"
        )
    return identifier


def check_id(act, alpha, recurrent: bool = False) -> None:
    """Raise ValueError unless ``act`` is a registered id (a recurrent one if ``recurrent``)
    and ``alpha`` >= 0: every backend's edge calls this before compiled code sees the id."""
    entry = BY_ID.get(act) if isinstance(act, int) else None
    if entry is None or (recurrent and not entry.recurrent):
        allowed = sorted(a.id for a in REGISTRY.values() if a.recurrent or not recurrent)
        raise ValueError(f"act must be an activation id in {allowed}, got {act!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha (leaky_relu slope) must be >= 0, got {alpha}")


def needs_z(act: int) -> bool:
    """Whether activation ``act``'s derivative reads the pre-activation ``Z``."""
    return act in NEEDS_Z


def check_z(act: int, Z, shape: tuple) -> None:
    """The dense kernels take ``Z`` (shaped ``shape``) exactly for activations that need it."""
    if needs_z(act) != (Z is not None):
        raise ValueError(f"Z must be given exactly for activations that need it (act {act})")
    if Z is not None and tuple(Z.shape) != tuple(shape):
        raise ValueError(f"Z must have shape {tuple(shape)}, got {tuple(Z.shape)}")


# -- the formulas on each target ----------------------------------------------------------------
def numpy_formulas() -> dict[int, tuple[Callable, Callable]]:
    """{id: (forward, backward)} of the element-wise activations on NumPy arrays."""
    names = _formulas.numpy_names()
    return {
        a.id: (_formulas.bind(a.forward, names), _formulas.bind(a.backward, names))
        for a in ELEMENTWISE
    }


@cache
def _numpy_table() -> dict[int, tuple[Callable, Callable]]:
    return numpy_formulas()


def numpy_forward(act: int, z, alpha):
    """:math:`a = f(z)` on NumPy arrays (softmax: over each row of a 2-D z); the reference's."""
    if act == SOFTMAX_ID:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return _numpy_table()[act][0](z, alpha)


def numpy_backward(act: int, z, a, d, alpha):
    """:math:`dz = d ⊙ f'(z)` on NumPy arrays, through ``a`` (``z`` is read only where the
    activation needs it; softmax: :math:`a ⊙ (d − <d, a>)` per row); the reference's."""
    if act == SOFTMAX_ID:
        return a * (d - (d * a).sum(axis=1, keepdims=True))
    return _numpy_table()[act][1](z, a, d, alpha)


def compile_scalar(jit: Callable, raising: bool = True):
    """Scalar ``forward(act, z, alpha)`` and ``backward(act, z, a, d, alpha)`` dispatching on the
    activation id, each formula compiled by ``jit`` (``numba.njit(...)``; or
    ``cuda.jit(device=True)`` with ``raising=False``, ids then checked by :func:`check_id` before
    any launch). Returns ``(forward, backward)``."""
    forward = {a.id: a.forward for a in ELEMENTWISE}
    backward = {a.id: a.backward for a in ELEMENTWISE}
    return (
        _formulas.dispatch(jit, forward, "z, alpha", "activation_forward", raising),
        _formulas.dispatch(jit, backward, "z, a, d, alpha", "activation_backward", raising),
    )
