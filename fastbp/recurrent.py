"""Recurrent layers: SimpleRNN, LSTM, GRU on ``(batch, timesteps, features)``.

One kernel call runs the whole sequence forward, one runs backpropagation through time (see
``fastbp/backends/reference_rnn.py`` for the math and the time-major workspace layout). Weights
are Keras': ``kernel`` (features, g·units), ``recurrent_kernel`` (units, g·units) and ``bias``,
with g gate blocks side by side — [i f c o] for LSTM, [z r h] for GRU.

PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` hold the same numbers transposed:
``weight_ih_l0 = kernel.T``, ``weight_hh_l0 = recurrent_kernel.T``, ``bias_ih_l0 = bias`` and
``bias_hh_l0 = 0`` (SimpleRNN, LSTM). GRU: PyTorch orders the gates [r z n] instead of Keras'
[z r h], so the columns are permuted as ``[units:2·units, 0:units, 2·units:]``, and its two biases
are the rows of Keras' ``bias`` (2, 3·units) (``reset_after=True``: the reset gate multiplies
``h·Wh_h + b_h`` after the matrix product, as in PyTorch and cuDNN).
"""

import numpy as np

from . import activations, initializers, regularizers
from .backends.contract import ACTIVATION_IDS
from .base_layer import Layer, head


class _Recurrent(Layer):
    """Shared by the three cells; subclasses set ``gates`` and the two kernel calls."""

    gates = 1
    activation = "tanh"  # what the outputs look like to a loss (LSTM, GRU: o⊙tanh, convex mix)

    def __init__(
        self,
        units,
        return_sequences=False,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bptt_steps=None,
        input_shape=None,
        input_dim=None,
        trainable=True,
        name=None,
    ):
        super().__init__(
            name=name, trainable=trainable, input_dim=input_dim, input_shape=input_shape
        )
        if isinstance(units, bool) or int(units) != units or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}")
        if bptt_steps is not None and (
            isinstance(bptt_steps, bool) or not isinstance(bptt_steps, int) or bptt_steps < 1
        ):
            raise ValueError(f"bptt_steps must be a positive int or None, got {bptt_steps!r}")
        if self.input_shape is not None and len(self.input_shape) != 2:
            raise ValueError(
                f"{type(self).__name__} input_shape must be (timesteps, features), "
                f"got {self.input_shape}"
            )
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        for init in (kernel_initializer, recurrent_initializer, bias_initializer):
            initializers.get(init)  # validate now
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bptt_steps = bptt_steps

    # -- building -----------------------------------------------------------------------------
    def _bias_shape(self) -> tuple:
        return (self.gates * self.units,)

    def param_shapes(self, n_in):
        g = self.gates * self.units
        shapes = [(n_in, g), (self.units, g)]
        return shapes + [self._bias_shape()] if self.use_bias else shapes

    def output_dim(self, n_in):
        return self.units

    def output_shape(self, in_shape):
        if len(in_shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expects 3-D input (batch, timesteps, features), got "
                f"{len(in_shape) + 1}-D input with {in_shape[-1]} features per sample"
            )
        return (in_shape[0], self.units) if self.return_sequences else (self.units,)

    def bind(self, n_in, params, grads, offset):
        offset = super().bind(n_in, params, grads, offset)
        self.Wx, self.Wh = self.params[:2]
        self.dWx, self.dWh = self.grads[:2]
        self.b = self.params[2] if self.use_bias else None
        self.db = self.grads[2] if self.use_bias else None
        return offset

    def initialize(self, rng):
        self.Wx[...] = initializers.get(self.kernel_initializer)(self.Wx.shape, rng)
        self.Wh[...] = initializers.get(self.recurrent_initializer)(self.Wh.shape, rng)
        if self.use_bias:
            self.b[...] = initializers.get(self.bias_initializer)(self.b.shape, rng)

    def regularizers(self):
        regs = [self.kernel_regularizer, self.recurrent_regularizer]
        return regs + [None] if self.use_bias else regs

    # -- workspaces ---------------------------------------------------------------------------
    #: (name, blocks of units per row or "F" for features, leading dims: "T", "T+1" or "") of the
    #: time-major workspaces; flat so that the first m samples are a contiguous prefix.
    _WORKSPACES: tuple = ()

    def allocate(self, capacity, dtype, in_shape):
        self.output_shape(in_shape)  # refuses a non-sequence input
        self.T = in_shape[0]
        shape = (capacity, self.T, self.units) if self.return_sequences else (capacity, self.units)
        self.A, self.dA = self._alloc(shape, dtype), self._alloc(shape, dtype)
        self._flat = {}
        for name, width, lead in self._WORKSPACES:
            steps = {"T": self.T, "T+1": self.T + 1, "": 1}[lead]
            cols = self.n_in if width == "F" else width * self.units
            self._flat[name] = (self._alloc(steps * capacity * cols, dtype), lead, steps, cols)

    def _ws(self, m: int) -> dict:
        """Views of the workspaces for a batch of m samples: (steps, m, cols) or (m, cols)."""
        out = {}
        for name, (buf, lead, steps, cols) in self._flat.items():
            view = buf[: steps * m * cols]
            out[name] = view.reshape(m, cols) if lead == "" else view.reshape(steps, m, cols)
        return out

    def get_config(self):
        return super().get_config() | {
            "units": self.units,
            "return_sequences": self.return_sequences,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "recurrent_initializer": self.recurrent_initializer,
            "bias_initializer": self.bias_initializer,
            "kernel_regularizer": _reg_config(self.kernel_regularizer),
            "recurrent_regularizer": _reg_config(self.recurrent_regularizer),
            "bptt_steps": self.bptt_steps,
        }


def _reg_config(reg):
    return None if reg is None else reg.get_config()


def _out2d(a: np.ndarray, m: int) -> np.ndarray:
    """The first m samples of an output workspace as the kernels' 2-D (m, T·n or n) view."""
    return a[:m].reshape(m, a[:m].size // m)


class SimpleRNN(_Recurrent):
    """Fully connected recurrence ``h_t = act(x_t·Wx + h_{t−1}·Wh + b)``, h_{−1} = 0.

    Parameters
    ----------
    units : int
        Hidden state width n.
    activation : str
        tanh (default), sigmoid, relu, leaky_relu or linear.
    return_sequences : bool
        Output every step's state (batch, timesteps, units), else the last one (batch, units).
    use_bias : bool
    kernel_initializer, recurrent_initializer, bias_initializer : str
        Keras defaults: glorot_uniform, orthogonal, zeros.
    kernel_regularizer, recurrent_regularizer : L1L2, str or None
    bptt_steps : int, optional
        Truncated backpropagation through time: no gradient crosses the boundaries of chunks of
        this many steps (None: the whole sequence).
    input_shape : tuple (timesteps, features), optional
        First layer only; timesteps may be None.
    trainable : bool

    Weights: [kernel (features, units), recurrent_kernel (units, units), bias (units,)].
    """

    _WORKSPACES = (("Xt", "F", "T"), ("H", 1, "T+1"), ("dG", 1, "T"))

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, **kwargs)
        self.activation = activations.get(activation)
        if not activations.REGISTRY[self.activation].recurrent:
            raise ValueError(f"activation={self.activation!r} is not a recurrent activation")
        self.act = ACTIVATION_IDS[self.activation]
        self.alpha = activations.LEAKY_RELU_SLOPE

    def forward(self, backend, X, training=False, step=0):
        m, w = X.shape[0], self._ws(X.shape[0])
        backend.rnn_forward(
            X, self.Wx, self.Wh, self.b, self.act, self.alpha, w["Xt"], w["H"], _out2d(self.A, m)
        )
        return head(self.A, m)

    def backward(self, backend, X, dX, act=None):
        m, w = X.shape[0], self._ws(X.shape[0])
        backend.rnn_backward(
            w["Xt"], self.Wx, self.Wh, w["H"], _out2d(self.dA, m), self.act, self.alpha,
            self.bptt_steps or 0, w["dG"], self.dWx, self.dWh, self.db, dX,
        )  # fmt: skip

    def get_config(self):
        return super().get_config() | {"activation": self.activation}


class LSTM(_Recurrent):
    """Long short-term memory (Keras/PyTorch equations, gates [i f c o]).

    ``i, f, o = σ(·)``, ``g = tanh(·)`` of ``x_t·Wx + h_{t−1}·Wh + b`` per gate block;
    ``c_t = f⊙c_{t−1} + i⊙g``; ``h_t = o⊙tanh(c_t)``; h_{−1} = c_{−1} = 0.

    Parameters are SimpleRNN's (without ``activation``: tanh and σ are fixed) plus
    ``unit_forget_bias`` (True: the forget gate's bias starts at 1, as Keras).
    Weights: [kernel (features, 4·units), recurrent_kernel (units, 4·units), bias (4·units,)].
    """

    gates = 4
    _WORKSPACES = (
        ("Xt", "F", "T"),
        ("H", 1, "T+1"),
        ("C", 1, "T+1"),
        ("G", 4, "T"),
        ("dG", 4, "T"),
        ("dh", 1, ""),
        ("dc", 1, ""),
    )

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def initialize(self, rng):
        super().initialize(rng)
        if self.use_bias and self.unit_forget_bias:
            self.b[self.units : 2 * self.units] = 1

    def forward(self, backend, X, training=False, step=0):
        m, w = X.shape[0], self._ws(X.shape[0])
        backend.lstm_forward(
            X, self.Wx, self.Wh, self.b, w["Xt"], w["H"], w["C"], w["G"], _out2d(self.A, m)
        )
        return head(self.A, m)

    def backward(self, backend, X, dX, act=None):
        m, w = X.shape[0], self._ws(X.shape[0])
        backend.lstm_backward(
            w["Xt"], self.Wx, self.Wh, w["H"], w["C"], w["G"], _out2d(self.dA, m),
            self.bptt_steps or 0, w["dG"], w["dh"], w["dc"], self.dWx, self.dWh, self.db, dX,
        )  # fmt: skip

    def get_config(self):
        return super().get_config() | {"unit_forget_bias": self.unit_forget_bias}


class GRU(_Recurrent):
    """Gated recurrent unit (Keras' default ``reset_after=True``, = PyTorch's GRU), gates [z r h].

    ``z, r = σ(x_t·Wx + b_in + h_{t−1}·Wh + b_rec)`` per gate block;
    ``ĥ = tanh(x_t·Wx_h + b_in_h + r⊙(h_{t−1}·Wh_h + b_rec_h))``; ``h_t = z⊙h_{t−1} + (1 − z)⊙ĥ``.

    Parameters are SimpleRNN's without ``activation``.
    Weights: [kernel (features, 3·units), recurrent_kernel (units, 3·units), bias (2, 3·units)]
    (bias rows: input side, recurrent side).
    """

    gates = 3
    _WORKSPACES = (
        ("Xt", "F", "T"),
        ("H", 1, "T+1"),
        ("G", 3, "T"),
        ("Rh", 1, "T"),
        ("S", 3, ""),
        ("dG", 3, "T"),
        ("dGh", 3, "T"),
        ("dh", 1, ""),
    )

    def _bias_shape(self):
        return (2, 3 * self.units)

    def forward(self, backend, X, training=False, step=0):
        m, w = X.shape[0], self._ws(X.shape[0])
        backend.gru_forward(
            X, self.Wx, self.Wh, self.b, w["Xt"], w["H"], w["G"], w["Rh"], w["S"],
            _out2d(self.A, m),
        )  # fmt: skip
        return head(self.A, m)

    def backward(self, backend, X, dX, act=None):
        m, w = X.shape[0], self._ws(X.shape[0])
        backend.gru_backward(
            w["Xt"], self.Wx, self.Wh, w["H"], w["G"], w["Rh"], _out2d(self.dA, m),
            self.bptt_steps or 0, w["dG"], w["dGh"], w["dh"], self.dWx, self.dWh, self.db, dX,
        )  # fmt: skip
