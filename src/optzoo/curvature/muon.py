"""Muon: momentum orthogonalized by Newton-Schulz for matrices, AdamW for everything else.

Also home of the split both Muon and FISMO use: ``MatrixOptimizer`` sends each parameter that
counts as a matrix (``optzoo._core.matrices.is_matrix`` with both sides at least 2; convolution
kernels through their ``(out, in * k * k)`` view) to a per-matrix rule and the rest (biases,
norm scales, 1 x n heads) to an inner AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from optzoo._core.matrices import as_matrix, is_matrix
from optzoo._core.optimizer import NonfinitePolicy, ParamsT, RuleOptimizer
from optzoo._core.rules import AddDecayedWeights, ScaleByAdam, State, chain, ema_
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, UNIT_OPEN_RIGHT, Interval
from optzoo.curvature.orthogonalize import newton_schulz, shape_scale
from optzoo.registry import register

MatrixStep = Callable[[Tensor, Tensor, State, dict[str, Any]], None]
STEPS = Interval(0.0, math.inf, integer=True)
# Hyperparameters of the inner AdamW that updates the parameters that are not matrices.
ADAMW_RANGES = {
    "adamw_lr_ratio": NON_NEGATIVE,
    "adamw_betas": UNIT_OPEN_RIGHT,
    "adamw_eps": POSITIVE,
    "adamw_weight_decay": NON_NEGATIVE,
}


def uses_matrix_rule(param: Tensor, group: dict[str, Any]) -> bool:
    """Whether ``param`` takes the matrix rule: the group's ``orthogonalize`` if set (True or
    False), else whether it is a matrix with both sides of its matrix view at least 2."""
    choice = group.get("orthogonalize")
    return is_matrix(param, min_dim=2) if choice is None else bool(choice)


def split_state_bytes(params: Sequence[Tensor], matrix_floats: Callable[[int, int], int]) -> float:
    """State bytes per parameter element (float32) of a ``MatrixOptimizer`` in one group with
    default settings: ``matrix_floats(rows, cols)`` per matrix, AdamW's 2 floats per element of
    the rest."""
    params = list(params)
    total = 0
    for p in params:
        if is_matrix(p, min_dim=2):
            total += 4 * matrix_floats(*as_matrix(p).shape)
        else:
            total += 8 * p.numel()
    return total / sum(p.numel() for p in params)


class SplitRule:
    """Group rule of a ``MatrixOptimizer``: ``matrix_step(param, grad, state, hp)`` for each
    parameter that takes the matrix rule, AdamW (``ScaleByAdam`` + ``AddDecayedWeights``) with
    ``lr * adamw_lr_ratio`` and the ``adamw_*`` hyperparameters for the others. Each step
    function creates its own state on first use (which buffers depend on the parameter)."""

    buffers = ()
    adamw = chain(ScaleByAdam(), AddDecayedWeights(), name="inner_adamw")

    def __init__(self, matrix_step: MatrixStep, name: str) -> None:
        self.matrix_step = matrix_step
        self.__name__ = name

    def __call__(self, params, grads, states, group_state, hp) -> None:
        rest = []
        for i, (p, g, s) in enumerate(zip(params, grads, states, strict=True)):
            if uses_matrix_rule(p, hp):
                self.matrix_step(p, g, s, hp)
            else:
                rest.append(i)
        if not rest:
            return
        sub = [[xs[i] for i in rest] for xs in (params, grads, states)]
        for p, s in zip(sub[0], sub[2], strict=True):
            if "exp_avg" not in s:
                s["exp_avg"] = torch.zeros_like(p)
                s["exp_avg_sq"] = torch.zeros_like(p)
        adamw_hp = {
            "lr": hp["lr"] * hp["adamw_lr_ratio"],
            "betas": hp["adamw_betas"],
            "eps": hp["adamw_eps"],
            "weight_decay": hp["adamw_weight_decay"],
        }
        scalars = self.adamw.prepare(*sub, group_state, adamw_hp)
        self.adamw(*sub, group_state, adamw_hp, scalars)


class MatrixOptimizer(RuleOptimizer):
    """Base of optimizers with a rule for matrices and an inner AdamW for the rest.

    A param group may set ``orthogonalize=True`` or ``False`` to force its parameters onto the
    matrix rule or onto AdamW (the Muon authors keep embeddings and classifier heads on AdamW);
    by default the split is by shape (``uses_matrix_rule``). The inner AdamW's learning rate is
    ``lr * adamw_lr_ratio``, so a learning-rate schedule scales both. Runs eagerly (the matrix
    rules are matrix products, not elementwise kernels)."""

    abstract: ClassVar[bool] = True  # an engine base, not an algorithm (see tests/test_registry)
    compilable: ClassVar[bool] = False

    def __init__(
        self, params: ParamsT, defaults: dict[str, Any], *, on_nonfinite: NonfinitePolicy
    ) -> None:
        defaults = {"orthogonalize": None, **defaults}
        super().__init__(params, defaults, implementation="reference", on_nonfinite=on_nonfinite)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        choice = group["orthogonalize"]
        if choice not in (None, True, False):
            self.param_groups.pop()
            raise ValueError(f"invalid orthogonalize={choice!r}: expected None, True or False")
        flat = [p for p in group["params"] if p.ndim < 2]
        if choice and flat:
            self.param_groups.pop()
            raise ValueError(
                "orthogonalize=True needs matrix parameters, got one of shape "
                f"{tuple(flat[0].shape)}"
            )


def muon_step(param: Tensor, grad: Tensor, state: State, hp: dict[str, Any]) -> None:
    """One Muon step of one matrix (see ``Muon``)."""
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(param)
    buf = state["momentum_buffer"]
    beta = hp["momentum"]
    ema_(buf, grad, beta)
    direction = grad.lerp(buf, beta) if hp["nesterov"] else buf
    matrix = as_matrix(direction)
    update = newton_schulz(matrix, hp["ns_steps"]) * shape_scale(*matrix.shape)
    param.mul_(1 - hp["lr"] * hp["weight_decay"]).add_(update.reshape_as(param), alpha=-hp["lr"])


@register(
    family="curvature",
    paper="Muon: An optimizer for hidden layers in neural networks",
    year=2024,
    oracle="gradient",
    state_bytes_per_param=lambda params: split_state_bytes(params, lambda m, n: m * n),
    reference_problem="mlp",
    convergence=(200, 0.08),
    test_hyperparameters={"lr": 0.05, "adamw_lr_ratio": 0.2},
)
class Muon(MatrixOptimizer):
    """Muon (MomentUm Orthogonalized by Newton-schulz), from Keller Jordan et al., "Muon: An
    optimizer for hidden layers in neural networks" (2024, blog post and reference code).

    For each matrix parameter W (a convolution kernel as ``(out, in * k * k)``), SGD momentum
    with Nesterov's look-ahead, whose direction is then replaced by an approximation of its
    polar factor (every singular value set to about one) computed by five quintic Newton-Schulz
    steps (``optzoo.curvature.orthogonalize``)::

        B = mu B + (1 - mu) G
        D = (1 - mu) G + mu B              (nesterov; else D = B)
        O = NewtonSchulz5(D) * sqrt(max(1, rows / cols))
        W = (1 - lr * weight_decay) W - lr O

    Parameters that are not matrices (biases, gains, 1 x n heads) are updated by an inner
    AdamW with learning rate ``lr * adamw_lr_ratio`` (see ``MatrixOptimizer``).

    Defaults are the reference code's (KellerJordan/Muon ``muon.py``): lr 0.02, momentum 0.95,
    Nesterov, 5 steps with coefficients (3.4445, -4.7750, 2.0315), weight_decay 0; inner AdamW
    lr 3e-4 (``adamw_lr_ratio`` 0.015 = 3e-4 / 0.02), betas (0.9, 0.95), eps 1e-10, weight
    decay 0. One deviation: the iteration runs in the parameter's working precision (float32,
    or float64) instead of bfloat16, which on CPU is no faster and would make float32 and
    float64 runs disagree. State: the momentum matrix (4 bytes per element), AdamW's two moments
    for the rest.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "momentum": UNIT_OPEN_RIGHT,
        "weight_decay": NON_NEGATIVE,
        "ns_steps": STEPS,
        **ADAMW_RANGES,
    }
    rule = SplitRule(muon_step, name="muon")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        adamw_lr_ratio: float = 0.015,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        *,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": bool(nesterov),
            "ns_steps": ns_steps,
            "weight_decay": weight_decay,
            "adamw_lr_ratio": adamw_lr_ratio,
            "adamw_betas": tuple(adamw_betas),
            "adamw_eps": adamw_eps,
            "adamw_weight_decay": adamw_weight_decay,
        }
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)
