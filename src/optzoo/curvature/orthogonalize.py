"""Orthogonalization of a matrix by Newton-Schulz iteration: the step Muon and FISMO share.

The polar factor of ``G = U S V^T`` is ``U V^T``: the nearest semi-orthogonal matrix, every
singular value set to one. Newton-Schulz computes an approximation of it with matrix products
only (no SVD): after scaling ``X = G / ||G||_F`` so every singular value lies in ``[0, 1]``, each
step applies the odd polynomial ``X <- a X + b (X X^T) X + c (X X^T)^2 X``, which acts on every
singular value ``s`` as ``s <- a s + b s^3 + c s^5``.

The quintic coefficients ``(3.4445, -4.7750, 2.0315)`` are those of Keller Jordan's Muon
reference: chosen to maximise the slope at zero (so small singular values grow fast) rather than
to converge to exactly one, five steps leave the singular values roughly in ``[0.7, 1.2]``,
which the Muon authors found to train as well as the exact polar factor.
"""

from __future__ import annotations

import torch
from torch import Tensor

MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(
    matrix: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
) -> Tensor:
    """Approximate polar factor ``U V^T`` of a 2-D ``matrix`` by ``steps`` quintic Newton-Schulz
    iterations, in the matrix's own dtype.

    A tall matrix is transposed so the Gram matrix ``X X^T`` is the smaller one (``min(m, n)``
    squared), then transposed back. A zero matrix maps to zero.
    """
    if matrix.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    if steps < 0:
        raise ValueError(f"invalid steps={steps!r}: expected an integer >= 0")
    a, b, c = coefficients
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if tall else matrix
    x = x / (torch.linalg.matrix_norm(x) + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def shape_scale(rows: int, cols: int) -> float:
    """Muon's shape-dependent factor ``sqrt(max(1, rows / cols))``: it keeps the update's RMS
    per element comparable across tall and wide matrices."""
    return max(1.0, rows / cols) ** 0.5
