"""Optimizers: hyperparameters and state here, the update is ONE fused backend kernel call.

Each optimizer is declared once: a class naming its hyperparameters (Keras names and defaults)
and its per-element update formula, ``update(p, g, s0, s1, *COEFS) -> (p, s0, s1)``, on the
effective gradient ``g`` (regularization and clipping applied by the kernel around it) and the
two state slots. The NumPy reference runs the formula on whole segments, Numba and numba.cuda
compile it (``fastbp._formulas``); the C kernels have it in ``src_c/_optim.h``. Adding an
optimizer: a class and its formula here, its branch in ``_optim.h``.
"""

from collections.abc import Callable

import numpy as np

from ._formulas import flush, sqrt

# Field order of the float64 ``hyper`` vector every backend's optimizer_step reads.
HYPER = (
    "learning_rate",
    "beta_1",
    "beta_2",
    "epsilon",
    "weight_decay",
    "momentum",
    "nesterov",
    "rho",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "epsilon_hat",
)


def hyper_vector(**values: float) -> np.ndarray:
    """Pack named hyperparameters into the float64 vector ``optimizer_step`` reads (0 if unset)."""
    unknown = set(values) - set(HYPER)
    if unknown:
        raise TypeError(f"unknown hyperparameters {sorted(unknown)}; expected names in {HYPER}")
    return np.array([float(values.get(k) or 0.0) for k in HYPER], dtype=np.float64)


#: The per-step coefficients every update formula receives after (p, g, s0, s1), computed from
#: the hyper vector and the step number t by :func:`step_coefficients`.
COEFS = "lr, mom, nesterov, rho, b1, b2, eps, step, ibc2, decay, tiny"


def step_coefficients(h, t: float, dt) -> tuple:
    """The COEFS for hyper vector ``h`` (contract.HYPER order) at step ``t``, in dtype ``dt``
    (``nesterov`` a bool, ``tiny`` the smallest normal number). Adam's bias corrections:
    step = lr/(1−β₁ᵗ), ibc2 = 1/√(1−β₂ᵗ) (1 where β = 0); with ``epsilon_hat`` (ε added to the
    uncorrected √v) step = lr·√(1−β₂ᵗ)/(1−β₁ᵗ), ibc2 = 1; AdamW's decay = 1 − lr·wd."""
    lr = h[0]
    if h[11]:
        step, ibc2 = lr * np.sqrt(1 - h[2] ** t) / (1 - h[1] ** t), 1.0
    else:
        step, ibc2 = lr / (1 - h[1] ** t), 1 / np.sqrt(1 - h[2] ** t)
    return (
        dt(lr),
        dt(h[5]),
        h[6] != 0,
        dt(h[7]),
        dt(h[1]),
        dt(h[2]),
        dt(h[3]),
        dt(step),
        dt(ibc2),
        dt(1.0 - lr * h[4]),
        dt(np.finfo(dt).tiny),
    )


# -- update formulas (see the module docstring); state below the smallest normal number is 0 --
def sgd_update(p, g, s0, s1, lr, mom, nesterov, rho, b1, b2, eps, step, ibc2, decay, tiny):
    """Keras' SGD: v = μv − lr·g; p += v (Nesterov: p += μv − lr·g); μ = 0: p −= lr·g."""
    if mom == 0:
        return p - lr * g, s0, s1
    v = flush(mom * s0 - lr * g, tiny)
    return p + (mom * v - lr * g if nesterov else v), v, s1


def rmsprop_update(p, g, s0, s1, lr, mom, nesterov, rho, b1, b2, eps, step, ibc2, decay, tiny):
    """Keras' RMSprop: ms = ρ·ms + (1−ρ)·g²; inc = lr·g/√(ms+ε); p −= inc (with momentum:
    buf = μ·buf + inc; p −= buf)."""
    ms = flush(rho * s0 + (1 - rho) * g * g, tiny)
    inc = lr * g / sqrt(ms + eps)
    if mom > 0:
        buf = flush(mom * s1 + inc, tiny)
        return p - buf, ms, buf
    return p - inc, ms, s1


def adam_update(p, g, s0, s1, lr, mom, nesterov, rho, b1, b2, eps, step, ibc2, decay, tiny):
    """Adam (Kingma & Ba; ε added to √v̂ as PyTorch): m = β₁m + (1−β₁)g; v = β₂v + (1−β₂)g²;
    p −= step·m/(√v·ibc2 + ε)."""
    m = flush(b1 * s0 + (1 - b1) * g, tiny)
    v = flush(b2 * s1 + (1 - b2) * g * g, tiny)
    return p - step * m / (sqrt(v) * ibc2 + eps), m, v


def adamw_update(p, g, s0, s1, lr, mom, nesterov, rho, b1, b2, eps, step, ibc2, decay, tiny):
    """AdamW: p ·= 1 − lr·wd, then Adam's step."""
    q = flush(p * decay, tiny)
    m = flush(b1 * s0 + (1 - b1) * g, tiny)
    v = flush(b2 * s1 + (1 - b2) * g * g, tiny)
    return q - step * m / (sqrt(v) * ibc2 + eps), m, v


def adagrad_update(p, g, s0, s1, lr, mom, nesterov, rho, b1, b2, eps, step, ibc2, decay, tiny):
    """Keras' Adagrad: acc += g²; p −= lr·g/√(acc + ε)."""
    acc = s0 + g * g
    return p - lr * g / sqrt(acc + eps), acc, s1


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
    update: Callable  # the per-element formula (module docstring)
    # rows of ``state`` that hold sums of squares (>= 0: the update takes their square root)
    squares: tuple[int, ...] = ()

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

    def check_state(self, state: np.ndarray) -> None:
        """Raise ValueError where ``state`` (shaped as ``self.state``) is not one this
        optimizer can reach: a NaN or inf, a negative sum of squares."""
        if not np.isfinite(state).all():
            raise ValueError("optimizer_state contains NaN or inf")
        for row in self.squares:
            if (state[row] < 0).any():
                raise ValueError(
                    f"optimizer_state row {row} ({type(self).__name__}'s sums of squares) "
                    "must be >= 0"
                )

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

    kind = 0
    update = staticmethod(sgd_update)

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

    squares = (0,)
    kind = 1
    update = staticmethod(rmsprop_update)

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, **clip):
        super().__init__(learning_rate, **clip)
        self._set("rho", rho, strict=False)
        self._set("momentum", momentum, strict=False)
        self._set("epsilon", epsilon)
        if not (self._values["rho"] < 1 and self._values["momentum"] < 1):
            raise ValueError("rho and momentum must be < 1")


class Adam(Optimizer):
    """``m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ); p −= lr·m̂ / (√v̂ + ε)`` (Kingma & Ba, Algorithm 1, as
    PyTorch); ``epsilon_hat=True``: ``p −= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`` (the paper's ε̂
    form, scikit-learn's and Keras' Adam: ε added to the uncorrected √v)."""

    squares = (1,)
    kind = 2
    update = staticmethod(adam_update)

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        epsilon_hat=False,
        **clip,
    ):
        super().__init__(learning_rate, **clip)
        self._set("beta_1", beta_1, strict=False)
        self._set("beta_2", beta_2, strict=False)
        self._set("epsilon", epsilon)
        if epsilon_hat:  # (absent from the config where False, as files written before it)
            self._values["epsilon_hat"] = True
            self._hyper[...] = self.hyper()
        if not (self._values["beta_1"] < 1 and self._values["beta_2"] < 1):
            raise ValueError(f"beta_1 and beta_2 must be in [0, 1), got {beta_1!r}, {beta_2!r}")


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p −= lr·wd·p`` before the Adam step."""

    kind = 3
    update = staticmethod(adamw_update)

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


class Adagrad(Optimizer):
    """``acc += g²; p −= lr·g / √(acc + ε)`` (Keras' Adagrad; ``acc`` starts at
    ``initial_accumulator_value``)."""

    squares = (0,)
    kind = 4
    update = staticmethod(adagrad_update)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **clip):
        super().__init__(learning_rate, **clip)
        self._set("epsilon", epsilon)
        self.initial_accumulator_value = self._checked(
            "initial_accumulator_value", initial_accumulator_value, 0.0, strict=False
        )

    def build(self, n_params: int, dtype) -> None:
        super().build(n_params, dtype)
        self.state[0] = self.initial_accumulator_value

    def get_config(self) -> dict:
        return super().get_config() | {"initial_accumulator_value": self.initial_accumulator_value}


#: name -> class: the one list of optimizers (ids are each class's ``kind``)
OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad}
OPTIMIZER_IDS = {name: cls.kind for name, cls in OPTIMIZERS.items()}
#: id -> per-element update formula
UPDATES = {cls.kind: cls.update for cls in OPTIMIZERS.values()}


def check_kind(kind) -> None:
    """Raise ValueError unless ``kind`` is a registered optimizer id (every backend's edge)."""
    if not isinstance(kind, int | np.integer) or int(kind) not in UPDATES:
        raise ValueError(f"kind must be an optimizer id in {sorted(UPDATES)}, got {kind!r}")


def get(identifier) -> Optimizer:
    """An Optimizer instance, or a name ("sgd", "rmsprop", "adam", "adamw", "adagrad") with
    defaults."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in OPTIMIZERS:
        return OPTIMIZERS[identifier.lower()]()
    raise ValueError(f"optimizer must be an Optimizer or one of {sorted(OPTIMIZERS)}")
