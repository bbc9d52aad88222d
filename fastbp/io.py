"""Model files: one ``.npz`` file, a JSON config + the flat arrays. No pickle.

Loading never executes code from the file: ``np.load(allow_pickle=False)`` reads only plain
arrays, the config is JSON, and layer/optimizer classes are looked up in fixed tables
(``model.load``, which builds the model from what :func:`read` returns).
Saving writes a temporary file next to the target, flushes it to disk and renames it over
the target, so a failure or a crash leaves any existing file intact.
"""

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable

import numpy as np

FORMAT, VERSION = "fastbp", 1


def write(filepath, config: dict, arrays: dict) -> None:
    """Write ``config`` (JSON-able, the format header added) and named ``arrays`` to
    ``filepath`` as one .npz file, atomically: into a temporary file in the same folder,
    flushed to disk (fsync), renamed over the target, and the folder's entry flushed too. A
    crash at any point leaves the old file or the new one, whole; the temporary file of a
    writer that died (``kill -9``) is removed by the next save to the same path."""
    config = {"format": FORMAT, "version": VERSION, **config}
    blob = np.frombuffer(json.dumps(config).encode("utf-8"), dtype=np.uint8)
    filepath = os.fspath(filepath)
    folder = os.path.dirname(os.path.abspath(filepath))
    prefix = _temp_prefix(filepath)
    _remove_stale(folder, prefix)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{prefix}{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a file object: np.savez adds no ".npz" suffix
            np.savez(f, config=blob, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _temp_prefix(filepath: str) -> str:
    """Temporary files of saves to ``filepath``: ``.<name>.fastbp-<pid>-<random>.tmp``."""
    return f".{os.path.basename(filepath)}.fastbp-"


def _remove_stale(folder: str, prefix: str) -> None:
    """Remove the temporary files of earlier saves to this path whose process is gone."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # (another thread of this process may be saving)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or no way to tell: leave its file
    return True


def _fsync_folder(folder: str) -> None:
    """Flush the folder's entry for the renamed file (POSIX; not possible on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def invalid(filepath, why: str) -> ValueError:
    """The error for a file that is not a valid model file."""
    return ValueError(f"{filepath!s} is not a valid fastbp model file: {why}")


# the config is JSON of a few KB (a 1000-layer model's: ~150 KB)
MAX_CONFIG_BYTES = 1 << 20


def read(filepath, expect: Callable[[dict], dict]) -> tuple[dict, dict]:
    """(config, arrays) of a file written by :func:`write`; raises ValueError for a corrupt or
    hostile file (FileNotFoundError where there is none), in time and memory bounded by the
    file's size.

    ``expect(config)`` returns {name: (shape, dtype)} of the arrays the (checked) config
    implies, raising ValueError where the config is wrong; each array's header must match
    before anything is allocated for it, and nothing else may be in the file. The members are
    stored uncompressed (as :func:`write` stores them), so none can inflate beyond the file.
    """
    try:
        with open(filepath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not zipfile.is_zipfile(f):
                raise invalid(filepath, "not an .npz (zip) file")
            with zipfile.ZipFile(f) as zf:
                members = {}
                for info in zf.infolist():
                    if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                        raise invalid(filepath, f"member {info.filename!r} is compressed")
                    members[info.filename] = info
                blob = _member(zf, members, "config", (None,), np.dtype(np.uint8), filepath)
                try:
                    config = json.loads(blob.tobytes().decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise invalid(filepath, f"config: {exc}") from None
                if not isinstance(config, dict) or config.get("format") != FORMAT:
                    raise invalid(filepath, "missing the fastbp header")
                if config.get("version") != VERSION:
                    raise invalid(
                        filepath, f"version {config.get('version')!r}, this fastbp reads {VERSION}"
                    )
                try:
                    wanted = expect(config)
                except ValueError as exc:
                    raise invalid(filepath, str(exc)) from None
                extra = set(members) - {name + ".npy" for name in ("config", *wanted)}
                if extra:
                    raise invalid(filepath, f"unexpected members {sorted(extra)}")
                arrays = {
                    name: _member(zf, members, name, shape, np.dtype(dtype), filepath)
                    for name, (shape, dtype) in wanted.items()
                }
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise invalid(filepath, f"{type(exc).__name__}: {exc}") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
            raise
        raise invalid(filepath, f"{type(exc).__name__}: {exc}") from None
    return config, arrays


def _member(zf, members, name, shape, dtype, filepath) -> np.ndarray:
    """Array ``name`` of the archive, its .npy header checked against ``shape`` (None: any
    length up to MAX_CONFIG_BYTES) and ``dtype`` before its data is read."""
    info = members.get(name + ".npy")
    if info is None:
        raise invalid(filepath, f"no {name!r} array")
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unknown .npy version {version}")
        except ValueError as exc:
            raise invalid(filepath, f"{name}: {exc}") from None
        if got_dtype != dtype or fortran:
            raise invalid(filepath, f"{name} must be a C-ordered {dtype} array, got {got_dtype}")
        if shape == (None,):
            if len(got_shape) != 1 or got_shape[0] > MAX_CONFIG_BYTES:
                raise invalid(filepath, f"{name} must hold at most {MAX_CONFIG_BYTES} bytes")
        elif tuple(got_shape) != tuple(shape):
            raise invalid(filepath, f"{name} must have shape {tuple(shape)}, got {got_shape}")
        nbytes = int(np.prod(got_shape, dtype=np.int64)) * dtype.itemsize
        if f.tell() + nbytes != info.file_size:
            raise invalid(filepath, f"{name}: its header says {nbytes} bytes, the member holds "
                                    f"{info.file_size - f.tell()}")  # fmt: skip
        out = np.empty(got_shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < nbytes:
            n = f.readinto(view[done:])
            if not n:
                raise invalid(filepath, f"{name} is truncated")
            done += n
        if f.read(1):  # (reading to the end also checks the member's CRC)
            raise invalid(filepath, f"{name} has trailing data")
    return out
