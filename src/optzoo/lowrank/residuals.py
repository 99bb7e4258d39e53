"""Residual rules: what happens to the part of the gradient outside the subspace, and the
natural-gradient preconditioner applied inside it.

A residual rule maps the oriented residual ``E = M - up(down(M))`` (short x long) to the
update it contributes, which is added to the projected-back inner update before the step
``p -= lr * update``. Arguments: ``E``, the projected gradient ``R``, the inner rule's output
``N`` in the subspace, the tensor's state and the group's hyperparameters; ``first`` is true
on the tensor's first update. ``None`` drops the residual (GaLore).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Fira's guards against division by zero (from the authors' code).
FIRA_EPS = 1e-8


def drop_residual(e, r, n, state, hp, first) -> Tensor | None:
    """GaLore: the residual is discarded; the step stays in the subspace."""
    return None


def sgd_residual(e, r, n, state, hp, first) -> Tensor:
    """FRUGAL's state-free SGD: ``residual_scale * E``."""
    return e * hp["residual_scale"]


def sign_residual(e, r, n, state, hp, first) -> Tensor:
    """FRUGAL's state-free signSGD: ``residual_scale * sign(E)``."""
    return e.sign() * hp["residual_scale"]


def fira_residual(e, r, n, state, hp, first) -> Tensor:
    """Fira's norm-based scaling with its norm-growth limiter.

    Per long-side index j (a column of ``E`` and of ``R``), the residual is scaled by how much
    the inner rule scaled the low-rank gradient, ``phi_j = ||N[:, j]|| / ||R[:, j]||``; then if
    the scaled residual's norm grew by more than ``limiter_gamma`` since the last step it is
    shrunk to ``limiter_gamma`` times the last norm. ``state["residual_norm"]`` keeps that last
    (limited) norm."""
    phi = torch.linalg.vector_norm(n, dim=0) / (torch.linalg.vector_norm(r, dim=0) + FIRA_EPS)
    scaled = e * phi
    norm = torch.linalg.vector_norm(scaled)
    if not first:
        gamma = hp["limiter_gamma"]
        limiter = torch.clamp(norm / (state["residual_norm"] + FIRA_EPS), min=gamma) / gamma
        scaled = scaled / limiter
        norm = norm / limiter
    state["residual_norm"] = norm
    return scaled


RESIDUALS: dict[str, Any] = {
    "drop": drop_residual,
    "fira": fira_residual,
    "sign": sign_residual,
    "sgd": sgd_residual,
}


def natural_gradient(r: Tensor, state: dict[str, Any], hp: dict[str, Any]) -> Tensor:
    """Natural GaLore's preconditioner: the inverse empirical Fisher of the last ``history``
    projected gradients, ``F = damping I + G G^T`` (``G``: k x s, one vectorized low-rank
    gradient per column, the current one included), applied to the current one.

    The paper applies Woodbury's identity, ``F^-1 g = g / l - G (l I + G^T G)^-1 G^T g / l``,
    with an s x s Cholesky solve. Since ``g`` is itself a column ``G e`` of ``G``, the
    push-through identity gives the same vector as ``G (l I + G^T G)^-1 e``, which we use: one
    s x s solve (in float64) and no cancellation between two large terms. The history is a
    ring buffer ``fisher_history`` (s x k, zero rows until filled: they leave ``F`` unchanged)
    with ``fisher_count`` updates written."""
    g = r.reshape(-1)
    history = state["fisher_history"]
    slot = state["fisher_count"] % history.shape[0]
    history[slot] = g
    state["fisher_count"] += 1
    gram = (history @ history.T).double()
    gram.diagonal().add_(hp["damping"])
    unit = torch.zeros(history.shape[0], 1, dtype=torch.float64, device=g.device)
    unit[slot] = 1.0
    coefficients = torch.linalg.solve(gram, unit)
    return (history.T @ coefficients.to(history.dtype)).reshape(r.shape)
