"""A non-differentiable network on scikit-learn's digits, for gradient-free methods.

The network is ``64 -> 64 -> 10``: the hidden layer uses the sign activation and the output
logits pass through a staircase (rounded to multiples of 0.25) before the cross-entropy. Both
are piecewise constant, so the loss is a step function of every parameter: its gradient is zero
almost everywhere (and undefined on the steps), and autograd returns zeros. That is why the
workload offers the ``"loss_closure"`` oracle only: a gradient oracle would hand an algorithm a
zero vector. (Straight-through or surrogate gradients change the model's backward pass; they
belong in a differentiable surrogate workload, not here.) The staircase keeps the loss graded
(many levels rather than a 0/1 error), which gives population and zeroth-order methods a usable
signal. Pixels are centred to [-0.5, 0.5] so the sign units start balanced. Minibatches of 256
images; the metric is the test error rate (tied staircase logits go to the lowest class index,
as ``torch.argmax`` breaks ties).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from optzoo.bench.workloads.base import Split, Workload, offers, register_workload
from optzoo.bench.workloads.digits import load_digits_split
from optzoo.bench.workloads.supervised import ClassificationTask

STAIR = 0.25
HIDDEN = 64


class Sign(nn.Module):
    """``torch.sign`` as a layer (-1, 0 or +1; zero gradient)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sign(x)


class Staircase(nn.Module):
    """Round to the nearest multiple of ``step`` (a staircase; zero gradient)."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x / self.step) * self.step


def sign_network() -> nn.Module:
    """flatten -> linear 64 -> sign -> linear 10 -> staircase (4.8k parameters)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, HIDDEN),
        Sign(),
        nn.Linear(HIDDEN, 10),
        Staircase(STAIR),
    )


@lru_cache(maxsize=1)
def centered_digits() -> Split:
    """The digits split with pixels centred to [-0.5, 0.5], so the sign units start balanced."""
    split = load_digits_split()
    return Split(split.x_train - 0.5, split.y_train, split.x_test - 0.5, split.y_test)


def build(seed: int) -> ClassificationTask:
    """The sign-network digits task for ``seed``."""
    return ClassificationTask(centered_digits(), sign_network, 256, seed)


NONDIFF_DIGITS = register_workload(
    Workload(
        name="nondiff_digits",
        description="scikit-learn digits, network 64-64-10 with sign hidden units and "
        "staircase logits (gradient zero almost everywhere), batch 256; metric: test error "
        "rate",
        build=build,
        data=centered_digits,
        oracles=offers("loss_closure"),
        metric="error_rate",
        max_steps=500,
        time_budget_s=30.0,
        eval_every=25,
        suite=frozenset({"full"}),
    )
)
