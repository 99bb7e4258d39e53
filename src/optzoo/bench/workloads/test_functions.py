"""Classical optimisation test functions as workloads: the "model" is one parameter vector (the
point), and its forward returns the function value, which is both the loss and the metric.

- Rosenbrock: ``sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``, a curved narrow valley with its
  minimum 0 at ``(1, ..., 1)``; starts uniform in [-2, 2]^d.
- Rastrigin: ``10 d + sum_i x_i^2 - 10 cos(2 pi x_i)``, a bowl covered by a grid of local
  minima, global minimum 0 at the origin; starts uniform in [-5.12, 5.12]^d.

Both are sums of squares, so they also offer residuals for least-squares methods:
Rosenbrock's ``10 (x_{i+1} - x_i^2)`` and ``1 - x_i``, Rastrigin's ``x_i`` and
``sqrt(20) sin(pi x_i)`` (since ``10 - 10 cos(2 pi x) = 20 sin^2(pi x)``), each scaled by the
square root of their count so that their mean square is the function value. There is no data:
``batch(step)`` is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from optzoo.bench.workloads.base import (
    Forward,
    ResidualTask,
    Workload,
    finite_or_inf,
    generator,
    offers,
    register_workload,
)


def rosenbrock_residuals(x: Tensor) -> Tensor:
    """Residuals whose sum of squares is the Rosenbrock function of ``x`` (last dimension)."""
    return torch.cat([10.0 * (x[..., 1:] - x[..., :-1].square()), 1.0 - x[..., :-1]], dim=-1)


def rastrigin_residuals(x: Tensor) -> Tensor:
    """Residuals whose sum of squares is the Rastrigin function of ``x`` (last dimension)."""
    return torch.cat([x, math.sqrt(20.0) * torch.sin(math.pi * x)], dim=-1)


class Point(nn.Module):
    """A single parameter vector ``point``; calling the module returns the scaled residuals of
    ``residual_function`` at the point (their mean square is the function value)."""

    def __init__(self, start: Tensor, residual_function: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.point = nn.Parameter(start.clone())
        self.residual_function = residual_function

    def forward(self) -> Tensor:
        residuals = self.residual_function(self.point)
        return residuals * math.sqrt(residuals.shape[-1])


class TestFunctionTask(ResidualTask):
    """Minimise a test function from a start drawn uniformly in ``[-box, box]^dimension``."""

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self, seed: int, dimension: int, box: float, residual_function: Callable[[Tensor], Tensor]
    ) -> None:
        g = generator(seed, "start", dimension)
        start = box * (2 * torch.rand(dimension, generator=g) - 1)
        self.model = Point(start, residual_function)

    def batch(self, step: int) -> None:
        return None

    def compute_residuals(self, forward: Forward, batch: None) -> Tensor:
        return forward()

    @torch.no_grad()
    def evaluate(self) -> float:
        return finite_or_inf(float(self.loss(None)))


ORACLES = offers(
    "gradient", "gradient_closure", "loss_closure", "per_sample_residuals", "per_sample_losses"
)


def _register(
    name: str, residuals: Callable[[Tensor], Tensor], dimension: int, box: float, **budget: object
) -> Workload:
    def build(seed: int) -> TestFunctionTask:
        return TestFunctionTask(seed, dimension, box, residuals)

    build.__doc__ = f"The {name} task for ``seed``."
    kind = name.split("_")[0].capitalize()
    return register_workload(
        Workload(
            name=name,
            description=f"{kind} function in {dimension} dimensions, start uniform in "
            f"[-{box}, {box}]^{dimension}; metric: function value (minimum 0)",
            build=build,
            oracles=ORACLES,
            metric="value",
            **budget,  # type: ignore[arg-type]
        )
    )


FULL = frozenset({"full"})
ROSENBROCK_10 = _register(
    "rosenbrock_10", rosenbrock_residuals, 10, 2.0,
    max_steps=2000, time_budget_s=10.0, eval_every=100, suite=FULL,
)  # fmt: skip
ROSENBROCK_30 = _register(
    "rosenbrock_30", rosenbrock_residuals, 30, 2.0,
    max_steps=3000, time_budget_s=15.0, eval_every=100, suite=frozenset({"full"}),
)  # fmt: skip
RASTRIGIN_10 = _register(
    "rastrigin_10", rastrigin_residuals, 10, 5.12,
    max_steps=2000, time_budget_s=10.0, eval_every=100, suite=FULL,
)  # fmt: skip
RASTRIGIN_30 = _register(
    "rastrigin_30", rastrigin_residuals, 30, 5.12,
    max_steps=3000, time_budget_s=15.0, eval_every=100, suite=frozenset({"full"}),
)  # fmt: skip
