"""Activation names a layer accepts, resolved to the contract's ids."""

from .backends.contract import ACTIVATION_IDS

#: Slope of ``leaky_relu`` for z < 0 (``keras.activations.leaky_relu``'s default).
LEAKY_RELU_SLOPE = 0.2


def get(identifier: str | None) -> str:
    """Return the canonical activation name for ``identifier`` (None means "linear")."""
    if identifier is None:
        return "linear"
    if not isinstance(identifier, str) or identifier not in ACTIVATION_IDS:
        raise ValueError(
            f"activation must be None or one of {sorted(ACTIVATION_IDS)}, got {identifier!r}"
        )
    return identifier
