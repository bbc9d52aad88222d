"""Metrics by name: ONE table of what ``compile(metrics=[...])`` accepts.

``accuracy`` counts the rows predicted right (the contract's ``count_correct`` kernels): the
threshold 0.5 for one output unit, the argmax otherwise (against labels for the sparse loss).
"""

#: name or alias -> canonical name
METRICS = {"accuracy": "accuracy", "acc": "accuracy"}


def get(identifier) -> str:
    """The canonical metric name for ``identifier``."""
    if not isinstance(identifier, str) or identifier not in METRICS:
        raise ValueError(f"metrics must be a list of {sorted(METRICS)}, got {identifier!r}")
    return METRICS[identifier]
