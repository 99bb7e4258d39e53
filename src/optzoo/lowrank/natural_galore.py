"""Natural GaLore: GaLore whose low-rank gradient is first preconditioned by the inverse
empirical Fisher of its recent history (Woodbury's identity)."""

from __future__ import annotations

from functools import partial

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo.lowrank.engine import LowRankOptimizer, expected_state_bytes
from optzoo.registry import register

TEST_HYPERPARAMETERS = {
    "lr": 0.05,
    "rank": 2,
    "min_dim": 4,
    "update_gap": 2,
    "scale": 1.0,
    "history": 4,
}


@register(
    family="lowrank",
    paper="Natural GaLore: Accelerating GaLore for memory-efficient LLM Training and Fine-tuning",
    year=2024,
    oracle="gradient",
    state_bytes_per_param=partial(
        expected_state_bytes, **TEST_HYPERPARAMETERS, preconditioner="natural"
    ),
    reference_problem="mlp",
    convergence=(300, 0.2),
    test_hyperparameters=TEST_HYPERPARAMETERS,
)
class NaturalGaLore(LowRankOptimizer):
    """Natural GaLore, from "Natural GaLore: Accelerating GaLore for memory-efficient LLM
    Training and Fine-tuning" (Das, 2024).

    GaLore, with the projected gradient replaced by a natural gradient before Adam sees it:
    the inverse of the empirical Fisher built from the last ``history`` projected gradients,
    applied through Woodbury's identity so that only an s x s system is solved. With
    g = vec(R) and G = [g_t, ..., g_{t-s+1}] (k x s)::

        F = damping I + G G^T
        g~ = F^-1 g = g / l - G (l I + G^T G)^-1 G^T g / l      (Woodbury)
        N = Adam(g~);   W = W - lr * (alpha * P N + weight_decay * W)

    We evaluate g~ as G (l I + G^T G)^-1 e (g is the newest column G e of G: the same vector by
    the push-through identity, without the cancellation of the two terms above in float32).

    Defaults from the paper and the authors' code: history s = 20, damping l = 1e-3, the
    history kept across a projector refresh (as their code does), and GaLore's rank 128,
    update_gap 200, scale 0.25, lr 0.01, betas (0.9, 0.999), eps 1e-6, weight decay 0. State:
    GaLore's plus the history, 4 x s x rank x long side bytes per matrix: at s = 20 that is
    ten times GaLore's moments, not "without additional memory overhead" as the abstract says.
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
        history: int = 20,
        damping: float = 1e-3,
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
            preconditioner="natural",
            history=history,
            damping=damping,
            seed=seed,
            on_nonfinite=on_nonfinite,
        )
