"""GaLore: Adam on the gradient projected onto its top singular subspace."""

from __future__ import annotations

from functools import partial

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo.lowrank.engine import LowRankOptimizer, expected_state_bytes
from optzoo.registry import register

TEST_HYPERPARAMETERS = {"lr": 0.05, "rank": 2, "min_dim": 4, "update_gap": 2, "scale": 1.0}


@register(
    family="lowrank",
    paper="GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
    year=2024,
    oracle="gradient",
    state_bytes_per_param=partial(expected_state_bytes, **TEST_HYPERPARAMETERS),
    reference_problem="mlp",
    convergence=(300, 0.2),
    test_hyperparameters=TEST_HYPERPARAMETERS,
)
class GaLore(LowRankOptimizer):
    """GaLore, from "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection"
    (Zhao et al., ICML 2024).

    Each weight matrix's gradient is projected onto the span of its top ``rank`` singular
    vectors (recomputed by an SVD every ``update_gap`` steps); Adam runs in that subspace, so
    its moments take ``rank x long side`` instead of the full matrix, and the step is projected
    back, scaled by ``scale`` (alpha). Wide matrices are projected from the left, tall ones
    from the right; biases, norms and matrices with a side shorter than ``min_dim`` take a
    plain AdamW step. For an m x n gradient G with m <= n (else transpose)::

        every T steps:  U, S, V = svd(G);  P = U[:, :r]        (moments are kept)
        R = P^T G;   N = Adam(R) = m_hat / (sqrt(v_hat) + eps)
        W = W - lr * (alpha * P N + weight_decay * W)

    Defaults from the paper's pre-training runs and its code: rank 128, update_gap T = 200,
    scale alpha = 0.25, lr 0.01, betas (0.9, 0.999), eps 1e-6 (the authors' AdamW), weight
    decay 0. Adam's moments are carried unchanged across a refresh, as in the authors' code.
    Weight decay multiplies the weights before the update (torch's AdamW order; the authors'
    code decays after it). State: 8 bytes x rank x long side per matrix plus the basis
    (4 bytes x rank x short side); ``state_bytes`` in the registry is that, for the contract
    test's hyperparameters. Projector, inner rule and residual rule are those of
    ``optzoo.lowrank.engine.LowRankOptimizer``, where other combinations are built.
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
            residual="drop",
            seed=seed,
            on_nonfinite=on_nonfinite,
        )
