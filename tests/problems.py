"""The families' reference problems used by the contract suite: small, seeded, CPU-only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Problem:
    model: nn.Module
    loss: Callable[[nn.Module], torch.Tensor]
    # Per-sample views for the closure oracles (None where the problem has no such structure):
    # ``loss == per_sample_losses.mean()`` and, for least squares, ``residuals.square().mean()``.
    per_sample_losses: Callable[[nn.Module], torch.Tensor] | None = None
    residuals: Callable[[nn.Module], torch.Tensor] | None = None


def _logistic_data(n: int, d: int, generator: torch.Generator, noise: float):
    w = torch.randn(d, generator=generator)
    x = torch.randn(n, d, generator=generator)
    logits = x @ w
    y = (logits + noise * torch.randn(n, generator=generator) > 0).float()
    return x, y


def make_problem(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> Problem:
    """Build a reference problem.

    - ``logistic``: binary logistic regression, 256 samples in 20 dimensions, label noise;
      initial loss log(2) = 0.69, optimum about 0.2.
    - ``separable``: linearly separable data (no label noise), a linear classifier.
    - ``quadratic``: 0.5 (x - x*)^T A (x - x*) with condition number 100 in 32 dimensions;
      initial value about 9, optimum 0.
    - ``mlp``: a 2-layer tanh MLP regressing a smooth function of 8 inputs; initial MSE ~1.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name in ("logistic", "separable"):
        x, y = _logistic_data(256, 20, g, noise=0.5 if name == "logistic" else 0.0)
        model = nn.Linear(20, 1)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
        model = model.to(dtype)
        x = x.to(dtype)
        y = y.to(dtype)

        def loss(m: nn.Module) -> torch.Tensor:
            return nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(-1), y)

        def per_sample(m: nn.Module) -> torch.Tensor:
            logits = m(x).squeeze(-1)
            return nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")

        return Problem(model, loss, per_sample_losses=per_sample)
    if name == "quadratic":
        d = 32
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        eig = torch.logspace(0, 2, d, dtype=torch.float64) / 100.0
        a = (q * eig) @ q.T
        target = torch.randn(d, generator=g, dtype=torch.float64)
        model = nn.Module()
        model.x = nn.Parameter(torch.zeros(d, dtype=dtype))
        a, target = a.to(dtype), target.to(dtype)

        def loss(m: nn.Module) -> torch.Tensor:
            r = m.x - target
            return 0.5 * r @ (a @ r)

        return Problem(model, loss)
    if name == "mlp":
        x = torch.randn(512, 8, generator=g)
        y = torch.sin(x @ torch.randn(8, 1, generator=g)) + 0.5 * torch.cos(x[:, :1] * 2)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)).to(dtype)
        x, y = x.to(dtype), y.to(dtype)

        def loss(m: nn.Module) -> torch.Tensor:
            return nn.functional.mse_loss(m(x), y)

        def residuals(m: nn.Module) -> torch.Tensor:
            return (m(x) - y).reshape(-1)

        return Problem(
            model, loss, per_sample_losses=lambda m: residuals(m).square(), residuals=residuals
        )
    raise ValueError(f"unknown reference problem {name!r}")
