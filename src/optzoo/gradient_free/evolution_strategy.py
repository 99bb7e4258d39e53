"""OpenAI-ES: antithetic Gaussian search with centred-rank fitness shaping, stepped by Adam."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo._core.validation import NON_NEGATIVE
from optzoo.gradient_free.zeroth_order import InnerT, ZerothOrder
from optzoo.registry import register


@register(
    family="gradient_free",
    paper="Evolution Strategies as a Scalable Alternative to Reinforcement Learning",
    year=2017,
    oracle="loss_closure",
    state_bytes_per_param=8,  # Adam's two moments
    needs_closure=True,
    supports_bf16=False,
    reference_problem="quadratic",
    convergence=(150, 0.1),
    test_hyperparameters={"lr": 0.1, "num_directions": 8, "perturbation_scale": 0.1},
)
class EvolutionStrategy(ZerothOrder):
    """The natural evolution strategy of "Evolution Strategies as a Scalable Alternative to
    Reinforcement Learning" (Salimans et al., 2017): the mean x of an isotropic Gaussian search
    distribution moves along the estimated gradient of the expected (rank-shaped) loss.

    Each step samples q = ``num_directions`` antithetic pairs x +- sigma eps_j (2q
    evaluations), replaces the 2q losses by their centred ranks F in [-0.5, 0.5] (lowest loss
    -0.5), and feeds the estimate to Adam with L2 weight decay::

        g = 1 / (2 q sigma) sum_j (F(x + sigma eps_j) - F(x - sigma eps_j)) eps_j
        x <- Adam(x, g + weight_decay * x)

    It is ``ZerothOrder`` with central differences, Gaussian directions, ``centered_rank``
    shaping and inner Adam, so the same machinery (in-place seeded perturbations, vectorized
    population evaluation) applies. A non-finite loss ranks worst.

    Defaults from the paper: sigma (``perturbation_scale``) 0.02, Adam step size 0.01, L2
    coefficient 0.005; 50 antithetic pairs (a population of 100) is ours (the paper scales the
    population with its workers). State: Adam's moments, 8 bytes per parameter.
    """

    hyperparameter_ranges = {**ZerothOrder.hyperparameter_ranges, "weight_decay": NON_NEGATIVE}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.01,
        perturbation_scale: float = 0.02,
        num_directions: int = 50,
        weight_decay: float = 0.005,
        inner: InnerT = "Adam",
        inner_hyperparameters: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        max_evaluations: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            perturbation_scale=perturbation_scale,
            num_directions=num_directions,
            distribution="gaussian",
            difference="central",
            shaping="centered_rank",
            inner=inner,
            inner_hyperparameters={"weight_decay": weight_decay, **(inner_hyperparameters or {})},
            seed=seed,
            max_evaluations=max_evaluations,
            on_nonfinite=on_nonfinite,
        )
