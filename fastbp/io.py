"""Save and load models as one ``.npz`` file: a JSON config + the flat arrays. No pickle.

Loading never executes code from the file: ``np.load(allow_pickle=False)`` reads only plain
arrays, the config is JSON, and layer/optimizer classes are looked up in fixed tables.
Saving writes a temporary file next to the target and renames it, so a failure leaves any
existing file intact.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from . import optimizers
from .layers import LAYERS
from .model import Sequential

FORMAT, VERSION = "fastbp", 1


def save_model(model: Sequential, filepath) -> None:
    """Write ``model`` to ``filepath`` (config, parameters, optimizer state)."""
    model._pull()  # a device model: its current weights and optimizer state
    model._require_built()
    config = {"format": FORMAT, "version": VERSION, "model": model.get_config()}
    arrays = {"params": model._params}
    if model.optimizer is not None:
        opt = model.optimizer
        config["compile"] = {
            "optimizer": {"class": type(opt).__name__, "config": opt.get_config()},
            "loss": model.loss,
            "metrics": model.metrics,
            "iterations": opt.iterations,
        }
        arrays["optimizer_state"] = opt.state
    blob = np.frombuffer(json.dumps(config).encode("utf-8"), dtype=np.uint8)
    filepath = os.fspath(filepath)
    folder = os.path.dirname(os.path.abspath(filepath))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastbp-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a file object: np.savez adds no ".npz" suffix
            np.savez(f, config=blob, **arrays)
        os.replace(tmp, filepath)
    except BaseException:
        os.unlink(tmp)
        raise


def _bad(filepath, why: str) -> ValueError:
    return ValueError(f"{filepath!s} is not a valid fastbp model file: {why}")


def load_model(filepath) -> Sequential:
    """Read a model written by ``Model.save``; raises ValueError for a corrupt file."""
    try:
        with np.load(filepath, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        config = json.loads(arrays.pop("config").tobytes().decode("utf-8"))
    except (
        zipfile.BadZipFile,
        KeyError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        EOFError,
        OSError,
        ValueError,
    ) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _bad(filepath, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise _bad(filepath, "missing the fastbp header")
    if config.get("version") != VERSION:
        raise _bad(filepath, f"version {config.get('version')!r}, this fastbp reads {VERSION}")
    try:
        model = _build(config, arrays)
    except (KeyError, TypeError, AttributeError) as exc:
        raise _bad(filepath, f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        raise _bad(filepath, str(exc)) from None
    return model


def _build(config: dict, arrays: dict) -> Sequential:
    mc = config["model"]
    model = Sequential(backend=mc["backend"], dtype=mc["dtype"], seed=mc["seed"], name=mc["name"])
    for spec in mc["layers"]:
        cls = LAYERS[spec["class"]]  # KeyError for anything but a known layer
        model.add(cls(**spec["config"]))
    model.build(mc["n_features"])
    params = arrays["params"]
    if params.dtype != model.dtype or params.shape != model._params.shape:
        raise ValueError(
            f"params must be {model.dtype} of shape {model._params.shape}, "
            f"got {params.dtype} {params.shape}"
        )
    if not np.isfinite(params).all():
        raise ValueError("params contain NaN or inf")
    model._params[...] = params
    if "compile" in config:
        cc = config["compile"]
        opt_cls = optimizers.OPTIMIZERS[cc["optimizer"]["class"].lower()]
        model.compile(opt_cls.from_config(cc["optimizer"]["config"]), cc["loss"], cc["metrics"])
        state = arrays["optimizer_state"]
        if state.shape != model.optimizer.state.shape or state.dtype != model.dtype:
            raise ValueError(f"optimizer_state must be {model.dtype} {model.optimizer.state.shape}")
        model.optimizer.state[...] = state
        model.optimizer.iterations = int(cc["iterations"])
    return model
