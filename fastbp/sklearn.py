"""scikit-learn estimators trained by fastbp's kernels: MLPClassifier and MLPRegressor.

Same parameters, attributes and stopping rules as ``sklearn.neural_network``'s MLPs (solvers
"adam" and "sgd", constant learning rate), plus ``backend``. Differences, kept on purpose:
Adam adds ``epsilon`` to the bias-corrected √v̂ (PyTorch / Kingma & Ba) where scikit-learn adds it
to √v; the L2 penalty of the last, smaller mini-batch of an epoch is scaled by the full
``batch_size``. Gradients are scaled as scikit-learn's: its squared loss is halved and summed over
outputs, its binary log-loss summed over labels (see ``_scale``).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import layers, optimizers, regularizers
from .callbacks import Callback
from .model import Sequential

ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
OUTPUTS = {**ACTIVATIONS, "softmax": "softmax"}


class _SklearnStopping(Callback):
    """scikit-learn's rule: stop after ``n_iter_no_change`` epochs without a ``tol`` gain in
    training loss (or in validation score with early stopping); record loss_curve_ etc."""

    def __init__(self, est, scale, validation):
        self.est, self.scale, self.validation = est, scale, validation

    def on_epoch_end(self, epoch, logs=None):
        est = self.est
        loss = logs["loss"] * self.scale
        est.loss_curve_.append(loss)
        est.n_iter_ += 1
        est.t_ += est._n_seen
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            est._store(self.model)
            score = est.score(*self.validation)
            est.validation_scores_.append(score)
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best = self.model.get_weights()
        else:
            improved = loss <= est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        if est._no_improvement_count > est.n_iter_no_change:
            self.model.stop_training = True
            est._stopped = True


def _seed(random_state) -> int | None:
    """fastbp's seed for scikit-learn's ``random_state``: None stays None (fresh entropy), an
    int is the seed (scikit-learn's range, 0 to 2**32 - 1), a RandomState gives a draw (and
    moves on, as scikit-learn's estimators make it). An int is not turned into a RandomState
    first: that cost 173 µs of a 25 ms digits fit."""
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**32:
            raise ValueError(f"random_state must be in [0, 2**32 - 1], got {random_state}")
        return int(random_state)
    return int(check_random_state(random_state).randint(2**31))


class _BaseMLP(BaseEstimator):
    _output = "identity"

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        backend="cython",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend

    # -- checks ----------------------------------------------------------------------------------
    def _hidden(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not float(s).is_integer() or s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {self.hidden_layer_sizes}.")
        return [int(s) for s in sizes]

    def _check_params(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.solver not in ("adam", "sgd"):
            raise ValueError(
                f"solver must be 'adam' or 'sgd' (lbfgs is not supported), got {self.solver!r}"
            )
        for name, low, high in (
            ("alpha", 0, np.inf),
            ("learning_rate_init", 0, np.inf),
            ("momentum", 0, 1),
            ("validation_fraction", 0, 1),
            ("beta_1", 0, 1),
            ("beta_2", 0, 1),
            ("epsilon", 0, np.inf),
            ("tol", 0, np.inf),
        ):
            v = getattr(self, name)
            strict = name in ("learning_rate_init", "epsilon", "validation_fraction")
            if (
                not isinstance(v, int | float)
                or not (low < v if strict else low <= v)
                or not (v < high if name != "momentum" else v <= high)
            ):
                raise ValueError(f"{name} must be in the valid range, got {v!r}")
        for name in ("max_iter", "n_iter_no_change"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        bs = self.batch_size
        if bs != "auto" and (not isinstance(bs, int | np.integer) or bs < 1):
            raise ValueError(f"batch_size must be 'auto' or an int >= 1, got {bs!r}")

    # -- building --------------------------------------------------------------------------------
    def _build(self, n_features, n_outputs, dtype, batch):
        """A fresh Sequential initialized as scikit-learn does (uniform ±√(f / (fan_in+fan_out)),
        f = 2 for logistic units, 6 otherwise; biases too)."""
        hidden, act = self._hidden(), ACTIVATIONS[self.activation]
        out_act = OUTPUTS[self.out_activation_]
        l2 = self.alpha / (2.0 * batch * self._scale)  # loss (α/2)·ΣW²/batch, in fastbp's units
        reg = regularizers.L2(l2) if l2 > 0 else None
        sizes = [n_features, *hidden, n_outputs]
        seed = _seed(self.random_state)
        stack = [
            layers.Dense(
                n,
                act if i < len(hidden) else out_act,
                kernel_regularizer=reg,
                input_dim=n_features if i == 0 else None,
            )
            for i, n in enumerate(sizes[1:])
        ]
        model = Sequential(stack, backend=self.backend, dtype=dtype, seed=seed)
        model.build()
        rng = np.random.default_rng(seed)
        weights = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
            factor = 2.0 if self.activation == "logistic" else 6.0
            bound = np.sqrt(factor / (fan_in + fan_out))
            weights += [
                rng.uniform(-bound, bound, (fan_in, fan_out)),
                rng.uniform(-bound, bound, fan_out),
            ]
        model.set_weights(weights)
        if self.solver == "adam":
            opt = optimizers.Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)
        else:  # same gradient step as scikit-learn's, whose gradient is _scale times fastbp's
            opt = optimizers.SGD(
                self.learning_rate_init * self._scale,
                self.momentum,
                self.nesterovs_momentum and self.momentum > 0,
            )
        model.compile(opt, self._loss)
        return model

    def _store(self, model) -> None:
        ws = model.get_weights()
        self.coefs_, self.intercepts_ = ws[0::2], ws[1::2]

    def _predict_model(self) -> Sequential:
        model = getattr(self, "_model", None)
        if model is None:  # after unpickling: rebuild from coefs_ / intercepts_
            sizes = [c.shape[0] for c in self.coefs_] + [self.coefs_[-1].shape[1]]
            acts = [ACTIVATIONS[self.activation]] * (len(sizes) - 2)
            acts.append(OUTPUTS[self.out_activation_])
            stack = [
                layers.Dense(n, a, input_dim=sizes[0] if i == 0 else None)
                for i, (n, a) in enumerate(zip(sizes[1:], acts, strict=True))
            ]
            model = Sequential(stack, backend=self.backend, dtype=self.coefs_[0].dtype)
            model.build()
        model.set_weights(
            [w for pair in zip(self.coefs_, self.intercepts_, strict=True) for w in pair]
        )
        return model

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_model", None)  # compiled plans and backend modules do not pickle
        return state

    # -- training --------------------------------------------------------------------------------
    def _fit(self, X, y, incremental=False, classes=None):
        self._check_params()
        first = (
            not (hasattr(self, "coefs_") and (incremental or self.warm_start))
            or getattr(self, "_model", None) is None
        )
        X, y = validate_data(
            self,
            X,
            y,
            multi_output=True,
            dtype=(np.float64, np.float32),
            reset=first,
            y_numeric=self._output == "identity",
        )
        target = self._targets(y, first, classes)
        n, n_outputs = X.shape[0], self._n_outputs(target)
        bs = min(200, n) if self.batch_size == "auto" else int(self.batch_size)
        if not 1 <= bs <= n:
            if self.batch_size != "auto":
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is "
                    "going to be clipped",
                    stacklevel=3,
                )
            bs = min(max(bs, 1), n)
        if first:
            self.n_outputs_, self.n_layers_ = n_outputs, len(self._hidden()) + 2
            self.loss_curve_, self.n_iter_, self.t_, self._no_improvement_count = [], 0, 0, 0
            self.best_loss_ = np.inf
            self._model = self._build(X.shape[1], n_outputs, X.dtype, bs)
        validation = None
        early = self.early_stopping and not incremental
        if early:
            strat = target if self._output != "identity" and target.ndim == 1 else None
            X, X_val, target, t_val = train_test_split(
                X,
                target,
                random_state=self.random_state,
                test_size=self.validation_fraction,
                stratify=strat,
            )
            validation = (X_val, self._decode(t_val))
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self._best = None
            self.best_loss_ = None
        elif not hasattr(self, "validation_scores_") or first:
            self.validation_scores_ = self.best_validation_score_ = None
        self._n_seen, self._stopped = X.shape[0], False
        epochs = 1 if incremental else self.max_iter
        stop = _SklearnStopping(self, self._scale, validation)
        # its bookkeeping may follow the epochs where it cannot stop them nor print (fit then
        # runs several epochs per compiled call)
        stop.replayable = (
            validation is None
            and not self.verbose
            and self._no_improvement_count + epochs <= self.n_iter_no_change
        )
        self._model.fit(
            X,
            target,
            batch_size=bs,
            epochs=epochs,
            shuffle=self.shuffle,
            verbose=0,
            callbacks=[stop],
        )
        if early and self._best is not None:
            self._model.set_weights(self._best)
        self._store(self._model)
        self.loss_ = self.loss_curve_[-1]
        if not incremental and not self._stopped:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                "and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features), ``y`` for up to ``max_iter`` epochs.

        Returns
        -------
        self
        """
        return self._fit(X, y)

    def _raw_predict(self, X) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        return self._predict_model().predict(X)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier (scikit-learn's API) trained by fastbp's kernels.

    Softmax output and cross-entropy for several classes, one logistic unit for two, logistic
    units for multilabel indicator targets. Parameters as ``sklearn.neural_network
    .MLPClassifier`` (solver "adam" or "sgd"), plus ``backend`` ("cython" or "numpy").
    """

    _output = "classifier"

    def _targets(self, y, first, classes):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if first:
            if classes is not None:
                self.classes_ = np.asarray(classes)
            # LabelBinarizer.fit refuses what is no classification target ("Unknown label
            # type"), as in scikit-learn's MLPClassifier, which checks no more at a first fit
            # (check_classification_targets first: 0.45 ms more, its warnings aside)
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(self.classes_ if classes is not None else y)
            self.classes_ = self._label_binarizer.classes_
            kind = self._label_binarizer.y_type_
            self.out_activation_ = "softmax" if kind == "multiclass" else "logistic"
            self._multiclass = kind == "multiclass"
            n_out = 1 if kind == "binary" else len(self.classes_)
            self._loss = (
                "sparse_categorical_crossentropy" if self._multiclass else "binary_crossentropy"
            )
            self._scale = 1.0 if kind != "multilabel-indicator" else float(n_out)
        if not first or classes is not None:  # y against the classes known before it
            check_classification_targets(y)
            unseen = np.setdiff1d(np.unique(y), self.classes_) if np.ndim(y) == 1 else []
            if len(unseen):
                raise ValueError(f"y has classes not in classes_ {self.classes_}: {unseen}")
        if self._multiclass:
            return np.searchsorted(self.classes_, y)
        return self._label_binarizer.transform(y).astype(np.float64)

    def _n_outputs(self, target) -> int:
        return len(self.classes_) if self._multiclass else target.shape[1]

    def _decode(self, target):
        return (
            self.classes_[target]
            if self._multiclass
            else self._label_binarizer.inverse_transform(target)
        )

    def partial_fit(self, X, y, classes=None):
        """One epoch on ``(X, y)``; ``classes`` (all labels) is required on the first call."""
        if not hasattr(self, "coefs_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order."""
        P = self._raw_predict(X)
        if P.shape[1] == 1 and not self._multiclass:
            return np.hstack([1 - P, P])
        return P

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))

    def predict(self, X) -> np.ndarray:
        """Predicted class labels (n_samples,), or indicator rows for multilabel targets."""
        P = self._raw_predict(X)
        if self._multiclass:
            return self.classes_[np.argmax(P, axis=1)]
        return self._label_binarizer.inverse_transform(P)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (scikit-learn's API) trained by fastbp's kernels.

    Identity output and squared loss. Parameters as ``sklearn.neural_network.MLPRegressor``
    (solver "adam" or "sgd"), plus ``backend``.
    """

    out_activation_ = "identity"
    _loss = "mse"

    def _targets(self, y, first, classes):
        y = np.asarray(y, dtype=np.float64)
        target = y.reshape(-1, 1) if y.ndim == 1 else y
        if first:
            self._ravel = y.ndim == 1
            # scikit-learn's gradient of (1/2)·Σ_outputs (p - y)² / batch is n_outputs/2 times
            # fastbp's mse gradient 2·(p - y) / (batch · n_outputs)
            self._scale = target.shape[1] / 2.0
        return target

    def _n_outputs(self, target) -> int:
        return target.shape[1]

    def _decode(self, target):
        return target.ravel() if self._ravel else target

    def partial_fit(self, X, y):
        """One epoch on ``(X, y)``."""
        return self._fit(X, y, incremental=True)

    def predict(self, X) -> np.ndarray:
        """Predictions (n_samples,) or (n_samples, n_outputs) as ``y`` was given."""
        P = self._raw_predict(X)
        return P.ravel() if self._ravel else P

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


__all__ = ["MLPClassifier", "MLPRegressor"]
