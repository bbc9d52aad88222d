"""Losses: ONE table, each loss declared once with its id, names, formula and what it needs.

Each loss says which id the kernels know it by, which names select it, which output activations
it accepts, and with which output activation its gradient fuses to :math:`∂L/∂Z = P − Y` (the
kernel then skips the activation's derivative). An element-wise loss (mean over all elements)
is one scalar formula, ``element(p, y, lo, hi) -> (value, ∂value/∂p)`` (lo, hi = ε, 1 − ε in
the data's float type: the probability clip of Keras' cross-entropies), that the NumPy reference
runs on arrays and Numba and numba.cuda compile (``fastbp._formulas``), the C kernels taking it
from the X-macro list of ``src_c/_loss.h``; the categorical cross-entropies are row operations,
written in each backend's ``loss`` kernel (their rows are renormalized by their sums).

=================================  ===================================================
loss                               value (Keras semantics, mean over the batch)
=================================  ===================================================
mse                                mean over all elements of (P − Y)²
binary_crossentropy                −mean of Y·log q + (1 − Y)·log(1 − q), q = clip(P, ε, 1 − ε)
categorical_crossentropy           −mean over rows of Σ Y·log clip(P / ΣP, ε, 1 − ε)
sparse_categorical_crossentropy    the same against one-hot labels
=================================  ===================================================
"""

from collections.abc import Callable
from dataclasses import dataclass

from ._formulas import clip, log, log1p, where


def mse_element(p, y, lo, hi):
    """:math:`(p − y)²` and :math:`2(p − y)`."""
    r = p - y
    return r * r, 2 * r


def bce_element(p, y, lo, hi):
    """:math:`−(y·\\log q + (1 − y)·\\log(1 − q))`, q = clip(p, lo, hi), and
    :math:`(q − y)/(q(1 − q))` where p is not clipped (0 where it is: the loss is flat)."""
    q = clip(p, lo, hi)
    return -(y * log(q) + (1 - y) * log1p(-q)), where(q == p, (q - y) / (q * (1 - q)), 0 * q)


@dataclass(frozen=True)
class Loss:
    """One loss: its contract id, other names, the output activations it accepts (None: any),
    and the output activation with which its gradient is the fused P − Y (None: none)."""

    name: str
    id: int
    aliases: tuple[str, ...] = ()
    outputs: frozenset | None = None
    fuses_with: frozenset = frozenset()
    sparse: bool = False  # targets are integer labels
    element: Callable | None = None  # the element-wise formula (None: a row loss)


# Cross-entropies read the outputs as probabilities: other output activations would give NaN.
_PROBABILITIES = frozenset({"sigmoid", "softmax"})

REGISTRY: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", 0, ("mean_squared_error",), element=mse_element),
        Loss(
            "binary_crossentropy",
            1,
            ("bce",),
            _PROBABILITIES,
            frozenset({"sigmoid"}),
            element=bce_element,
        ),
        Loss("categorical_crossentropy", 2, ("cce",), _PROBABILITIES, frozenset({"softmax"})),
        Loss(
            "sparse_categorical_crossentropy",
            3,
            (),
            _PROBABILITIES,
            frozenset({"softmax"}),
            sparse=True,
        ),
    )
}
ALIASES = {alias: loss.name for loss in REGISTRY.values() for alias in loss.aliases}
LOSS_IDS = {name: loss.id for name, loss in REGISTRY.items()}
#: id -> element-wise formula, for the element-wise losses
ELEMENTS = {loss.id: loss.element for loss in REGISTRY.values() if loss.element is not None}
#: ids of the losses that fuse with an output activation (the kernels' ``fused`` applies)
FUSABLE = frozenset(loss.id for loss in REGISTRY.values() if loss.fuses_with)


def get(identifier: str) -> str:
    """Return the canonical loss name for ``identifier``."""
    name = ALIASES.get(identifier, identifier) if isinstance(identifier, str) else identifier
    if name not in REGISTRY:
        raise ValueError(f"loss must be one of {sorted(REGISTRY)}, got {identifier!r}")
    return name


def check_output(loss: str, activation: str) -> None:
    """Refuse a loss on outputs it cannot read (a cross-entropy needs probabilities)."""
    outputs = REGISTRY[loss].outputs
    if outputs is not None and activation not in outputs:
        names = " or ".join(f"'{a}'" for a in sorted(outputs))
        raise ValueError(
            f"loss={loss!r} needs a last layer with activation {names}, got {activation!r}"
        )


def fuses(loss: str, activation: str) -> bool:
    """Whether ``loss`` on outputs of ``activation`` back-propagates the fused P − Y."""
    return activation in REGISTRY[loss].fuses_with
