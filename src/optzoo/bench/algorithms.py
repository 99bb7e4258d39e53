"""What the benchmark can run: every registered optzoo algorithm, plus the classical baselines
the target-setting pass tunes (momentum and Nesterov SGD from ``torch.optim``, which optzoo does
not re-implement), each with the oracle it needs and the search space it is tuned over.

A search space maps a hyperparameter to ``(low, high)`` (a log-uniform range) or to a list of
values (a choice). An algorithm's space is, in order of precedence: ``BENCH_SEARCH_SPACES`` here
(the calibrated baselines), the registry's ``AlgorithmSpec.search_space``, or the default rule:
``lr`` from ``default / DEFAULT_LR_SPAN`` to ``default * DEFAULT_LR_SPAN`` (log-spaced), and
nothing (the paper's defaults, one trial) for an algorithm without ``lr``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

import optzoo

DEFAULT_LR_SPAN = 10**1.5
SearchSpace = Mapping[str, tuple[float, float] | list[Any]]


@dataclass(frozen=True)
class BenchAlgorithm:
    """One algorithm as the benchmark sees it."""

    name: str
    family: str
    paper: str
    oracle: str
    build: Callable[..., torch.optim.Optimizer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search_space: SearchSpace = field(default_factory=dict)
    baseline: bool = False


def _sgd(nesterov: bool) -> Callable[..., torch.optim.Optimizer]:
    def build(params: Iterable[Any], **hyperparameters: Any) -> torch.optim.Optimizer:
        options = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, **hyperparameters}
        return torch.optim.SGD(params, **options)

    return build


# Baselines of the target-setting pool that are not optzoo algorithms (AlgoPerf's momentum and
# Nesterov baselines); the benchmark also runs them as entrants.
BASELINES: dict[str, BenchAlgorithm] = {
    name: BenchAlgorithm(
        name=name,
        family="baseline",
        paper="torch.optim.SGD (heavy-ball / Nesterov momentum 0.9)",
        oracle="gradient",
        build=_sgd(nesterov),
        defaults={"lr": 0.1, "momentum": 0.9},
        search_space={"lr": (1e-3, 3.0)},
        baseline=True,
    )
    for name, nesterov in (("SGDMomentum", False), ("SGDNesterov", True))
}

# The calibrated NAdamW baseline (AlgoPerf: NAdamW with warm-up + cosine decay, tuned over a
# wide learning-rate range) and AdamW, the other target-setting baseline.
BENCH_SEARCH_SPACES: dict[str, SearchSpace] = {
    "NAdamW": {"lr": (1e-4, 3e-1)},
    "AdamW": {"lr": (1e-4, 3e-1)},
}


def resolve_algorithm(name: str) -> BenchAlgorithm:
    """The benchmark's view of ``name``: a bench baseline or a registered algorithm (whose
    unknown names raise ``ValueError`` listing close matches)."""
    if name in BASELINES:
        return BASELINES[name]
    spec = optzoo.get(name)
    space = BENCH_SEARCH_SPACES.get(spec.name)
    if space is None:
        space = spec.search_space
    defaults = spec.defaults
    if space is None:
        lr = defaults.get("lr")
        ok = isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0
        space = {"lr": (lr / DEFAULT_LR_SPAN, lr * DEFAULT_LR_SPAN)} if ok else {}
    return BenchAlgorithm(
        name=spec.name,
        family=spec.family,
        paper=spec.paper,
        oracle=spec.oracle,
        build=spec.cls,
        defaults=defaults,
        search_space=dict(space),
    )


def bench_algorithms(include_baselines: bool = True) -> list[BenchAlgorithm]:
    """Every algorithm the benchmark can run, registered ones first, sorted by name."""
    found = [resolve_algorithm(name) for name in optzoo.available()]
    if include_baselines:
        found += [BASELINES[name] for name in sorted(BASELINES)]
    return found


def suits(algorithm: BenchAlgorithm, workload: Any) -> bool:
    """Whether ``workload`` serves the oracle ``algorithm`` needs."""
    return algorithm.oracle in workload.oracles
