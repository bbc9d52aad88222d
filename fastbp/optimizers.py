"""Optimizers: hyperparameters and state here, the update is ONE fused backend kernel call.

Each class only names its hyperparameters (Keras names and defaults); the math lives in the
backend's ``optimizer_step`` (src_c/_optim.pxi, and the NumPy oracle in backends/reference.py).
"""

import numpy as np

from .backends.contract import ADAM, ADAMW, OPTIMIZER_IDS, RMSPROP, SGD, hyper_vector


class Optimizer:
    """Base class: clipping options common to all optimizers.

    Parameters
    ----------
    learning_rate : float
        Step size, > 0.
    clipnorm : float, optional
        Clip each variable's gradient (a layer's W, or b) to this L2 norm.
    clipvalue : float, optional
        Clip each gradient element to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float, optional
        Clip the gradient of all variables together to this L2 norm.
    """

    kind: int = -1
    _fields: tuple[str, ...] = ()

    def __init__(self, learning_rate, clipnorm=None, clipvalue=None, global_clipnorm=None):
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError("set at most one of clipnorm and global_clipnorm")
        self._values = {}
        self.learning_rate = learning_rate
        for name, value in (
            ("clipnorm", clipnorm),
            ("clipvalue", clipvalue),
            ("global_clipnorm", global_clipnorm),
        ):
            self._set(name, value, allow_none=True)
        self.iterations = 0
        self.state = None  # (2, n_params) array, allocated by build()

    def _set(self, name, value, allow_none=False, low=0.0, strict=True):
        if value is None and allow_none:
            self._values[name] = None
        else:
            self._values[name] = self._checked(name, value, low, strict)
        # the vector the kernel reads is rebuilt here, on change, never per step; in place, as
        # compiled training plans hold a pointer to it
        if hasattr(self, "_hyper"):
            self._hyper[...] = hyper_vector(**self._values)
        else:
            self._hyper = hyper_vector(**self._values)

    @staticmethod
    def _checked(name, value, low, strict) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise TypeError(f"{name} must be a float, got {value!r}")
        if not (value > low if strict else value >= low) or not np.isfinite(value):
            raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
        return float(value)

    @property
    def learning_rate(self) -> float:
        return self._values["learning_rate"]

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._set("learning_rate", value)

    def hyper(self) -> np.ndarray:
        """The float64 vector ``optimizer_step`` reads (see contract.HYPER)."""
        return hyper_vector(**self._values)

    def build(self, n_params: int, dtype) -> None:
        """Allocate zeroed state for a flat buffer of ``n_params`` parameters."""
        self.state = np.zeros((2, n_params), dtype=dtype)
        self.iterations = 0

    def step(self, backend, params, grads, segments, seg_reg) -> None:
        """One fused update of ``params`` (n,) from ``grads`` (n,) over the trainable segments."""
        self.iterations += 1
        backend.optimizer_step(
            self.kind, params, grads, self.state, self._hyper, self.iterations, segments, seg_reg
        )

    def get_config(self) -> dict:
        return {k: v for k, v in self._values.items() if v is not None}

    @classmethod
    def from_config(cls, config: dict) -> "Optimizer":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``v = μ·v − lr·g; p += v`` (Nesterov: ``p += μ·v − lr·g``); plain ``p −= lr·g`` if μ = 0."""

    kind = SGD

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **clip):
        super().__init__(learning_rate, **clip)
        self._set("momentum", momentum, low=0.0, strict=False)
        if self._values["momentum"] >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self._values["nesterov"] = bool(nesterov)
        self._hyper[...] = self.hyper()

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["nesterov"] = bool(cfg["nesterov"])
        return cfg


class RMSprop(Optimizer):
    """``v = ρ·v + (1−ρ)·g²; p −= lr·g / √(v + ε)`` (with momentum on that increment)."""

    kind = RMSPROP

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, **clip):
        super().__init__(learning_rate, **clip)
        self._set("rho", rho, strict=False)
        self._set("momentum", momentum, strict=False)
        self._set("epsilon", epsilon)
        if not (self._values["rho"] < 1 and self._values["momentum"] < 1):
            raise ValueError("rho and momentum must be < 1")


class Adam(Optimizer):
    """``m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ); p −= lr·m̂ / (√v̂ + ε)`` (Kingma & Ba, Algorithm 1)."""

    kind = ADAM

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **clip):
        super().__init__(learning_rate, **clip)
        self._set("beta_1", beta_1, strict=False)
        self._set("beta_2", beta_2, strict=False)
        self._set("epsilon", epsilon)
        if not (self._values["beta_1"] < 1 and self._values["beta_2"] < 1):
            raise ValueError(f"beta_1 and beta_2 must be in [0, 1), got {beta_1!r}, {beta_2!r}")


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p −= lr·wd·p`` before the Adam step."""

    kind = ADAMW

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        **clip,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **clip)
        self._set("weight_decay", weight_decay, strict=False)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
assert set(OPTIMIZERS) == set(OPTIMIZER_IDS) and ADAM != ADAMW


def get(identifier) -> Optimizer:
    """An Optimizer instance, or a name ("sgd", "rmsprop", "adam", "adamw") with defaults."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in OPTIMIZERS:
        return OPTIMIZERS[identifier.lower()]()
    raise ValueError(f"optimizer must be an Optimizer or one of {sorted(OPTIMIZERS)}")
