"""fastbp.sklearn: scikit-learn's estimator checks, behaviour and accuracy next to sklearn's MLP."""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, random_state=0)


def test_digits_accuracy_within_a_point_of_sklearn(digits):
    Xtr, Xte, ytr, yte = digits
    kw = dict(hidden_layer_sizes=(64,), batch_size=32, max_iter=30, random_state=0)
    ours = MLPClassifier(**kw).fit(Xtr, ytr).score(Xte, yte)
    theirs = SkMLPClassifier(**kw).fit(Xtr, ytr).score(Xte, yte)
    assert ours >= theirs - 0.01 and ours > 0.95


def test_attributes_and_stopping(digits):
    Xtr, _, ytr, _ = digits
    clf = MLPClassifier((20, 10), max_iter=300, tol=1e-2, random_state=1).fit(Xtr, ytr)
    assert [c.shape for c in clf.coefs_] == [(64, 20), (20, 10), (10, 10)]
    assert [b.shape for b in clf.intercepts_] == [(20,), (10,), (10,)]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 10 and clf.out_activation_ == "softmax"
    assert len(clf.loss_curve_) == clf.n_iter_ < 300  # stopped: no tol gain for 10 epochs
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.t_ == clf.n_iter_ * len(Xtr) and clf.validation_scores_ is None
    np.testing.assert_allclose(clf.predict_proba(Xtr[:5]).sum(axis=1), 1, rtol=1e-12)


def test_fits_that_cannot_stop_early_run_epochs_in_one_call(digits, monkeypatch, capsys):
    """With n_iter_no_change >= max_iter the stopping rule's bookkeeping follows the epochs
    (several per compiled call, without shuffling: shuffled epochs take scikit-learn's orders
    one by one); verbose (it prints each epoch) goes epoch by epoch: the same model and
    curves."""
    import fastbp.executors as fm

    Xtr, _, ytr, _ = digits
    calls, orig = [], fm.Compiled.epoch
    monkeypatch.setattr(fm.Compiled, "epoch", lambda self, *a: calls.append(1) or orig(self, *a))
    kw = dict(hidden_layer_sizes=(16,), batch_size=32, max_iter=6, random_state=0, tol=0.0)
    kw["shuffle"] = False
    fits = [MLPClassifier(n_iter_no_change=6, verbose=v, **kw).fit(Xtr, ytr) for v in (0, 1)]
    assert len(calls) == 6 and capsys.readouterr().out.count("Iteration") == 6
    a, b = fits
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.loss_curve_ == b.loss_curve_ and a.n_iter_ == b.n_iter_ == 6 and a.t_ == b.t_
    assert a.best_loss_ == b.best_loss_ and a._no_improvement_count == b._no_improvement_count


def test_early_stopping_keeps_best(digits):
    Xtr, _, ytr, _ = digits
    clf = MLPClassifier((16,), early_stopping=True, random_state=0, max_iter=200).fit(Xtr, ytr)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_partial_fit_and_warm_start(digits):
    Xtr, _, ytr, _ = digits
    clf = MLPClassifier((16,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(Xtr, ytr)
    for i in range(3):
        clf.partial_fit(Xtr[i::3], ytr[i::3], classes=np.arange(10))
    # scikit-learn's: n_iter_ counts the epochs of the last call, the curve all of them
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 3
    warm = MLPClassifier((16,), max_iter=5, warm_start=True, random_state=0).fit(Xtr, ytr)
    first = warm.loss_curve_[-1]
    warm.fit(Xtr, ytr)
    assert warm.n_iter_ == 5 and len(warm.loss_curve_) == 10 and warm.loss_curve_[-1] < first


def test_meta_estimators_and_pickle(digits):
    Xtr, Xte, ytr, yte = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=50, random_state=0))
    theirs = make_pipeline(StandardScaler(), SkMLPClassifier((16,), max_iter=50, random_state=0))
    ours = cross_val_score(pipe, Xtr, ytr, cv=3).mean()
    assert ours > cross_val_score(theirs, Xtr, ytr, cv=3).mean() - 0.03
    grid = GridSearchCV(
        MLPClassifier(max_iter=10, random_state=0),
        {"hidden_layer_sizes": [(8,), (16,)], "solver": ["adam", "sgd"]},
        cv=2,
    )
    grid.fit(Xtr[:300], ytr[:300])
    assert grid.best_params_["hidden_layer_sizes"] in [(8,), (16,)]
    fitted = pipe.fit(Xtr, ytr)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(Xte), fitted.predict(Xte))


def test_regressor_multi_output_and_binary_classifier():
    X, y = make_regression(200, 5, n_targets=2, noise=0.1, random_state=0)
    y = y / y.std()
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, y)
    assert reg.predict(X).shape == (200, 2) and reg.score(X, y) > 0.9
    reg1 = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, y[:, 0])
    assert reg1.predict(X).shape == (200,)
    yb = np.where(y[:, 0] > 0, "pos", "neg")
    clf = MLPClassifier((8,), max_iter=200, random_state=0).fit(X, yb)
    theirs = SkMLPClassifier((8,), max_iter=200, random_state=0).fit(X, yb).score(X, yb)
    assert clf.out_activation_ == "logistic" and clf.coefs_[-1].shape == (8, 1)
    assert set(clf.predict(X)) <= {"pos", "neg"} and clf.score(X, yb) > theirs - 0.1


def test_float32_input_trains_in_float32(digits):
    Xtr, _, ytr, _ = digits
    clf = MLPClassifier((8,), max_iter=3, random_state=0).fit(Xtr.astype(np.float32), ytr)
    assert clf.coefs_[0].dtype == np.float32


def test_partial_fit_refuses_labels_outside_classes():
    X, y = np.random.default_rng(0).random((6, 2)), np.array([0, 1, 3, 0, 1, 3])
    with pytest.raises(ValueError, match="has classes not in"):
        MLPClassifier((3,)).partial_fit(X, y, classes=[0, 1, 2])  # 3 would train as 2
    clf = MLPClassifier((3,)).partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="has classes not in"):
        clf.partial_fit(X, y + 1)


def test_random_state_int_or_generator():
    X, y = np.random.default_rng(0).random((30, 3)), np.arange(30) % 3
    fit = lambda rs: MLPClassifier((5,), max_iter=2, random_state=rs).fit(X, y).coefs_[0]  # noqa: E731
    np.testing.assert_array_equal(fit(7), fit(7))
    assert not np.array_equal(fit(7), fit(8))
    rs = np.random.RandomState(0)
    assert not np.array_equal(fit(rs), fit(rs))  # each fit draws from it, as scikit-learn's
    np.testing.assert_array_equal(fit(np.random.RandomState(3)), fit(np.random.RandomState(3)))


def test_bad_parameters():
    X, y = np.random.default_rng(0).random((10, 2)), np.arange(10) % 2
    cases = [
        (dict(solver="newton"), "solver"),
        (dict(backend="torch"), "backend"),
        (dict(activation="swish"), "activation"),
        (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_iter=0), "max_iter"),
        (dict(random_state=-1), "random_state"),
        (dict(random_state=2**32), "random_state"),
    ]
    for kw, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            MLPClassifier(**kw).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="clipped"):
            MLPClassifier(batch_size=100, max_iter=1).fit(X, y)


PARITY = {  # name: (estimator kind, targets, parameters): scikit-learn's draws and formulas
    "adam": ("clf", "labels", {}),
    "sgd nesterov": ("clf", "labels", dict(solver="sgd", learning_rate_init=0.05)),
    "sgd momentum": ("clf", "labels", dict(solver="sgd", nesterovs_momentum=False)),
    "adam binary": ("clf", "binary", {}),
    "adam multilabel": ("clf", "multilabel", {}),
    "adam early stopping": ("clf", "labels", dict(early_stopping=True)),
    "tanh, batch 50, alpha": ("clf", "labels", dict(activation="tanh", batch_size=50, alpha=0.1)),
    "logistic": ("clf", "labels", dict(activation="logistic", batch_size=64)),
    "adam regression": ("reg", "two outputs", {}),
    "sgd regression": ("reg", "one output", dict(solver="sgd")),
    "lbfgs": ("clf", "labels", dict(solver="lbfgs")),
    "invscaling sgd": ("clf", "labels", dict(solver="sgd", learning_rate="invscaling")),
    "sample weights": ("clf", "labels", dict(sample_weight=True)),
    "lbfgs regression, sample weights": (
        "reg",
        "one output",
        dict(solver="lbfgs", sample_weight=True),
    ),
}


@pytest.mark.parametrize("case", sorted(PARITY))
def test_same_model_as_scikit_learn(case, digits):
    """The same random_state gives scikit-learn's model: its initial weights, shuffles,
    validation split and update formulas, in fastbp's compiled epochs (lbfgs: compiled full-batch
    passes) where they apply and in scikit-learn's loop on fastbp's kernels otherwise."""
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor

    kind, targets, kw = PARITY[case]
    Xtr, _, ytr, _ = digits
    X, y = Xtr[:600], ytr[:600]
    if kind == "reg":
        X, y2 = make_regression(300, 6, n_targets=2, random_state=0)
        y = (y2 / y2.std()) if targets == "two outputs" else y2[:, 0] / y2.std()
    elif targets == "binary":
        y = y % 2
    elif targets == "multilabel":
        y = np.stack([y % 2, y > 4, y % 3 == 0], axis=1).astype(int)
    kw = dict(kw)
    fit_kw = {}
    if kw.pop("sample_weight", False):
        fit_kw["sample_weight"] = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    kw = dict(hidden_layer_sizes=(20,), random_state=3, max_iter=5, **kw)
    ours_cls, theirs_cls = (
        (MLPClassifier, SkMLPClassifier) if kind == "clf" else (MLPRegressor, SkMLPRegressor)
    )
    ours, theirs = ours_cls(**kw).fit(X, y, **fit_kw), theirs_cls(**kw).fit(X, y, **fit_kw)
    compiled = "learning_rate" not in kw and not fit_kw  # (lbfgs: compiled passes)
    compiled = compiled and (targets != "two outputs" or kw.get("solver") == "lbfgs")
    assert hasattr(ours, "_model") == compiled
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-10)
    if kw.get("solver") != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_and_float32(digits, fmt):
    """CSR/CSC input trains in fastbp's compiled epochs (the first layer's products over the
    stored numbers): scikit-learn's model; float32 input trains in float32."""
    import scipy.sparse as sp

    Xtr, _, ytr, _ = digits
    kw = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=3)
    Xs = sp.csr_matrix(Xtr) if fmt == "csr" else sp.csc_matrix(Xtr)
    ours, theirs = MLPClassifier(**kw).fit(Xs, ytr), SkMLPClassifier(**kw).fit(Xs, ytr)
    assert hasattr(ours, "_model")
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ours.predict_proba(Xs), theirs.predict_proba(Xs), rtol=1e-10)
    f32 = MLPClassifier(**kw).fit(Xtr.astype(np.float32), ytr)
    assert f32.coefs_[0].dtype == np.float32 and hasattr(f32, "_model")


def test_same_model_as_scikit_learn_on_the_two_thread_team():
    """A model large enough for fastbp's two-thread team (its penalty per batch rows taken once
    per step): still scikit-learn's coefficients."""
    rng = np.random.default_rng(0)
    X, y = rng.random((300, 784)), rng.integers(0, 10, 300)
    kw = dict(hidden_layer_sizes=(256, 256), batch_size=128, max_iter=3, random_state=0)
    kw["alpha"] = 0.01
    ours, theirs = MLPClassifier(**kw).fit(X, y), SkMLPClassifier(**kw).fit(X, y)
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())
