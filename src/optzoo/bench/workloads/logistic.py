"""L2-regularised logistic regression on generated data: a smooth, strongly convex problem.

2048 samples of 32 correlated Gaussian features (covariance eigenvalues log-spaced from 1 to
1e-2 in a random basis); labels drawn from a logistic teacher, so the classes overlap and the
minimiser is finite even without the regulariser. The objective is the mean binary
cross-entropy plus ``0.5 * 1e-3 * |w|^2`` (bias not penalised); minibatches of 64 rows. The
metric is that objective on the whole training set (this is an optimisation problem, not a
generalisation test), called ``loss``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor, nn
from torch.nn import functional

from optzoo.bench.workloads.base import (
    EpochBatches,
    Forward,
    ModuleTask,
    Workload,
    finite_or_inf,
    generator,
    offers,
    register_workload,
    seeded_module,
)

SAMPLES = 2048
FEATURES = 32
CONDITION = 100.0  # of the feature covariance
REGULARIZATION = 1e-3
BATCH_SIZE = 64
DATA_SEED = 0


@lru_cache(maxsize=1)
def make_data() -> tuple[Tensor, Tensor]:
    """Features ``(2048, 32)`` and 0/1 float labels ``(2048,)`` (float32). Cached."""
    g = generator(DATA_SEED, "logistic")
    basis, _ = torch.linalg.qr(torch.randn(FEATURES, FEATURES, generator=g, dtype=torch.float64))
    scales = torch.logspace(0.0, -0.5 * math.log10(CONDITION), FEATURES, dtype=torch.float64)
    x = torch.randn(SAMPLES, FEATURES, generator=g, dtype=torch.float64) * scales @ basis.T
    teacher = torch.randn(FEATURES, generator=g, dtype=torch.float64)
    logits = x @ teacher
    logits = 3.0 * logits / logits.std()  # classes overlap but are far from random
    labels = torch.bernoulli(torch.sigmoid(logits), generator=g)
    return x.float(), labels.float()


class PenalizedLinear(nn.Linear):
    """A linear map whose call returns ``(logits, penalty)`` with ``penalty = 0.5 * lambda *
    |weight|^2``: computing the penalty inside ``forward`` lets ``functional_call`` substitute
    the weight in both terms."""

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return super().forward(inputs).reshape(
            -1
        ), 0.5 * REGULARIZATION * self.weight.square().sum()


class LogisticTask(ModuleTask):
    """A linear classifier on 32 features initialised from the seed."""

    def __init__(self, seed: int) -> None:
        self.x, self.y = make_data()
        self.model = seeded_module(seed, lambda: PenalizedLinear(FEATURES, 1))
        self._batches = EpochBatches((self.x, self.y), BATCH_SIZE, seed)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        inputs, labels = self._batches(step)
        return inputs, labels

    def compute_loss(self, forward: Forward, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, labels = batch
        logits, penalty = forward(inputs)
        return functional.binary_cross_entropy_with_logits(logits, labels) + penalty

    @torch.no_grad()
    def evaluate(self) -> float:
        return finite_or_inf(float(self.loss((self.x, self.y))))


LOGISTIC = register_workload(
    Workload(
        name="logistic",
        description="L2-regularised logistic regression (convex), 2048 generated samples x 32 "
        "correlated features, batch 64; metric: full training objective",
        build=LogisticTask,
        data=make_data,
        oracles=offers("gradient", "gradient_closure", "loss_closure"),
        metric="loss",
        max_steps=1000,
        time_budget_s=20.0,
        eval_every=50,
        suite=frozenset({"full"}),
    )
)
