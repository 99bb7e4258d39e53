"""Prodigy: Adam whose learning rate is an online estimate d of the distance to the solution."""

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
    add_product_,
    add_scaled_,
    exact_param,
    keep_master_copy,
    realized,
    widened,
)
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, UNIT_OPEN_RIGHT
from optzoo.registry import register


def _beta3(hp: dict[str, Any]) -> Any:
    """The decay of the d-estimate's sums: ``beta3``, or sqrt(beta2) when it is None."""
    return hp["betas"][1] ** 0.5 if hp["beta3"] is None else hp["beta3"]


class ProdigyAdam:
    """The Prodigy rule (Adam version) over one param group.

    ``prepare`` (one pass over the group) advances the group's d-estimate: it updates the
    per-tensor sums ``grad_sum`` (s), the group scalars ``correlation_sum`` (r) and
    ``distance_estimate`` (d), and hands the step's d_k and step size gamma_k d_k on to the
    elementwise phase, an Adam step on moments of d_k g. Hyperparameters: ``lr``, ``betas``,
    ``beta3``, ``eps``, ``weight_decay``, ``d0``, ``d_coef``, ``use_bias_correction``,
    ``safeguard_warmup``.
    """

    buffers = ("exp_avg", "exp_avg_sq", "grad_sum", "initial_param")
    prepare_buffers = ("grad_sum",)  # updated in prepare (masked on a skipped step)
    group_buffers = ("distance_estimate", "correlation_sum")

    def __init__(self) -> None:
        self.__name__ = "prodigy"

    @staticmethod
    def init_state(param: Tensor, state: dict[str, Tensor]) -> None:
        state["initial_param"].copy_(param.detach())
        keep_master_copy(param, state)

    def prepare(self, params, grads, states, group_state, hp) -> list[dict[str, Tensor]]:
        beta1, beta2 = hp["betas"]
        beta3 = _beta3(hp)
        stored = group_state["distance_estimate"].double()
        d = torch.where(stored > 0, stored, hp["d0"])  # 0 until the first step: start at d0
        step_size = hp["lr"] * d
        if hp["use_bias_correction"]:
            step = states[0]["step"].double()
            step_size = step_size * (1 - beta2**step).sqrt() / (1 - beta1**step)
        # r and s both carry the weight (1 - beta3) gamma_k d_k^2; only their ratio matters.
        weight = (1 - beta3) * d * step_size
        grad_weight = realized((1 - beta3) * d * d if hp["safeguard_warmup"] else weight)

        params = [exact_param(p, s) for p, s in zip(params, states, strict=True)]
        grads = [widened(g) for g in grads]
        correlation = torch.stack(
            [
                (g * (s["initial_param"] - p)).sum().double()
                for p, g, s in zip(params, grads, states, strict=True)
            ]
        ).sum()
        correlation_sum = beta3 * group_state["correlation_sum"].double() + weight * correlation
        l1_norms = []
        for g, s in zip(grads, states, strict=True):
            grad_sum = s["grad_sum"].mul_(beta3).add_(g * grad_weight)
            l1_norms.append(grad_sum.abs().sum().double())
        grad_sum_l1 = torch.stack(l1_norms).sum()
        d_hat = torch.where(
            grad_sum_l1 > 0,
            hp["d_coef"] * correlation_sum / grad_sum_l1,
            torch.zeros_like(grad_sum_l1),
        )
        group_state["correlation_sum"].copy_(correlation_sum)
        group_state["distance_estimate"].copy_(torch.maximum(d, d_hat))
        return [{"d": d, "step_size": step_size}] * len(params)

    def __call__(self, params, grads, states, group_state, hp, scalars) -> None:
        beta1, beta2 = hp["betas"]
        for p, g, s, c in zip(params, grads, states, scalars, strict=True):
            x = exact_param(p, s)
            d, step_size = c["d"], c["step_size"]
            m, v = s["exp_avg"], s["exp_avg_sq"]
            m.mul_(beta1).add_(g * ((1 - beta1) * d))
            add_product_(v.mul_(beta2), g, g, (1 - beta2) * d * d)
            update = m / (v.sqrt() + d * hp["eps"])
            weight_decay = hp["weight_decay"]
            if not (isinstance(weight_decay, int | float) and weight_decay == 0):
                update = update + weight_decay * x
            add_scaled_(x, update, -step_size)
            if x is not p:
                p.copy_(x)


@register(
    family="first_order",
    paper="Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
    year=2024,
    oracle="gradient",
    state_bytes_per_param=16,
    fast_path=True,
    elementwise=True,
    invalid_hyperparameters=(({"beta3": 1.0}, "beta3"), ({"beta3": -0.5}, "beta3")),
)
class Prodigy(RuleOptimizer):
    """Prodigy, the Adam version of the learning-rate-free method of Mishchenko & Defazio,
    "Prodigy: An Expeditiously Adaptive Parameter-Free Learner" (ICML 2024).

    Adam whose learning rate is d_k, an estimate of the distance from the initial point to the
    solution that starts at a tiny d0 and only grows. The estimate is the ratio of two running
    sums: the gradients' correlation with the direction back to x_0, and the l1 norm of the
    accumulated gradients, both weighted by d_k^2 (which makes d grow faster than in
    D-Adaptation). One estimate per param group. With gamma_k = lr, beta3 = sqrt(beta2)::

        m = b1 m + (1 - b1) d_k g;   v = b2 v + (1 - b2) d_k^2 g^2
        r = b3 r + (1 - b3) gamma_k d_k^2 <g, x_0 - x_k>
        s = b3 s + (1 - b3) gamma_k d_k^2 g
        d_{k+1} = max(d_k, d_coef * r / ||s||_1)
        x_{k+1} = x_k - gamma_k d_k (m / (sqrt(v) + d_k eps) + weight_decay x_k)

    The update is the paper's algorithm (the step and eps use d_k; the authors' code scales eps
    by d_{k+1}). Defaults are those of the authors' code (konstmish/prodigy): lr 1.0, betas
    (0.9, 0.999), beta3 None = sqrt(beta2), eps 1e-8, d0 1e-6, d_coef 1.0, decoupled
    weight_decay 0 scaled by gamma_k d_k, no bias correction (``use_bias_correction=True``
    multiplies gamma_k d_k by sqrt(1 - b2^k) / (1 - b1^k)), ``safeguard_warmup=False`` (True
    drops gamma_k from s, for runs with LR warm-up). Where ||s||_1 = 0 (no gradient yet) d is
    kept and the step taken (the code skips the step). The code's ``growth_rate`` cap and
    ``slice_p`` subsampling are not provided.
    State: exp_avg, exp_avg_sq, s and a copy of x_0 (16 bytes per float32 parameter) and two
    scalars per group (d, r). The authors' code shares one d across all param groups; here each
    group has its own estimate. bfloat16/float16 parameters also get a float32 master copy (4
    bytes per parameter): steps of size ~d0 are far below bfloat16 resolution, so without it
    the parameters, and with them the estimate d, would never move.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "betas": UNIT_OPEN_RIGHT,
        "eps": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "d0": POSITIVE,
        "d_coef": POSITIVE,
    }
    rule = ProdigyAdam()

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        *,
        implementation: Implementation = "auto",
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "beta3": beta3,
            "eps": eps,
            "weight_decay": weight_decay,
            "d0": d0,
            "d_coef": d_coef,
            "use_bias_correction": bool(use_bias_correction),
            "safeguard_warmup": bool(safeguard_warmup),
        }
        super().__init__(params, defaults, implementation=implementation, on_nonfinite=on_nonfinite)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        beta3 = self.param_groups[-1]["beta3"]
        if beta3 is not None and not UNIT_OPEN_RIGHT.contains(beta3):
            self.param_groups.pop()
            raise ValueError(
                f"invalid beta3={beta3!r}: expected None (meaning sqrt(betas[1])) or "
                f"{UNIT_OPEN_RIGHT.describe()}"
            )
