"""FRUGAL: a state-full optimizer on a subspace, state-free signSGD on the rest."""

from __future__ import annotations

from functools import partial

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo._core.validation import UNIT
from optzoo.lowrank.engine import LowRankOptimizer, expected_state_bytes
from optzoo.registry import register

TEST_HYPERPARAMETERS = {"lr": 0.05, "density": 0.5, "min_dim": 4, "update_gap": 2}


@register(
    family="lowrank",
    paper="FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training",
    year=2024,
    oracle="gradient",
    state_bytes_per_param=partial(
        expected_state_bytes, **TEST_HYPERPARAMETERS, projector="blockwise", residual="sign"
    ),
    reference_problem="mlp",
    convergence=(300, 0.25),
    test_hyperparameters=TEST_HYPERPARAMETERS,
)
class FRUGAL(LowRankOptimizer):
    """FRUGAL (Full-Rank Updates with GrAdient spLitting), from "FRUGAL: Memory-Efficient
    Optimization by Reducing State Overhead for Scalable Training" (Zmushko et al., 2024).

    The gradient is split: a state-full optimizer (Adam) updates a ``density`` fraction of the
    space and a state-free rule (signSGD) updates the rest, so every direction moves while
    only the subspace carries optimizer state. By default the split is blockwise (BAdam-like,
    the authors' ``frugal`` default): every ``update_gap`` steps a seeded random ``density``
    fraction of the projected matrices becomes active and takes Adam, whose state is reset;
    the others take signSGD. ``projector="svd"`` / ``"random"`` / ``"dct"`` split each matrix
    instead (rank ``round(density x short side)``). For a projected matrix::

        every T steps:  choose the subspace P;  reset Adam's moments and step count
        R = P^T G;   N = Adam(R)
        W = W - lr * (P N + residual_scale * sign(G - P R) + weight_decay * W)

    Non-projected parameters (biases, norms, small matrices) take Adam at full rank.
    Defaults from the authors' code and paper: density 0.25, update_gap 200, signSGD with
    residual_scale (their inactive_lr_scale) 1.0 for pre-training, moments reset at a refresh,
    no scale on the state-full part; lr 1e-3, betas (0.9, 0.999), eps 1e-8 and weight decay 0
    are the usual AdamW settings of their pre-training runs. ``residual="sgd"`` gives the
    SGD variant that the paper's convergence theory covers.
    """

    hyperparameter_ranges = {**LowRankOptimizer.hyperparameter_ranges, "density": UNIT}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        density: float = 0.25,
        update_gap: int = 200,
        residual_scale: float = 1.0,
        min_dim: int = 2,
        projector: str = "blockwise",
        residual: str = "sign",
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
            update_gap=update_gap,
            scale=1.0,
            min_dim=min_dim,
            projector=projector,
            residual=residual,
            reset_on_refresh=True,
            density=density,
            residual_scale=residual_scale,
            seed=seed,
            on_nonfinite=on_nonfinite,
        )
