"""DoG: SGD whose step size is the distance travelled over the root of the summed gradient norms."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optzoo._core.optimizer import (
    Implementation,
    NonfinitePolicy,
    ParamsT,
    RuleOptimizer,
)
from optzoo._core.rules import (
    add_scaled_,
    exact_param,
    keep_master_copy,
    realized,
    sum_of_squares,
    widened,
)
from optzoo._core.validation import NON_NEGATIVE, POSITIVE
from optzoo.registry import register


def _with_weight_decay(grad: Tensor, param: Tensor, weight_decay: Any) -> Tensor:
    """g + weight_decay * x (an L2 penalty in the gradient, as the authors' code does)."""
    if isinstance(weight_decay, int | float) and weight_decay == 0:
        return grad
    return grad + weight_decay * param


class DistanceOverGradients:
    """The DoG rule over one param group, treated as a single vector.

    ``prepare`` (one pass over the group) computes the group's scalars and advances the group
    state ``max_distance`` (r̄) and ``sum_grad_norm_sq`` (G); the elementwise phase then takes
    the same SGD step ``x -= eta * g`` on every tensor. Hyperparameters: ``lr``, ``reps_rel``,
    ``weight_decay``, ``eps``.
    """

    buffers = ("initial_param",)
    group_buffers = ("max_distance", "sum_grad_norm_sq")
    # Non-finite whenever a gradient is (or its squared norm overflows float32): the fused
    # update's own non-finite check, with no separate read of the gradients.
    gradient_check = "sum_grad_norm_sq"

    def __init__(self) -> None:
        self.__name__ = "dog"

    @staticmethod
    def init_state(param: Tensor, state: dict[str, Tensor]) -> None:
        state["initial_param"].copy_(param.detach())
        keep_master_copy(param, state)

    def prepare(self, params, grads, states, group_state, hp) -> list[Tensor]:
        params = [exact_param(p, s) for p, s in zip(params, states, strict=True)]
        grads = [
            _with_weight_decay(widened(g), p, hp["weight_decay"])
            for g, p in zip(grads, params, strict=True)
        ]
        initial = [s["initial_param"] for s in states]
        distance = sum_of_squares([p - x0 for p, x0 in zip(params, initial, strict=True)]).sqrt()
        initial_movement = hp["reps_rel"] * (1 + sum_of_squares(initial).sqrt())
        max_distance = torch.maximum(
            group_state["max_distance"].double(), torch.maximum(distance, initial_movement)
        )
        sum_grad_norm_sq = group_state["sum_grad_norm_sq"].double() + sum_of_squares(grads)
        group_state["max_distance"].copy_(max_distance)
        group_state["sum_grad_norm_sq"].copy_(sum_grad_norm_sq)
        eta = realized(hp["lr"] * max_distance / (sum_grad_norm_sq + hp["eps"]).sqrt())
        return [eta] * len(params)

    def __call__(self, params, grads, states, group_state, hp, scalars) -> None:
        for p, g, s, eta in zip(params, grads, states, scalars, strict=True):
            x = exact_param(p, s)
            add_scaled_(x, _with_weight_decay(g, x, hp["weight_decay"]), -eta)
            if x is not p:
                p.copy_(x)


@register(
    family="first_order",
    paper="DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size Schedule",
    year=2023,
    oracle="gradient",
    state_bytes_per_param=4,
    fast_path=True,
    elementwise=True,
    # The authors' setting for batch-normalised models: a 100x larger first step, so the
    # 20-step bfloat16 check sees the loss move (with 1e-6 DoG spends its first ~20 steps on
    # the MLP growing its step, loss changes of 1e-4 that bfloat16 cannot show). On the
    # logistic problem: 0.080 after 200 steps; the defaults reach 0.112.
    test_hyperparameters={"reps_rel": 1e-4},
)
class DoG(RuleOptimizer):
    """DoG ("Distance over Gradients"), a learning-rate-free step size for SGD from Ivgi, Hinder
    & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size Schedule" (ICML
    2023).

    Plain SGD whose step size is computed from the run itself: the largest distance the
    parameters have moved from their starting point, divided by the root of the summed squared
    gradient norms. The step starts tiny (r_eps) and grows roughly geometrically until it
    matches the problem's scale; no learning rate is tuned. Each param group is treated as one
    vector (the paper's DoG; its layer-wise variant L-DoG is not provided). With x_0 the
    parameters at the first step and g_t = grad + weight_decay * x_t::

        r_eps  = reps_rel * (1 + ||x_0||)
        rbar_t = max(r_eps, max_{i<=t} ||x_i - x_0||)
        G_t    = eps + sum_{i<=t} ||g_i||^2
        x_{t+1} = x_t - lr * rbar_t / sqrt(G_t) * g_t

    Defaults from the paper and the authors' code (formll/dog): reps_rel 1e-6 (the authors
    suggest 1e-4 for models with batch normalization), lr 1.0 (the paper's c = 1; kept as a
    multiplier so LR schedulers work), eps 1e-8 added to G, weight_decay 0 (an L2 term added to
    the gradient, as in the authors' code). The authors stress that DoG should be used with
    iterate averaging (their polynomial-decay averager), which is not part of this optimizer.
    State: a copy of x_0 (4 bytes per float32 parameter) and two scalars per group (rbar, G).
    bfloat16/float16 parameters also get a float32 master copy (4 bytes per parameter): DoG's
    first steps move them by ~reps_rel relative, far below bfloat16 resolution, so without it
    they would never move and the step size would never grow.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "reps_rel": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "eps": POSITIVE,
    }
    rule = DistanceOverGradients()

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        reps_rel: float = 1e-6,
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        *,
        implementation: Implementation = "auto",
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        defaults = {"lr": lr, "reps_rel": reps_rel, "weight_decay": weight_decay, "eps": eps}
        super().__init__(params, defaults, implementation=implementation, on_nonfinite=on_nonfinite)
