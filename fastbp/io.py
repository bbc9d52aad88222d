"""Model files: one ``.npz`` file, a JSON config + the flat arrays. No pickle.

Loading never executes code from the file: ``np.load(allow_pickle=False)`` reads only plain
arrays, the config is JSON, and layer/optimizer classes are looked up in fixed tables
(``model.load``, which builds the model from what :func:`read` returns).
Saving writes a temporary file next to the target and renames it, so a failure leaves any
existing file intact.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT, VERSION = "fastbp", 1


def write(filepath, config: dict, arrays: dict) -> None:
    """Write ``config`` (JSON-able, the format header added) and named ``arrays`` to
    ``filepath`` as one .npz file."""
    config = {"format": FORMAT, "version": VERSION, **config}
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


def invalid(filepath, why: str) -> ValueError:
    """The error for a file that is not a valid model file."""
    return ValueError(f"{filepath!s} is not a valid fastbp model file: {why}")


def read(filepath) -> tuple[dict, dict]:
    """(config, arrays) of a file written by :func:`write`; raises ValueError for a corrupt
    file (FileNotFoundError where there is none)."""
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
        raise invalid(filepath, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise invalid(filepath, "missing the fastbp header")
    if config.get("version") != VERSION:
        raise invalid(filepath, f"version {config.get('version')!r}, this fastbp reads {VERSION}")
    return config, arrays
