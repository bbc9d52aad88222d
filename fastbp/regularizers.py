"""Kernel regularizers: loss l1·Σ|W| + l2·ΣW², applied inside the fused optimizer kernel."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class L1L2:
    """Penalty ``l1·Σ|W| + l2·ΣW²`` added to the loss (gradient ``l1·sign(W) + 2·l2·W``)."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        for name in ("l1", "l2"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not v >= 0:
                raise ValueError(f"{name} must be a float >= 0, got {v!r}")

    def get_config(self) -> dict:
        return asdict(self)


def L1(l1: float = 0.01) -> L1L2:  # noqa: N802  (Keras' class-like name)
    """Σ|W| penalty with factor ``l1`` (Keras default 0.01)."""
    return L1L2(l1=l1)


def L2(l2: float = 0.01) -> L1L2:  # noqa: N802
    """ΣW² penalty with factor ``l2`` (Keras default 0.01)."""
    return L1L2(l2=l2)


def get(identifier) -> L1L2 | None:
    """None, an L1L2 instance, "l1", "l2", "l1_l2" or a config dict."""
    if identifier is None or isinstance(identifier, L1L2):
        return identifier
    if isinstance(identifier, dict):
        return L1L2(**identifier)
    named = {"l1": L1, "l2": L2, "l1_l2": lambda: L1L2(0.01, 0.01)}
    if identifier not in named:
        raise ValueError(f"kernel_regularizer must be None, an L1L2 or one of {sorted(named)}")
    return named[identifier]()
