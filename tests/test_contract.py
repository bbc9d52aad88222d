"""The kernel contract is enforced: every backend provides every kernel the model can call, and
every kernel the model and layers call is declared in the contract."""

import ast
import pathlib

import pytest

import fastbp as fb
from fastbp.backends import contract

SOURCES = sorted(pathlib.Path(fb.__file__).parent.glob("*.py"))
ALL_BACKENDS = ["numpy", "cython", "numba", "cuda"]


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_every_backend_provides_the_contract(name):
    if name not in fb.backends.available():
        pytest.skip(f"backend {name!r} does not import here")
    assert contract.missing(fb.backends.get(name)) == []


def test_a_backend_lacking_a_kernel_is_caught():
    import types

    module = types.ModuleType("partial")
    module.name = "partial"
    for k in contract.KERNELS:
        setattr(module, k, lambda *a: None)
    assert contract.missing(module) == []
    del module.gru_backward
    module.train_step = lambda *a: None  # half a compiled loop
    want = ["gru_backward", "Plan", "train_epoch", "train_epochs", "infer"]
    want += ["train_epochs_sparse", "infer_sparse", "loss_grad"]
    assert contract.missing(module) == want


def _called_on_backends(path: pathlib.Path) -> set[str]:
    """Attribute names called on ``backend``, ``be`` or ``self.backend`` in one source file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (isinstance(owner, ast.Name) and owner.id in ("backend", "be")) or (
                isinstance(owner, ast.Attribute) and owner.attr == "backend"
            ):
                names.add(node.func.attr)
    return names


def test_every_kernel_the_model_calls_is_declared():
    declared = set(contract.KERNELS + contract.DEVICE_KERNELS + contract.COMPILED_LOOP)
    called = set().union(*(_called_on_backends(p) for p in SOURCES))
    assert called, "the scan found no backend calls: its patterns are stale"
    assert called - declared == set()
