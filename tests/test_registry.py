import inspect

import pytest
import torch

import optzoo
from optzoo._core.optimizer import ZooOptimizer
from optzoo.registry import REGISTRY, register


def test_public_api_and_registry_agree():
    optimizer_classes = {
        name
        for name in optzoo.__all__
        if inspect.isclass(getattr(optzoo, name))
        and issubclass(getattr(optzoo, name), torch.optim.Optimizer)
    }
    registered = {spec.cls.__name__ for spec in REGISTRY.values()}
    assert optimizer_classes <= registered, optimizer_classes - registered
    for spec in REGISTRY.values():
        assert spec.cls.__name__ in optzoo.__all__, f"{spec.name} is registered but not public"
        assert getattr(optzoo, spec.cls.__name__) is spec.cls


def test_every_optimizer_subclass_in_the_package_is_registered():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    registered = {spec.cls for spec in REGISTRY.values()}
    # engine base classes that are not algorithms themselves set ``abstract = True`` in their body
    concrete = [
        c
        for c in subclasses(ZooOptimizer)
        if not c.__module__.startswith("optzoo._core") and not c.__dict__.get("abstract", False)
    ]
    assert concrete, "no optimizer classes found"
    for cls in concrete:
        assert cls in registered, f"{cls.__module__}.{cls.__qualname__} is not registered"


def test_create_builds_by_name_case_insensitively():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = optzoo.create("lion", [p], lr=0.5)
    assert isinstance(opt, optzoo.Lion)
    assert opt.param_groups[0]["lr"] == 0.5


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown algorithm 'lino'.*'Lion'"):
        optzoo.create("lino", [torch.nn.Parameter(torch.zeros(2))])


def test_name_collisions_are_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register(
            family="first_order",
            paper="x",
            year=2000,
            oracle="gradient",
            state_bytes_per_param=0,
            name="Lion",
        )
        class Dup:
            """Doc."""

    with pytest.raises(ValueError, match="collides"):

        @register(
            family="first_order",
            paper="x",
            year=2000,
            oracle="gradient",
            state_bytes_per_param=0,
            name="LION",
        )
        class Dup2:
            """Doc."""


def test_bad_metadata_is_refused():
    with pytest.raises(ValueError, match="unknown family"):

        @register(
            family="zeroth",
            paper="x",
            year=2000,
            oracle="gradient",
            state_bytes_per_param=0,
            name="NewOne",
        )
        class NewOne:
            """Doc."""

    assert "NewOne" not in REGISTRY


def test_spec_defaults_come_from_the_constructor():
    spec = optzoo.get("Lion")
    assert spec.defaults["lr"] == 1e-4
    assert spec.defaults["betas"] == (0.9, 0.99)
