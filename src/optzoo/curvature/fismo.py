"""FISMO: Muon's orthogonalized momentum inside a Kronecker-factored Fisher trust region."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optzoo._core.matrices import as_matrix
from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo._core.rules import State, ema_
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, UNIT_OPEN_RIGHT
from optzoo.curvature.muon import (
    ADAMW_RANGES,
    STEPS,
    MatrixOptimizer,
    SplitRule,
    split_state_bytes,
)
from optzoo.curvature.orthogonalize import newton_schulz
from optzoo.registry import register


def _inverse_sqrt(factor: Tensor) -> Tensor:
    """``factor^{-1/2}`` of a symmetric positive-definite matrix, by eigendecomposition."""
    eigenvalues, vectors = torch.linalg.eigh(factor)
    return (vectors * eigenvalues.clamp_min(torch.finfo(factor.dtype).tiny).rsqrt()) @ vectors.T


def _refresh_factor(old: Tensor, statistic: Tensor, damping: float, decay: float) -> Tensor:
    """``sym(k / tr(F~) F~)`` with ``F~ = decay old + (1 - decay) (statistic + damping
    tr(old) / k I)``, ``k`` the factor's side: Algorithm 1's EMA, damping and trace
    normalisation of one Kronecker factor."""
    k = old.shape[0]
    damped = statistic + torch.eye(k, dtype=old.dtype, device=old.device) * (
        damping * torch.trace(old) / k
    )
    smoothed = old * decay + damped * (1 - decay)
    normalised = smoothed * (k / torch.trace(smoothed))
    return (normalised + normalised.T) / 2


def fismo_step(param: Tensor, grad: Tensor, state: State, hp: dict[str, Any]) -> None:
    """One FISMO step of one matrix (see ``FISMO``)."""
    g = as_matrix(grad)
    rows, cols = g.shape
    if "left_factor" not in state:
        state["left_factor"] = torch.eye(rows, dtype=g.dtype, device=g.device)
        state["right_factor"] = torch.eye(cols, dtype=g.dtype, device=g.device)
        state["momentum_buffer"] = torch.zeros_like(g)
    left, right, buf = state["left_factor"], state["right_factor"], state["momentum_buffer"]
    damping, decay = hp["damping"], hp["factor_decay"]
    # Gauss-Seidel: P from the previous Q, then Q from the new P.
    g_right = torch.linalg.solve(right, g.T)  # Q^{-1} G^T
    left.copy_(_refresh_factor(left, g @ g_right / cols, damping, decay))
    g_left = torch.linalg.solve(left, g)  # P^{-1} G
    right.copy_(_refresh_factor(right, g.T @ g_left / rows, damping, decay))
    left_root, right_root = _inverse_sqrt(left), _inverse_sqrt(right)
    ema_(buf, left_root @ g @ right_root, hp["momentum"])
    update = left_root @ newton_schulz(buf, hp["ns_steps"]) @ right_root
    param.mul_(1 - hp["lr"] * hp["weight_decay"]).add_(update.reshape_as(param), alpha=-hp["lr"])


@register(
    family="curvature",
    paper="FISMO: Fisher-Structured Momentum-Orthogonalized Optimizer",
    year=2026,
    oracle="gradient",
    state_bytes_per_param=lambda params: split_state_bytes(
        params, lambda m, n: m * m + n * n + m * n
    ),
    reference_problem="mlp",
    convergence=(200, 0.08),
    test_hyperparameters={"lr": 0.05, "adamw_lr_ratio": 0.2},
)
class FISMO(MatrixOptimizer):
    """FISMO, Algorithm 1 of Xu, Yan & Zhang, "FISMO: Fisher-Structured Momentum-Orthogonalized
    Optimizer" (2026).

    Muon takes the steepest step in the spectral norm (every singular value of the update set to
    one); FISMO takes it in a norm shaped by a Kronecker-factored Fisher metric F ~ Q (x) P, so
    the step is orthogonal in whitened coordinates and anisotropic in the original ones
    (``min <G, dW>  s.t.  ||P^{1/2} dW Q^{1/2}||_2 <= lr``). For each m x n matrix W::

        P~ = g P + (1 - g) (G Q^{-1} G^T / n + damping tr(P) / m I);  P = sym(m P~ / tr(P~))
        Q~ = g Q + (1 - g) (G^T P^{-1} G / m + damping tr(Q) / n I);  Q = sym(n Q~ / tr(Q~))
        M  = mu M + (1 - mu) P^{-1/2} G Q^{-1/2}
        W  = (1 - lr * weight_decay) W - lr P^{-1/2} NewtonSchulz5(M) Q^{-1/2}

    (P is refreshed first and Q from the new P: the paper's Gauss-Seidel order.) P and Q start
    at the identity, so the first steps are Muon's without Nesterov and shape scaling.
    Parameters that are not matrices take an inner AdamW (see ``MatrixOptimizer``), as in Muon.

    Only the abstract was available here; the update rule follows secondary summaries of the
    paper's Algorithm 1. Inferred, not from the paper: identity initial factors; the defaults
    lr 0.02, momentum 0.95 and Newton-Schulz with Muon's coefficients (Muon's), factor_decay
    0.95 and damping 0.1 (chosen here); decoupled weight decay (default 0) and the inner AdamW
    (Muon's defaults). Inverse square roots by symmetric eigendecomposition. State per m x n
    matrix: P (m^2), Q (n^2) and the momentum (m n) floats.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "momentum": UNIT_OPEN_RIGHT,
        "factor_decay": UNIT_OPEN_RIGHT,
        "damping": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "ns_steps": STEPS,
        **ADAMW_RANGES,
    }
    rule = SplitRule(fismo_step, name="fismo")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.02,
        momentum: float = 0.95,
        factor_decay: float = 0.95,
        damping: float = 0.1,
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
            "factor_decay": factor_decay,
            "damping": damping,
            "ns_steps": ns_steps,
            "weight_decay": weight_decay,
            "adamw_lr_ratio": adamw_lr_ratio,
            "adamw_betas": tuple(adamw_betas),
            "adamw_eps": adamw_eps,
            "adamw_weight_decay": adamw_weight_decay,
        }
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)
