"""Bad input gets a clear exception naming the argument and the expected shape."""

import numpy as np
import pytest
from conftest import dense_model

import fastbp as fb


@pytest.fixture
def clf():
    model = dense_model([4, 5, 3], ["relu", "softmax"], dtype="float32")
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model


X = np.ones((6, 4))
Y = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "x,y,exc,pattern",
    [
        (np.ones((6, 5)), Y, ValueError, r"x must have shape \(n_samples, 4\), got \(6, 5\)"),
        (
            np.ones(6),
            Y,
            ValueError,
            r"x must have shape \(n_samples, 4\) or \(n_samples, timesteps, 4\), got shape \(6,\)",
        ),
        (np.ones((0, 4)), Y[:0], ValueError, "x is empty"),
        (np.full((6, 4), np.nan), Y, ValueError, "x contains NaN or inf"),
        (np.full((6, 4), 1e39), Y, ValueError, r"x contains NaN or inf \(after casting to float32"),
        (np.full((6, 4), "a"), Y, TypeError, "x must be a numeric array"),
        ([[1, 2], [3]], Y, TypeError, "x must be a numeric array"),
        (None, Y, TypeError, "x must be a numeric array"),
        (X, Y[:5], ValueError, "x and y must have the same number of rows: x has 6, y has 5"),
        (X, np.array([0, 1, 2, 0, 1, 3]), ValueError, r"y labels must lie in \[0, 3\)"),
        (X, np.array([0, 1, 2, 0, 1, -1]), ValueError, r"y labels must lie in \[0, 3\)"),
        (X, Y + 0.5, ValueError, "y must hold integer class labels"),
        (X, np.ones((6, 3)), ValueError, r"y must be integer labels of shape \(6,\)"),
        (X, np.array([0, 1, 2, 0, 1, np.nan]), ValueError, "y contains NaN"),
        (X, ["a"] * 6, TypeError, "y must be a numeric array"),
    ],
)
def test_fit_rejects(clf, x, y, exc, pattern):
    with pytest.raises(exc, match=pattern):
        clf.fit(x, y, verbose=0)
    with pytest.raises(exc, match=pattern):
        clf.train_on_batch(x, y)


def test_dense_targets_shape_and_range():
    model = dense_model([4, 3], ["softmax"])
    model.compile("sgd", "categorical_crossentropy")
    with pytest.raises(ValueError, match=r"y must have shape \(6, 3\), got \(6,\).*sparse_categ"):
        model.fit(X, Y, verbose=0)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        model.fit(X, np.full((6, 3), 2.0), verbose=0)


def test_predict_and_evaluate_reject(clf):
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples, 4\)"):
        clf.predict(np.ones((2, 3)))
    with pytest.raises(ValueError, match="x and y must have the same number of rows"):
        clf.evaluate(X, Y[:2])


def test_fit_arguments(clf):
    for kw, pattern in [
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(batch_size=2.5), "batch_size must be a positive int"),
        (dict(validation_split=1.0), r"validation_split must be in \[0, 1\)"),
        (dict(validation_split=0.01), "leaves no rows"),
        (dict(validation_data=(X,)), "validation_data must be a tuple"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            clf.fit(X, Y, verbose=0, **kw)
    with pytest.raises(ValueError, match=r"validation_data\[0\] must have shape"):
        clf.fit(X, Y, verbose=0, validation_data=(np.ones((2, 2)), Y[:2]))


def test_model_configuration_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        fb.Sequential(backend="tpu")
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        fb.Sequential(dtype="int32")
    with pytest.raises(ValueError, match="activation must be"):
        fb.layers.Dense(3, activation="swish")
    with pytest.raises(ValueError, match="units must be a positive int"):
        fb.layers.Dense(0)
    with pytest.raises(ValueError, match="initializer must be one of"):
        fb.layers.Dense(2, kernel_initializer="identity")
    with pytest.raises(ValueError, match="loss must be one of"):
        dense_model([2, 1], ["sigmoid"]).compile("sgd", "hinge")
    with pytest.raises(
        ValueError, match="needs a last layer with activation 'sigmoid' or 'softmax'"
    ):
        dense_model([2, 1], ["linear"]).compile("sgd", "binary_crossentropy")
    with pytest.raises(ValueError, match="metrics must be"):
        dense_model([2, 1], ["sigmoid"]).compile("sgd", "mse", ["f1"])
    with pytest.raises(RuntimeError, match="compile"):
        dense_model([2, 1], ["sigmoid"]).fit(np.ones((2, 2)), np.ones(2))
    with pytest.raises(TypeError, match="layer must be a fastbp Layer"):
        fb.Sequential().add("dense")
    model = dense_model([2, 2], ["linear"])
    with pytest.raises(ValueError, match="weights must be a list of 2 arrays"):
        model.set_weights([np.ones((2, 2))])
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(2, 2\)"):
        model.set_weights([np.ones((2, 3)), np.ones(2)])
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"weights\[1\] contains NaN"):
        model.set_weights([np.zeros((2, 2)), np.array([1.0, np.nan])])
    np.testing.assert_array_equal(model.get_weights()[0], before[0])  # nothing written half-way
