"""Fixed float64 gradients for update-rule tests of the low-rank family, and independent
reference pieces (Adam in a subspace, the sign convention of singular vectors)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

DTYPE = torch.float64
LR, BETAS = 0.1, (0.9, 0.999)


def matrix(rows: int, cols: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(rows, cols, generator=generator, dtype=DTYPE)


def trajectory(
    make: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    p0: torch.Tensor,
    grads: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Parameters after each step, the optimizer fed ``grads`` in turn."""
    p = torch.nn.Parameter(p0.clone())
    opt = make([p])
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out


class Adam:
    """Adam's bias-corrected direction, m_hat / (sqrt(v_hat) + eps), written out."""

    def __init__(self, eps: float) -> None:
        self.eps, self.m, self.v, self.t = eps, 0.0, 0.0, 0

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        b1, b2 = BETAS
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * r
        self.v = b2 * self.v + (1 - b2) * r * r
        m_hat, v_hat = self.m / (1 - b1**self.t), self.v / (1 - b2**self.t)
        return m_hat / (v_hat.sqrt() + self.eps)


def top_left_singular_vectors(g: torch.Tensor, rank: int) -> torch.Tensor:
    """Top singular vectors of the short side, each column's largest entry made positive."""
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    basis = u[:, :rank] if g.shape[0] <= g.shape[1] else vh[:rank].T
    signs = torch.sign(basis[basis.abs().argmax(0), torch.arange(rank)])
    return basis * signs
