"""Fira: GaLore plus the gradient's residual outside the subspace, scaled by Adam's norm ratio."""

from __future__ import annotations

from functools import partial

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo.lowrank.engine import LowRankOptimizer, expected_state_bytes
from optzoo.registry import register

TEST_HYPERPARAMETERS = {"lr": 0.02, "rank": 2, "min_dim": 4, "update_gap": 2, "scale": 1.0}


@register(
    family="lowrank",
    paper="Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?",
    year=2024,
    oracle="gradient",
    state_bytes_per_param=partial(expected_state_bytes, **TEST_HYPERPARAMETERS, residual="fira"),
    reference_problem="mlp",
    convergence=(300, 0.1),
    test_hyperparameters=TEST_HYPERPARAMETERS,
)
class Fira(LowRankOptimizer):
    """Fira, from "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank
    Constraint?" (Chen et al., 2024).

    GaLore's low-rank Adam step, plus the part of the gradient GaLore drops, so that training
    is full-rank under the same optimizer memory. The residual is scaled column by column
    (per long-side index) by the factor Adam applied to the low-rank gradient (norm-based
    scaling), and a norm-growth limiter caps how fast the scaled residual's norm may grow
    (against loss spikes). For an m x n gradient G with m <= n (else transpose), with P, R, N
    as in GaLore::

        phi_j = ||N[:, j]|| / ||R[:, j]||;     S = (G - P R) * phi      (column j scaled by phi_j)
        if ||S_t|| / ||S_{t-1}|| > gamma:  S_t = S_t * gamma ||S_{t-1}|| / ||S_t||
        W = W - lr * (alpha * P N + S + weight_decay * W)

    Defaults from the paper's pre-training scripts: rank 128, update_gap 200, scale alpha 0.25
    (applied to the low-rank part only, as in the authors' code), limiter gamma 1.01, lr 0.01,
    betas (0.9, 0.999), eps 1e-6, weight decay 0; moments are kept across a refresh. phi uses
    the bias-corrected Adam direction N, as the paper writes it (the authors' code takes the
    uncorrected ratio and applies the bias correction to the whole step, which differs only
    in where eps enters). The residual is G - P R exactly, as in the paper's equation (the
    authors' code subtracts alpha P R). State: GaLore's plus one scalar per matrix.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        rank: int = 128,
        update_gap: int = 200,
        scale: float = 0.25,
        limiter_gamma: float = 1.01,
        min_dim: int = 2,
        projector: str = "svd",
        *,
        seed: int = 0,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            rank=rank,
            update_gap=update_gap,
            scale=scale,
            min_dim=min_dim,
            projector=projector,
            residual="fira",
            limiter_gamma=limiter_gamma,
            seed=seed,
            on_nonfinite=on_nonfinite,
        )
