"""Loss names, and when a loss fuses with the output activation (gradient ``P - Y``)."""

from .backends.contract import LOSS_IDS

ALIASES = {
    "mean_squared_error": "mse",
    "bce": "binary_crossentropy",
    "cce": "categorical_crossentropy",
}
# Cross-entropies read the outputs as probabilities: other output activations would give NaN.
PROBABILITY_OUTPUTS = {"sigmoid", "softmax"}
# (loss, output activation) pairs whose gradient w.r.t. the pre-activation is simply P - Y.
FUSED = {
    ("binary_crossentropy", "sigmoid"),
    ("categorical_crossentropy", "softmax"),
    ("sparse_categorical_crossentropy", "softmax"),
}


def get(identifier: str) -> str:
    """Return the canonical loss name for ``identifier``."""
    name = ALIASES.get(identifier, identifier) if isinstance(identifier, str) else identifier
    if name not in LOSS_IDS:
        raise ValueError(f"loss must be one of {sorted(LOSS_IDS)}, got {identifier!r}")
    return name


def check_output(loss: str, activation: str) -> None:
    """Refuse a cross-entropy on outputs that are not probabilities."""
    if loss != "mse" and activation not in PROBABILITY_OUTPUTS:
        raise ValueError(
            f"loss={loss!r} needs a last layer with activation 'sigmoid' or 'softmax', "
            f"got {activation!r}"
        )
