"""scikit-learn estimators trained by fastbp's kernels: MLPClassifier and MLPRegressor.

They are scikit-learn's own ``sklearn.neural_network`` estimators (subclasses: the same
parameters, validation, error messages, attributes, random draws, stopping rules, solvers
"adam", "sgd" and "lbfgs", ``sample_weight``, sparse input, ``partial_fit``, ``warm_start``)
with fastbp doing the numerical work, plus a ``backend`` parameter:

- every gradient (scikit-learn's ``_backprop``: each mini-batch of "sgd"/"adam", each loss and
  gradient evaluation of "lbfgs") and every prediction run on fastbp's kernels, with
  scikit-learn's formulas: the same numbers up to rounding;
- "adam" and "sgd" with a constant learning rate and without ``sample_weight`` (dense or, on
  the cython backend, CSR/CSC input; not several regression outputs) train whole epochs inside
  fastbp's compiled loop instead (:meth:`_fit_compiled`), with scikit-learn's draws and
  formulas: the same initial weights and shuffles (from ``random_state``), its Adam (ε on the
  uncorrected √v: ``Adam(epsilon_hat=True)``), its L2 penalty divided by each batch's rows
  (``Sequential.penalty_per_row``), its gradient scale (its squared loss halved and summed over
  outputs, its binary log-loss summed over labels: :meth:`_output_loss`);
- "lbfgs" without ``sample_weight`` on dense input: each of SciPy's evaluations is one compiled
  full-batch pass (:meth:`_fit_lbfgs`).
"""

from __future__ import annotations

import inspect

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.neural_network._base import LOSS_FUNCTIONS
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.utils._param_validation import StrOptions

try:  # (scikit-learn's own spelling of SciPy's iprint option, where it has one)
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:

    def _get_additional_lbfgs_options_dict(key, value):
        return {key: value}


from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import validate_data

from . import backends, layers, optimizers, regularizers
from .backends.contract import ACTIVATION_IDS, LINEAR
from .callbacks import Callback
from .model import Sequential

#: scikit-learn's activation names -> fastbp's
ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
OUTPUTS = {**ACTIVATIONS, "softmax": "softmax"}
BACKENDS = ("cython", "numba", "numpy")


class _SklearnStopping(Callback):
    """scikit-learn's rule for the compiled path: stop after ``n_iter_no_change`` epochs
    without a ``tol`` gain in training loss (or in validation score with early stopping);
    records loss_curve_ etc. as scikit-learn's ``_fit_stochastic`` does."""

    def __init__(self, est, scale, validation):
        self.est, self.scale, self.validation = est, scale, validation

    def epochs_ahead(self) -> int:
        """Epochs that certainly end without a stop (each adds at most 1 to the count, which
        must exceed n_iter_no_change): fit runs them in one compiled call. None where each
        epoch prints or is scored on the validation set."""
        est = self.est
        if self.validation is not None or est.verbose:
            return 0
        return max(0, int(est.n_iter_no_change) - est._no_improvement_count)

    def on_epoch_end(self, epoch, logs=None):
        est = self.est
        loss = logs["loss"] * self.scale
        est.loss_curve_.append(loss)
        est.loss_ = loss
        est.n_iter_ += 1
        est.t_ += est._n_seen
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            est._store(self.model)
            score = est._score(*self.validation)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_coefs = [c.copy() for c in est.coefs_]
                est._best_intercepts = [b.copy() for b in est.intercepts_]
        else:
            improved = loss <= est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        if est._no_improvement_count > est.n_iter_no_change:
            if est.verbose:
                what = "Validation score" if self.validation is not None else "Training loss"
                print(
                    f"{what} did not improve more than tol={est.tol:f} for "
                    f"{est.n_iter_no_change} consecutive epochs. Stopping."
                )
            self.model.stop_training = True
            est._stopped = True


class _FastbpMLP:
    """What fastbp changes in scikit-learn's BaseMultilayerPerceptron (a mixin placed before
    it): the backprop and the forward pass on fastbp's kernels, and compiled epochs."""

    # -- the numerical core ------------------------------------------------------------------
    def _kernels(self):
        return backends.get(self.backend)

    def _on_kernels(self, X) -> bool:
        """Can fastbp's kernels take this batch and model? (dense input, an output activation
        fastbp has: scikit-learn's Poisson 'exp' output runs in scikit-learn's code)."""
        return not sp.issparse(X) and self.out_activation_ in OUTPUTS

    def _layer_acts(self) -> list[int]:
        hidden = ACTIVATION_IDS[ACTIVATIONS[self.activation]]
        return [hidden] * (self.n_layers_ - 2) + [ACTIVATION_IDS[OUTPUTS[self.out_activation_]]]

    def _forward(self, X, activations=None) -> np.ndarray:
        """Forward pass on the kernels; fills ``activations[1:]`` where given."""
        be, A = self._kernels(), np.ascontiguousarray(X)
        for i, (W, b, act) in enumerate(
            zip(self.coefs_, self.intercepts_, self._layer_acts(), strict=True)
        ):
            out = np.empty((A.shape[0], W.shape[1]), dtype=W.dtype)
            be.dense_forward(A, np.ascontiguousarray(W), b, act, 0.0, out, None)
            A = out
            if activations is not None:
                activations[i + 1] = A
        return A

    def _forward_pass_fast(self, X, check_input=True):
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        if not self._on_kernels(X) or X.dtype != self.coefs_[0].dtype:
            return super()._forward_pass_fast(X, check_input=False)
        return self._forward(X)

    def _backprop(self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads):
        """scikit-learn's loss and gradient (its formulas: L2 term ``alpha·W / Σ weights``,
        ``δ_out = (P − y)·weight``), the products and derivatives on fastbp's kernels. The
        gradients are written into ``coef_grads`` / ``intercept_grads`` in place."""
        if not self._on_kernels(X) or X.dtype != self.coefs_[0].dtype:
            return super()._backprop(
                X, y, sample_weight, activations, deltas, coef_grads, intercept_grads
            )
        be = self._kernels()
        X = np.ascontiguousarray(X)
        activations[0] = X
        P = self._forward(X, activations)
        name = self.loss
        if name == "log_loss" and self.out_activation_ == "logistic":
            name = "binary_log_loss"
        loss = LOSS_FUNCTIONS[name](y, P, sample_weight)
        sw_sum = X.shape[0] if sample_weight is None else sample_weight.sum()
        loss += (0.5 * self.alpha) * sum(np.dot(c.ravel(), c.ravel()) for c in self.coefs_) / sw_sum
        delta = P - y
        if sample_weight is not None:
            delta *= sample_weight.reshape(-1, 1)
        acts = self._layer_acts()
        for i in range(self.n_layers_ - 2, -1, -1):
            W = np.ascontiguousarray(self.coefs_[i])
            below = np.empty_like(activations[i]) if i > 0 else None
            dW, db = _writable(coef_grads, i, W), _writable(intercept_grads, i, self.intercepts_[i])
            act = LINEAR if i == self.n_layers_ - 2 else acts[i]
            be.dense_backward(activations[i], W, activations[i + 1], delta, act, 0.0, dW, db, below)
            deltas[i] = delta
            dW += self.alpha * W
            dW /= sw_sum
            db /= sw_sum
            delta = below
        return loss, coef_grads, intercept_grads

    # -- L-BFGS on compiled full-batch passes ------------------------------------------------
    def _fit_lbfgs(
        self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads, layer_units
    ):
        """scikit-learn's lbfgs (SciPy's L-BFGS-B, its options, its result checks) where each
        loss and gradient evaluation is one compiled pass over fastbp's flat buffers (the
        gradient in scikit-learn's units, the loss its formula on the outputs)."""
        if not (
            sample_weight is None
            and self._on_kernels(X)
            and X.dtype == self.coefs_[0].dtype
            and hasattr(self._kernels(), "loss_grad")
        ):
            self.__dict__.pop("_model", None)
            return super()._fit_lbfgs(
                X, y, sample_weight, activations, deltas, coef_grads, intercept_grads,
                layer_units,
            )  # fmt: skip
        # scikit-learn's bookkeeping for _unpack / _loss_grad_lbfgs (its packed order)
        self._coef_indptr, self._intercept_indptr, start = [], [], 0
        for i in range(self.n_layers_ - 1):
            shape = (layer_units[i], layer_units[i + 1])
            self._coef_indptr.append((start, start + shape[0] * shape[1], shape))
            start += shape[0] * shape[1]
        for i in range(self.n_layers_ - 1):
            self._intercept_indptr.append((start, start + layer_units[i + 1]))
            start += layer_units[i + 1]
        model = self._model = self._build(X.dtype)
        n = X.shape[0]
        model.ensure_capacity(n, X.shape[1:])
        plan, be = model.executor.plan(), model.backend
        X = np.ascontiguousarray(X)
        Y = np.ascontiguousarray(y, dtype=X.dtype)
        params, grads = model.store.params, model.store.grads
        Ws = [la.W for la in model.layers]
        P = model.layers[-1].A[:n]
        _, scale = self._output_loss()
        name = "binary_log_loss" if self.out_activation_ == "logistic" else self.loss

        def fun(x):
            params[...] = x
            be.loss_grad(plan, X, Y, None)
            loss = LOSS_FUNCTIONS[name](y, P)
            loss += (0.5 * self.alpha) * sum(np.dot(w.ravel(), w.ravel()) for w in Ws) / n
            return loss, grads * scale

        iprint = 1 if self.verbose is True or self.verbose >= 1 else -1
        opt_res = scipy.optimize.minimize(
            fun,
            params.copy(),
            method="L-BFGS-B",
            jac=True,
            options={
                "maxfun": self.max_fun,
                "maxiter": self.max_iter,
                "gtol": self.tol,
                **_get_additional_lbfgs_options_dict("iprint", iprint),
            },
        )
        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = opt_res.fun
        params[...] = opt_res.x
        self._store(model)

    # -- compiled epochs -----------------------------------------------------------------------
    def _fit_stochastic(
        self,
        X,
        y,
        sample_weight,
        activations,
        deltas,
        coef_grads,
        intercept_grads,
        layer_units,
        incremental,
    ):
        if (
            sample_weight is None
            and self.learning_rate == "constant"
            and self.out_activation_ in OUTPUTS
            # (several regression outputs: scikit-learn's loss halves their mean, its gradient
            # their sum, which one fastbp loss cannot report both of: its loop, exact)
            and not (self.out_activation_ == "identity" and self.n_outputs_ > 1)
            and (not sp.issparse(X) or self.backend == "cython")  # (CSR: compiled products)
            and X.dtype == self.coefs_[0].dtype
            and np.isfinite(self.n_iter_no_change)
            and self.backend != "numba"  # (numba: kernels only, its loop is Python's)
        ):
            return self._fit_compiled(X, y, incremental)
        self.__dict__.pop("_model", None)  # scikit-learn's optimizer owns the state now
        return super()._fit_stochastic(
            X,
            y,
            sample_weight,
            activations,
            deltas,
            coef_grads,
            intercept_grads,
            layer_units,
            incremental,
        )

    def _output_loss(self) -> tuple[str, float]:
        """fastbp's loss for this model and the scale from its gradient to scikit-learn's."""
        if self.out_activation_ == "softmax":
            return "categorical_crossentropy", 1.0
        if self.out_activation_ == "logistic":  # summed over labels in scikit-learn's
            return "binary_crossentropy", float(self.n_outputs_)
        # scikit-learn's gradient of (1/2)·Σ_outputs (p - y)² / batch is n_outputs/2 times
        # fastbp's mse gradient 2·(p - y) / (batch · n_outputs)
        return "mse", self.n_outputs_ / 2.0

    def _build(self, dtype) -> Sequential:
        """A Sequential holding coefs_ / intercepts_, compiled with this estimator's optimizer
        (fresh state) in fastbp's units."""
        loss, scale = self._output_loss()
        l2 = self.alpha / (2.0 * scale)  # loss (α/2)·ΣW²/rows, in fastbp's units (per row)
        reg = regularizers.L2(l2) if l2 > 0 else None
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        acts = [ACTIVATIONS[self.activation]] * (len(sizes) - 2) + [OUTPUTS[self.out_activation_]]
        stack = [
            layers.Dense(n, a, kernel_regularizer=reg, input_dim=sizes[0] if i == 0 else None)
            for i, (n, a) in enumerate(zip(sizes[1:], acts, strict=True))
        ]
        model = Sequential(stack, backend=self.backend, dtype=dtype, seed=0)  # (no draws)
        model.penalty_per_row = True
        model.build()
        model.set_weights(
            [w for pair in zip(self.coefs_, self.intercepts_, strict=True) for w in pair]
        )
        # scikit-learn's gradient is `scale` times fastbp's: the same SGD step at scale·lr, the
        # same Adam step (m/scale, √v/scale) with ε/scale
        if self.solver == "adam":
            opt = optimizers.Adam(
                self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon / scale,
                epsilon_hat=True,
            )  # fmt: skip
        else:
            opt = optimizers.SGD(
                self.learning_rate_init * scale,
                self.momentum,
                self.nesterovs_momentum and self.momentum > 0,
            )
        model.compile(opt, loss)
        return model

    def _store(self, model) -> None:
        ws = model.get_weights()
        self.coefs_, self.intercepts_ = ws[0::2], ws[1::2]

    def _fit_compiled(self, X, y, incremental) -> None:
        """scikit-learn's ``_fit_stochastic`` (its attributes, messages and stopping rule) with
        the epochs inside fastbp's compiled loop."""
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation = None
        X_train, y_train = X, y
        if self.early_stopping:  # split as scikit-learn does (the same draws)
            strat = y if self._is_classifier() and self.n_outputs_ == 1 else None
            X_train, X_val, y_train, y_val = train_test_split(
                X, y, random_state=self._random_state, test_size=self.validation_fraction,
                stratify=strat,
            )  # fmt: skip
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            if self._is_classifier():
                y_val = self._label_binarizer.inverse_transform(y_val)
            validation = (X_val, y_val)
        n = X_train.shape[0]
        if self.batch_size == "auto":
            bs = min(200, n)
        else:
            if self.batch_size > n:
                import warnings

                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to "
                    "be clipped",
                    stacklevel=4,
                )
            bs = int(np.clip(self.batch_size, 1, n))
        model = getattr(self, "_model", None)
        keep = incremental and model is not None
        if keep:  # partial_fit continues with the optimizer state of the previous call
            model.set_weights(
                [w for pair in zip(self.coefs_, self.intercepts_, strict=True) for w in pair]
            )
        else:
            model = self._model = self._build(X.dtype)
        # each epoch's order as scikit-learn draws it: its shuffle of the previous order
        # (sklearn.utils.shuffle: the previous order indexed by a RandomState-shuffled arange)
        box = {"idx": np.arange(n, dtype=np.int64)}

        def orders(k):
            perm = np.arange(k)
            self._random_state.shuffle(perm)
            box["idx"] = box["idx"][perm]
            return box["idx"]

        model.shuffle_orders = orders
        _, scale = self._output_loss()
        self._n_seen, self._stopped = n, False
        stop = _SklearnStopping(self, scale, validation)
        epochs = 1 if incremental else self.max_iter
        target = np.ascontiguousarray(y_train, dtype=X.dtype)
        self.n_iter_ = 0
        try:
            model.fit(
                X_train, target, batch_size=bs, epochs=epochs, shuffle=self.shuffle, verbose=0,
                callbacks=[stop],
            )  # fmt: skip
        except KeyboardInterrupt:  # as scikit-learn: the model of the last finished step
            import warnings

            warnings.warn("Training interrupted by user.", stacklevel=4)
        self._store(model)
        if not keep:  # scikit-learn's optimizer object, for its attributes (learning_rate)
            params = self.coefs_ + self.intercepts_
            if self.solver == "sgd":
                self._optimizer = SGDOptimizer(
                    params, self.learning_rate_init, self.learning_rate, self.momentum,
                    self.nesterovs_momentum, self.power_t,
                )  # fmt: skip
            else:
                self._optimizer = AdamOptimizer(
                    params, self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon
                )
        if validation is not None:  # the best weights, as scikit-learn restores them
            self.coefs_, self.intercepts_ = self._best_coefs, self._best_intercepts
        if not incremental and not self._stopped and self.n_iter_ == self.max_iter:
            import warnings

            from sklearn.exceptions import ConvergenceWarning

            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _is_classifier(self) -> bool:
        return hasattr(self, "_label_binarizer")

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_model", None)  # compiled plans and backend modules do not pickle
        return state


def _writable(grads: list, i: int, like: np.ndarray) -> np.ndarray:
    """grads[i] as a C-contiguous array of like's shape and dtype (replaced where it is not)."""
    g = grads[i]
    if (
        not isinstance(g, np.ndarray)
        or g.shape != like.shape
        or g.dtype != like.dtype
        or not g.flags.c_contiguous
        or not g.flags.writeable
    ):
        g = grads[i] = np.empty(like.shape, like.dtype)
    return g


def _constraints(base) -> dict:
    return {**base._parameter_constraints, "backend": [StrOptions(set(BACKENDS))]}


def _init_with_backend(base):
    """``base.__init__`` with one more keyword, ``backend``, in its signature (scikit-learn
    reads an estimator's parameters from the signature)."""
    sig = inspect.signature(base.__init__)
    extra = inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default="cython")

    def __init__(self, *args, backend="cython", **kwargs):
        base.__init__(self, *args, **kwargs)
        self.backend = backend

    __init__.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])
    return __init__


class MLPClassifier(_FastbpMLP, _SkMLPClassifier):
    """scikit-learn's ``MLPClassifier`` with fastbp's kernels and compiled epochs.

    Parameters are scikit-learn's, plus ``backend`` ("cython": compiled kernels and epochs;
    "numba"; "numpy": the NumPy reference kernels).
    """

    _parameter_constraints = _constraints(_SkMLPClassifier)
    __init__ = _init_with_backend(_SkMLPClassifier)


class MLPRegressor(_FastbpMLP, _SkMLPRegressor):
    """scikit-learn's ``MLPRegressor`` with fastbp's kernels and compiled epochs.

    Parameters are scikit-learn's, plus ``backend``. ``loss="poisson"`` (an exponential
    output) runs in scikit-learn's own code.
    """

    _parameter_constraints = _constraints(_SkMLPRegressor)
    __init__ = _init_with_backend(_SkMLPRegressor)


__all__ = ["MLPClassifier", "MLPRegressor"]
