"""Checks at the API edge: after these, arrays are safe to hand to compiled kernels."""

import numbers

import numpy as np

try:  # one pass without a temporary array (train_on_batch validates every call)
    from fastbp._ckernels import all_finite as _all_finite
    from fastbp._ckernels import first_label_outside as _first_outside
except ImportError:  # pure-NumPy installs
    _all_finite = _first_outside = None


def _as_numeric(x, name: str) -> np.ndarray:
    if x is None or isinstance(x, str | bytes):
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be a numeric array (int, bool or float), got dtype {arr.dtype}"
        )
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind != "f":
        return
    if _all_finite is not None and arr.ndim == 2 and arr.flags.c_contiguous:
        finite = _all_finite(arr)
    else:
        finite = np.isfinite(arr).all()
    if not finite:
        raise ValueError(f"{name} contains NaN or inf (after casting to {arr.dtype})")


def features(x, name: str, n_features, dtype, input_shape=None, ndims=(2, 3)) -> np.ndarray:
    """``x`` as a C-contiguous ``(n_samples, [timesteps,] n_features)`` array of ``dtype``, all
    finite. ``ndims``: the ranks the model takes; ``input_shape`` (per sample, None = any
    length) fixes the rank and sizes."""
    arr = _as_numeric(x, name)
    feature_shape(arr.shape, name, n_features, input_shape, ndims)
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        with np.errstate(over="ignore"):  # an overflow to inf is reported just below
            arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite(arr, name)
    return arr


def sparse_features(x, name: str, n_features, dtype):
    """A SciPy sparse ``x`` (n_samples, n_features) as the compiled loop takes it: a CSR copy
    of ``dtype`` with int64 indices, its stored numbers all finite."""
    feature_shape(x.shape, name, n_features, None, (2,))
    X = x.tocsr().astype(dtype, copy=True)
    X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    check_finite(X.data, name)
    return X


def feature_shape(shape: tuple, name: str, n_features, input_shape=None, ndims=(2, 3)) -> None:
    """Raise unless ``shape`` is a non-empty ``(n_samples, [timesteps,] n_features)`` the model
    takes (host and device inputs alike)."""
    shape = tuple(shape)
    if input_shape is not None:
        ndims = (len(input_shape) + 1,)

    def want(d):  # the expected shape in words (built only for a message)
        if input_shape is not None:
            return str(("n_samples",) + tuple(input_shape)).replace("'", "")
        nf = n_features if n_features is not None else "n_features"
        return f"(n_samples, {nf})" if d == 2 else f"(n_samples, timesteps, {nf})"

    if len(shape) not in ndims:
        wanted = " or ".join(want(d) for d in ndims)
        raise ValueError(f"{name} must have shape {wanted}, got shape {shape}")
    if 0 in shape:
        raise ValueError(
            f"{name} is empty: expected shape {want(len(shape))} with n_samples >= 1"
            f"{' and timesteps >= 1' if len(shape) == 3 else ''}, got {shape}"
        )
    if (n_features is not None and shape[-1] != n_features) or (
        input_shape is not None
        and any(w is not None and w != g for w, g in zip(input_shape, shape[1:], strict=True))
    ):
        raise ValueError(f"{name} must have shape {want(len(shape))}, got {shape}")


def targets(y, name: str, n_samples: int, loss: str, out_shape: tuple, dtype) -> np.ndarray:
    """``y`` as int64 labels ``(n, *out_shape[:-1])`` for the sparse loss, else
    ``(n, *out_shape)`` of ``dtype`` (``out_shape``: the model's output per sample)."""
    arr = _as_numeric(y, name)
    n_outputs, lead = out_shape[-1], tuple(out_shape[:-1])
    if arr.ndim == 0 or arr.shape[0] != n_samples:
        got = arr.shape[0] if arr.ndim else "a scalar"
        raise ValueError(
            f"x and {name} must have the same number of rows: x has {n_samples}, {name} has {got}"
        )
    if loss == "sparse_categorical_crossentropy":
        want = (n_samples, *lead)
        if arr.shape == want + (1,):
            arr = arr.reshape(want)
        if arr.shape != want:
            raise ValueError(
                f"{name} must be integer labels of shape {want} for "
                f"sparse_categorical_crossentropy, got shape {arr.shape}"
            )
        check_finite(arr, name)
        labels = np.ascontiguousarray(arr, dtype=np.int64)
        if arr.dtype.kind == "f" and not np.array_equal(labels, arr):
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
        if _first_outside is not None:
            flat = labels.reshape(-1)
            bad = _first_outside(flat, n_outputs)
            outside = None if bad < 0 else flat[bad]
        else:
            low, high = labels.min(), labels.max()
            outside = low if low < 0 else (high if high >= n_outputs else None)
        if outside is not None:
            raise ValueError(
                f"{name} labels must lie in [0, {n_outputs}) (the last layer's "
                f"units), got {outside}"
            )
        return labels
    want = (n_samples, *out_shape)
    if arr.shape == want[:-1] and n_outputs == 1:
        arr = arr.reshape(want)
    if arr.shape != want:
        hint = ""
        if arr.shape == want[:-1] and loss == "categorical_crossentropy":
            hint = " (for integer labels use loss='sparse_categorical_crossentropy')"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}{hint}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite(arr, name)
    if loss != "mse" and ((arr < 0).any() or (arr > 1).any()):
        raise ValueError(
            f"{name} must lie in [0, 1] for {loss}, got values in [{arr.min()}, {arr.max()}]"
        )
    return arr


def positive_int(value, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        )
    return int(value)
