"""Every backend module provides every member of kernels.spec.Backend, with its signature.

The member list is read from spec.Backend itself: its methods (parameter names, kinds and
defaults must equal the spec's, less ``self``) and its annotated attributes (``name``,
an instance of the annotated type). kernels.cuda is checked wherever CuPy imports, device
or not; it is skipped, saying so, only where CuPy itself cannot be imported.
"""
import importlib
import inspect
import typing

import pytest

from kernels import spec

METHODS = sorted(member for member, value in vars(spec.Backend).items()
                 if inspect.isfunction(value) and not member.startswith("_"))
ATTRIBUTES = typing.get_type_hints(spec.Backend)
BACKENDS = ["reference", "cpu", "cuda"]


def backend_module(name):
    if name == "cuda":
        try:
            importlib.import_module("cupy")
        except ImportError as error:
            pytest.skip(f"CuPy cannot be imported here ({error}), so kernels.cuda cannot be")
    return importlib.import_module(f"kernels.{name}")


def parameters(function, drop_self=False):
    """(name, kind, default) of each parameter: what a caller relies on."""
    found = list(inspect.signature(function).parameters.values())
    if drop_self:
        assert found[0].name == "self", function
        found = found[1:]
    return [(p.name, p.kind, p.default) for p in found]


def test_the_spec_has_members():
    """A guard on the derivation below: an empty list would make the tests vacuous."""
    assert {"to_device", "dense_forward", "softmax_cross_entropy", "adam", "guard_update",
            "metric_sums"} <= set(METHODS)
    assert set(ATTRIBUTES) == {"name", "gemm_library"}


@pytest.mark.parametrize("member", METHODS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_has_the_spec_method(backend, member):
    module = backend_module(backend)
    assert hasattr(module, member), f"kernels.{backend} has no {member}"
    function = getattr(module, member)
    assert callable(function), f"kernels.{backend}.{member} is not callable"
    assert parameters(function) == parameters(getattr(spec.Backend, member), drop_self=True), \
        f"kernels.{backend}.{member}{inspect.signature(function)} differs from the spec's"


@pytest.mark.parametrize("member", sorted(ATTRIBUTES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_has_the_spec_attribute(backend, member):
    module = backend_module(backend)
    assert hasattr(module, member), f"kernels.{backend} has no {member}"
    assert isinstance(getattr(module, member), ATTRIBUTES[member])
