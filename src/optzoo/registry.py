"""One registry of every algorithm: name -> class + the metadata the contract suite and the
benchmark rely on. Registering an algorithm is what puts it under the contract suite
(``tests/test_contract.py``) and into ``optzoo bench``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

FAMILIES = (
    "first_order",
    "lowrank",
    "curvature",
    "gradient_free",
    "local_learning",
    "bilevel",
    "solvers",
    "distributed",
)
# What the algorithm needs from the user each step.
ORACLES = (
    "gradient",  # loss.backward() has filled p.grad
    "gradient_closure",  # step(closure) where the closure computes loss and gradients
    "loss_closure",  # step(closure) where the closure returns a loss only (no backward)
    "per_sample_residuals",  # step(closure) where the closure returns per-sample residuals
    "per_sample_losses",  # step(closure) where the closure returns per-sample losses (no backward)
    "layer_local",  # a trainer's fit(model, data) with layer-local signals, no end-to-end backward
)
REFERENCE_PROBLEMS = ("quadratic", "logistic", "mlp", "separable")


@dataclass(frozen=True)
class AlgorithmSpec:
    """Metadata of one registered algorithm (the spec table the contract suite runs on).

    ``state_bytes_per_param``: bytes of optimizer state per parameter element for float32
    parameters after one step, excluding O(1)-per-tensor scalars; a number, or a function of the
    list of parameters for algorithms whose state depends on shapes (low-rank methods).
    ``test_hyperparameters`` are used by the contract suite (with the defaults for the rest);
    ``convergence`` is ``(steps, loss_threshold)`` on ``reference_problem``.
    ``invalid_hyperparameters`` lists ``(kwargs, message_fragment)`` error cases beyond those
    derived automatically from the class's ``hyperparameter_ranges``.
    ``search_space`` is what ``optzoo bench`` tunes: hyperparameter -> ``(low, high)`` (a
    log-uniform range) or a list of values; ``None`` (default) tunes ``lr`` log-spaced around
    its default, or runs the defaults when there is no ``lr`` (``optzoo.bench.algorithms``).
    """

    name: str
    cls: type
    family: str
    paper: str
    year: int
    oracle: str
    state_bytes_per_param: float | Callable[[list[Any]], float]
    needs_closure: bool = False
    supports_bf16: bool = True
    supports_float64: bool = True
    fast_path: bool = False
    elementwise: bool = False
    reference_problem: str = "logistic"
    convergence: tuple[int, float] = (200, 0.35)
    test_hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    invalid_hyperparameters: tuple[tuple[Mapping[str, Any], str], ...] = ()
    search_space: Mapping[str, Any] | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        """Constructor defaults (the paper's, stated in each class docstring)."""
        sig = inspect.signature(self.cls.__init__)
        return {
            n: p.default
            for n, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty and n not in ("self", "params")
        }

    def expected_state_bytes(self, params: list[Any]) -> float:
        if callable(self.state_bytes_per_param):
            return float(self.state_bytes_per_param(params))
        return float(self.state_bytes_per_param)


_REGISTRY: dict[str, AlgorithmSpec] = {}
REGISTRY: Mapping[str, AlgorithmSpec] = MappingProxyType(_REGISTRY)


def register(
    *,
    family: str,
    paper: str,
    year: int,
    oracle: str,
    state_bytes_per_param: float | Callable[[list[Any]], float],
    name: str | None = None,
    **metadata: Any,
) -> Callable[[type], type]:
    """Class decorator: register ``cls`` under ``name`` (default: the class name)."""

    def decorate(cls: type) -> type:
        spec = AlgorithmSpec(
            name=name or cls.__name__,
            cls=cls,
            family=family,
            paper=paper,
            year=year,
            oracle=oracle,
            state_bytes_per_param=state_bytes_per_param,
            **metadata,
        )
        _check(spec)
        _REGISTRY[spec.name] = spec
        return cls

    return decorate


def _check(spec: AlgorithmSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(
            f"algorithm name {spec.name!r} is already registered by "
            f"{_REGISTRY[spec.name].cls.__module__}.{_REGISTRY[spec.name].cls.__qualname__}"
        )
    lowered = {n.lower(): n for n in _REGISTRY}
    if spec.name.lower() in lowered:
        raise ValueError(
            f"algorithm name {spec.name!r} collides with {lowered[spec.name.lower()]!r}"
        )
    if spec.family not in FAMILIES:
        raise ValueError(f"unknown family {spec.family!r}; expected one of {FAMILIES}")
    if spec.oracle not in ORACLES:
        raise ValueError(f"unknown oracle {spec.oracle!r}; expected one of {ORACLES}")
    if spec.reference_problem not in REFERENCE_PROBLEMS:
        raise ValueError(f"unknown reference problem {spec.reference_problem!r}")
    if not spec.cls.__doc__:
        raise ValueError(f"{spec.name} has no docstring (it must name its paper and defaults)")


def get(name: str) -> AlgorithmSpec:
    """The spec registered under ``name`` (case-insensitive); unknown names list close matches."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    lowered = {n.lower(): n for n in _REGISTRY}
    if name.lower() in lowered:
        return _REGISTRY[lowered[name.lower()]]
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown algorithm {name!r}{hint} (optzoo.available() lists the {len(_REGISTRY)} "
        "registered algorithms)"
    )


def available(family: str | None = None) -> list[str]:
    """Registered algorithm names, optionally of one family, sorted."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)


def create(name: str, params: Iterable[Any], **hyperparameters: Any) -> Any:
    """Build the registered algorithm ``name`` on ``params`` with ``hyperparameters``
    (the paper's defaults for the rest)."""
    return get(name).cls(params, **hyperparameters)
