"""AdaGrad-Norm: SGD with one AdaGrad step size per param group, from accumulated gradient norms."""

from __future__ import annotations

from torch import Tensor

from optzoo._core.optimizer import (
    Implementation,
    NonfinitePolicy,
    ParamsT,
    RuleOptimizer,
)
from optzoo._core.rules import add_scaled_, realized, sum_of_squares
from optzoo._core.validation import NON_NEGATIVE, POSITIVE
from optzoo.registry import register


class NormAccumulatedStep:
    """The AdaGrad-Norm rule over one param group, treated as a single vector.

    ``prepare`` adds the group's squared gradient norm to the group scalar
    ``sum_grad_norm_sq`` (the paper's b_t^2 - b_0^2) and hands the step size
    lr / sqrt(b_0^2 + sum_grad_norm_sq) to the elementwise phase, a plain SGD step on every
    tensor. Hyperparameters: ``lr``, ``initial_accumulator_value`` (b_0^2).
    """

    buffers = ()
    group_buffers = ("sum_grad_norm_sq",)
    # Non-finite whenever a gradient is (or its squared norm overflows float32): the fused
    # update's own non-finite check, with no separate read of the gradients.
    gradient_check = "sum_grad_norm_sq"

    def __init__(self) -> None:
        self.__name__ = "adagrad_norm"

    def prepare(self, params, grads, states, group_state, hp) -> list[Tensor]:
        accumulated = group_state["sum_grad_norm_sq"].double() + sum_of_squares(grads)
        group_state["sum_grad_norm_sq"].copy_(accumulated)
        # b_{t+1} = sqrt(b_0^2 + sum_{s<=t} ||g_s||^2) > 0 since b_0^2 > 0
        step_size = realized(hp["lr"] * (accumulated + hp["initial_accumulator_value"]).rsqrt())
        return [step_size] * len(params)

    def __call__(self, params, grads, states, group_state, hp, scalars) -> None:
        for p, g, step_size in zip(params, grads, scalars, strict=True):
            add_scaled_(p, g, -step_size)


@register(
    family="first_order",
    paper="AdaGrad stepsizes: Sharp convergence over nonconvex landscapes",
    year=2019,
    oracle="gradient",
    state_bytes_per_param=0,
    fast_path=True,
    elementwise=True,
    # The defaults: 0.078 on the logistic problem after 200 steps.
)
class AdaGradNorm(RuleOptimizer):
    """AdaGrad-Norm from Ward, Wu & Bottou, "AdaGrad stepsizes: Sharp convergence over
    nonconvex landscapes" (ICML 2019; JMLR 2020), the optimizer that "AdAdaGrad: Adaptive Batch
    Size Schemes for Adaptive Gradient Methods" (Lau, Liu & Kolar, 2024) pairs with its
    adaptive batch sizes (``optzoo.schedules.NormTestBatchSize``) as AdAdaGrad-Norm.

    SGD with a single scalar step size per param group that AdaGrad's rule derives from the
    norms of all gradients seen so far: the step shrinks as squared gradient norms accumulate.
    The paper proves convergence to a stationary point of a smooth nonconvex function at the
    O(log T / sqrt(T)) rate with stochastic gradients (O(1/T) with exact ones) without tuning
    lr or b_0 to the unknown smoothness constant or noise level. With g_t the gradient of all
    the group's tensors taken as one vector::

        b_{t+1}^2 = b_t^2 + ||g_t||^2
        x_{t+1}   = x_t - lr * g_t / b_{t+1}

    Keep all parameters in one group for the paper's method (one global step size); each
    additional param group gets its own b. Defaults: lr 1.0 and b_0^2 =
    ``initial_accumulator_value`` 0.01, those of the AdAdaGrad authors' AdaGrad-Norm code (Ward
    et al.'s analysis holds for any lr > 0 and b_0 > 0 and fixes neither).
    State: one float32 scalar per group (the sum of squared gradient norms), no per-parameter
    buffer.
    """

    hyperparameter_ranges = {"lr": NON_NEGATIVE, "initial_accumulator_value": POSITIVE}
    rule = NormAccumulatedStep()

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        initial_accumulator_value: float = 0.01,
        *,
        implementation: Implementation = "auto",
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        defaults = {"lr": lr, "initial_accumulator_value": initial_accumulator_value}
        super().__init__(params, defaults, implementation=implementation, on_nonfinite=on_nonfinite)
