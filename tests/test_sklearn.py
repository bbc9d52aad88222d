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
    (several per compiled call); verbose (it prints each epoch) goes epoch by epoch: the same
    model and curves."""
    import fastbp.executors as fm

    Xtr, _, ytr, _ = digits
    calls, orig = [], fm.Compiled.epoch
    monkeypatch.setattr(fm.Compiled, "epoch", lambda self, *a: calls.append(1) or orig(self, *a))
    kw = dict(hidden_layer_sizes=(16,), batch_size=32, max_iter=6, random_state=0, tol=0.0)
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
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    warm = MLPClassifier((16,), max_iter=5, warm_start=True, random_state=0).fit(Xtr, ytr)
    first = warm.loss_curve_[-1]
    warm.fit(Xtr, ytr)
    assert warm.n_iter_ == 10 and warm.loss_curve_[-1] < first


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
    reg = MLPRegressor((32,), max_iter=300, random_state=0).fit(X, y)
    assert reg.predict(X).shape == (200, 2) and reg.score(X, y) > 0.9
    reg1 = MLPRegressor((32,), max_iter=300, random_state=0).fit(X, y[:, 0])
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
    with pytest.raises(ValueError, match="not in classes_"):
        MLPClassifier((3,)).partial_fit(X, y, classes=[0, 1, 2])  # 3 would train as 2
    clf = MLPClassifier((3,)).partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="not in classes_"):
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
        (dict(solver="lbfgs"), "solver"),
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
