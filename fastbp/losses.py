"""Losses: ONE table, each loss declared once with its id, names and what it needs.

A loss's value and gradient are kernels of the contract (``loss``, ``loss_sparse``: the NumPy
reference in ``backends/reference.py``); here each loss says which id the kernels know it by,
which names select it, which output activations it accepts, and with which output activation
its gradient fuses to :math:`∂L/∂Z = P − Y` (the kernel then skips the activation's derivative).

=================================  ===================================================
loss                               value (Keras semantics, mean over the batch)
=================================  ===================================================
mse                                mean over all elements of (P − Y)²
binary_crossentropy                −mean of Y·log q + (1 − Y)·log(1 − q), q = clip(P, ε, 1 − ε)
categorical_crossentropy           −mean over rows of Σ Y·log clip(P / ΣP, ε, 1 − ε)
sparse_categorical_crossentropy    the same against one-hot labels
=================================  ===================================================
"""

from dataclasses import dataclass


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


# Cross-entropies read the outputs as probabilities: other output activations would give NaN.
_PROBABILITIES = frozenset({"sigmoid", "softmax"})

REGISTRY: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", 0, ("mean_squared_error",)),
        Loss("binary_crossentropy", 1, ("bce",), _PROBABILITIES, frozenset({"sigmoid"})),
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
