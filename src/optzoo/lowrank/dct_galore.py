"""DCT GaLore: GaLore with the SVD replaced by a selection of columns of a fixed DCT basis."""

from __future__ import annotations

from functools import partial

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo.lowrank.engine import LowRankOptimizer, expected_state_bytes
from optzoo.registry import register

TEST_HYPERPARAMETERS = {"lr": 0.05, "rank": 2, "min_dim": 4, "update_gap": 2, "scale": 1.0}


@register(
    family="lowrank",
    paper="SVD-Free Low-Rank Adaptive Gradient Optimization for Large Language Models",
    year=2025,
    oracle="gradient",
    state_bytes_per_param=partial(expected_state_bytes, **TEST_HYPERPARAMETERS, projector="dct"),
    reference_problem="mlp",
    convergence=(300, 0.2),
    test_hyperparameters=TEST_HYPERPARAMETERS,
)
class DCTGaLore(LowRankOptimizer):
    """The SVD-free low-rank Adam of "SVD-Free Low-Rank Adaptive Gradient Optimization for
    Large Language Models" (Modoranu et al., 2025).

    GaLore's projection without an SVD: the basis is a fixed orthonormal DCT matrix of the
    gradient's short side (computed once and shared by all layers of that size), and a refresh
    keeps the ``rank`` columns best aligned with the gradient, scored by one matrix product and
    a top-k. Only the column indices are stored, so the projector costs 4 bytes per rank per
    matrix instead of a dense basis. For an m x n gradient G with m <= n (else transpose) and
    the DCT matrix C (m x m)::

        every T steps:  s_j = ||C[:, j]^T G||_1;   I = top-r indices of s;   P = C[:, I]
        R = P^T G;   N = Adam(R);   W = W - lr * (alpha * P N + weight_decay * W)

    Defaults: the l1 alignment score and the DCT matrix are those of the authors' code; rank
    128, update_gap 200, scale 0.25, lr 0.01, betas (0.9, 0.999), eps 1e-6 and weight decay 0
    are GaLore's, since the paper's method replaces GaLore's SVD and keeps the rest (the
    authors' DCT-AdamW code defaults to a refresh every step and no scale: pass
    ``update_gap=1, scale=1`` for that). Moments are kept across a refresh (their
    ``rotate_subspace=False`` default).
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
        min_dim: int = 2,
        *,
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
            projector="dct",
            on_nonfinite=on_nonfinite,
        )
