"""Ill-conditioned linear least squares, with exact and with noisy (minibatch) gradients.

The problem is ``min_w mean_i (a_i . w - b_i)^2`` with ``A = U diag(s) V^T`` for random
orthogonal ``U``, ``V`` (so no coordinate scaling can undo the conditioning, and diagonal
preconditioners such as Adam's get no free help), singular values ``s`` log-spaced so that the
Hessian ``2 A^T A / n`` has condition number ``CONDITION`` (1e4; ``A`` itself has 1e2), and
``b = A w_true + noise``. The metric is the excess loss ``f(w) - f(w*)``, computed in float64
as ``|A (w - w*)|^2 / n`` (exact for least squares), so it can be followed down to 1e-10.

``least_squares`` uses the whole data set every step (deterministic gradients).
``least_squares_noisy`` samples minibatches of 8 rows, and the label noise keeps the
minibatch gradients noisy at the optimum: a constant step size stalls at a noise floor there.
It is one of the workloads adaptive methods are not expected to win (DESIGN.md section 5):
the random rotation leaves Adam's diagonal preconditioner nothing to exploit. (Measured when it
was written, best excess loss in 1000 steps over a 5-point LR sweep: constant-LR Adam 0.047,
Nesterov momentum SGD (0.9) 0.041; without the rotation Adam wins by 4x, which is why it is there.)
Both offer per-sample residuals ``a_i . w - b_i`` for least-squares methods.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from optzoo.bench.workloads.base import (
    EpochBatches,
    Forward,
    ResidualTask,
    Workload,
    finite_or_inf,
    generator,
    offers,
    register_workload,
    seeded_module,
)

ROWS = 1024
DIMENSION = 64
CONDITION = 1e4  # of the Hessian 2 A^T A / n
NOISE = 0.5
DATA_SEED = 0


@lru_cache(maxsize=2)
def make_problem(rows: int = ROWS, dimension: int = DIMENSION) -> dict[str, Tensor]:
    """The fixed problem in float64: ``A``, ``b``, the solution ``w_star`` and the float32
    copies ``A32``, ``b32`` used for training. Cached: do not modify the result."""
    g = generator(DATA_SEED, "least_squares", rows, dimension)
    u, _ = torch.linalg.qr(torch.randn(rows, dimension, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(dimension, dimension, generator=g, dtype=torch.float64))
    # Columns of U are orthonormal, so A^T A / n = V diag(s^2 / n) V^T: eigenvalues in [1/k, 1].
    s = rows**0.5 * torch.logspace(
        0.0, -0.5 * torch.log10(torch.tensor(CONDITION)).item(), dimension, dtype=torch.float64
    )
    a = (u * s) @ v.T
    w_true = torch.randn(dimension, generator=g, dtype=torch.float64)
    b = a @ w_true + NOISE * torch.randn(rows, generator=g, dtype=torch.float64)
    w_star = torch.linalg.lstsq(a, b).solution
    return {"A": a, "b": b, "w_star": w_star, "A32": a.float(), "b32": b.float()}


class LeastSquaresTask(ResidualTask):
    """A linear model without bias on the fixed problem; the seed draws the initial point
    (N(0, I / d)) and the minibatch order."""

    def __init__(self, seed: int, batch_size: int | None) -> None:
        self.problem = make_problem()
        self.model = seeded_module(seed, lambda: nn.Linear(DIMENSION, 1, bias=False))
        with torch.no_grad():
            self.model.weight.normal_(0.0, DIMENSION**-0.5, generator=generator(seed, "w0"))
        data = (self.problem["A32"], self.problem["b32"])
        self._batches = None if batch_size is None else EpochBatches(data, batch_size, seed)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        if self._batches is None:
            return self.problem["A32"], self.problem["b32"]
        rows, targets = self._batches(step)
        return rows, targets

    def compute_residuals(self, forward: Forward, batch: tuple[Tensor, Tensor]) -> Tensor:
        rows, targets = batch
        return forward(rows).reshape(-1) - targets

    @torch.no_grad()
    def evaluate(self) -> float:
        error = self.model.weight.reshape(-1).double() - self.problem["w_star"]
        return finite_or_inf(float((self.problem["A"] @ error).square().mean()))


def build_exact(seed: int) -> LeastSquaresTask:
    """Full-batch least squares for ``seed``."""
    return LeastSquaresTask(seed, batch_size=None)


def build_noisy(seed: int) -> LeastSquaresTask:
    """Minibatch (8 rows) least squares for ``seed``."""
    return LeastSquaresTask(seed, batch_size=8)


ORACLES = offers(
    "gradient", "gradient_closure", "loss_closure", "per_sample_residuals", "per_sample_losses"
)

LEAST_SQUARES = register_workload(
    Workload(
        name="least_squares",
        description=f"linear least squares, {ROWS}x{DIMENSION}, Hessian condition number 1e4, "
        "full batch; metric: excess loss f(w) - f(w*)",
        build=build_exact,
        data=make_problem,
        oracles=ORACLES,
        metric="excess_loss",
        max_steps=1000,
        time_budget_s=20.0,
        eval_every=50,
        suite=frozenset({"full"}),
    )
)

LEAST_SQUARES_NOISY = register_workload(
    Workload(
        name="least_squares_noisy",
        description=f"linear least squares, {ROWS}x{DIMENSION}, Hessian condition number 1e4, "
        "minibatches of 8 rows with label noise; metric: excess loss f(w) - f(w*)",
        build=build_noisy,
        data=make_problem,
        oracles=ORACLES,
        metric="excess_loss",
        max_steps=1000,
        time_budget_s=20.0,
        eval_every=50,
        suite=frozenset({"full"}),
    )
)
