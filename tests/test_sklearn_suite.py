"""scikit-learn's own MLP test suite, run against fastbp's estimators.

The INSTALLED scikit-learn's ``neural_network/tests/test_mlp.py`` is read at collection time, its
one import of the estimators swapped for ``fastbp.sklearn``'s, and its test functions collected
here (their parametrizations included): nothing of it is copied into this project.
"""

import importlib.util
import pathlib
import re
import types

import pytest

spec = importlib.util.find_spec("sklearn.neural_network")
if spec is None:
    pytest.skip("scikit-learn is not installed", allow_module_level=True)
SOURCE = pathlib.Path(spec.origin).parent / "tests" / "test_mlp.py"
if not SOURCE.exists():
    pytest.skip(f"this scikit-learn ships no {SOURCE.name}", allow_module_level=True)

IMPORT = re.compile(r"^from sklearn\.neural_network import MLPClassifier, MLPRegressor$", re.M)
text, swapped = IMPORT.subn(
    "from fastbp.sklearn import MLPClassifier, MLPRegressor", SOURCE.read_text()
)
if swapped != 1:  # a scikit-learn that imports its estimators otherwise: fail, do not skip
    raise RuntimeError(f"{SOURCE}: expected its one import of MLPClassifier, MLPRegressor")
suite = types.ModuleType("sklearn_test_mlp_on_fastbp")
suite.__file__ = str(SOURCE)
exec(compile(text, str(SOURCE), "exec"), suite.__dict__)  # noqa: S102 (scikit-learn's tests)
assert suite.MLPClassifier.__module__ == "fastbp.sklearn"
globals().update({k: v for k, v in vars(suite).items() if k.startswith("test_") and callable(v)})


@pytest.fixture
def global_random_seed():
    """scikit-learn's fixture (its conftest) with its default seed."""
    return 42
