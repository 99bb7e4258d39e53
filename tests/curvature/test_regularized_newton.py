"""The gradient-regularized Newton method (Algorithm 1 of "Gradient-Normalized Smoothness for
Optimization with Approximate Hessians") against the algorithm computed independently in
float64: the Hessian by ``torch.func.hessian`` of a flat function, the Fisher and Gauss-Newton
matrices by loops over samples, and the adaptive search on gamma written out."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from optzoo import RegularizedNewton
from optzoo.curvature.regularized_newton import approximate_hessian


def logistic_data(n: int = 40, d: int = 3, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(d, generator=g, dtype=torch.float64) * scale
         + torch.randn(n, generator=g, dtype=torch.float64) > 0).double()  # fmt: skip
    return x, y


def per_sample_losses(w: torch.Tensor, x, y, reg: float = 1e-2) -> torch.Tensor:
    return functional.binary_cross_entropy_with_logits(x @ w, y, reduction="none") + 0.5 * reg * (
        w @ w
    )


def paper_steps(w0, x, y, steps, gamma_0=1.0, max_search=40, hessian_of=None):
    """Algorithm 1 with B = I: lambda = |g| / gamma, x+ = x - (H + lambda I)^{-1} g, accept when
    f(x) - f(x+) >= |g(x+)|^2 / (8 lambda) and double gamma, else halve it and retry."""

    def f(w):
        return per_sample_losses(w, x, y).mean()

    hessian_of = hessian_of or torch.func.hessian(f)
    w, gamma = w0.clone(), gamma_0
    for _ in range(steps):
        g = torch.func.grad(f)(w)
        h = hessian_of(w)
        for _ in range(max_search):
            lam = g.norm() / (gamma + 1e-8)
            trial = w - torch.linalg.solve(h + lam * torch.eye(len(w), dtype=w.dtype), g)
            if f(w) - f(trial) >= torch.func.grad(f)(trial).square().sum() / (8 * lam):
                gamma *= 2
                break
            gamma /= 2
        w = trial
    return w, gamma


@pytest.mark.parametrize("gamma_0", [1.0, 1e4])
def test_two_steps_match_algorithm_1(gamma_0):
    x, y = logistic_data()
    w0 = torch.full((3,), 2.0, dtype=torch.float64)
    expected, expected_gamma = paper_steps(w0, x, y, 2, gamma_0=gamma_0)
    w = nn.Parameter(w0.clone())
    opt = RegularizedNewton([w], gamma_0=gamma_0)
    for _ in range(2):
        opt.step(lambda: per_sample_losses(w, x, y))
    torch.testing.assert_close(w.detach(), expected, rtol=1e-10, atol=1e-12)
    assert opt.gamma == pytest.approx(expected_gamma)


def test_search_halves_gamma_when_the_step_is_too_long():
    # A huge gamma_0 makes lambda tiny: a near-pure Newton step from far away is rejected first.
    x, y = logistic_data(scale=5.0)
    w0 = torch.full((3,), 8.0, dtype=torch.float64)
    _, expected_gamma = paper_steps(w0, x, y, 1, gamma_0=1e8)
    w = nn.Parameter(w0.clone())
    opt = RegularizedNewton([w], gamma_0=1e8)
    opt.step(lambda: per_sample_losses(w, x, y))
    assert expected_gamma < 1e8  # the scenario really rejects
    assert opt.gamma == pytest.approx(expected_gamma)


def test_without_search_the_step_is_the_regularized_newton_step():
    x, y = logistic_data()
    w0 = torch.zeros(3, dtype=torch.float64)
    f = lambda w: per_sample_losses(w, x, y).mean()  # noqa: E731
    g, h = torch.func.grad(f)(w0), torch.func.hessian(f)(w0)
    expected = w0 - torch.linalg.solve(
        h + g.norm() / (0.5 + 1e-8) * torch.eye(3, dtype=torch.float64), g
    )
    w = nn.Parameter(w0.clone())
    RegularizedNewton([w], gamma_0=0.5, adaptive_search=False).step(
        lambda: per_sample_losses(w, x, y)
    )
    torch.testing.assert_close(w.detach(), expected, rtol=1e-10, atol=1e-12)


def test_fisher_and_gauss_newton_matrices():
    x, y = logistic_data(n=12)
    w = nn.Parameter(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    losses = per_sample_losses(w, x, y)
    rows = [torch.autograd.grad(losses[i], w, retain_graph=True)[0] for i in range(len(losses))]
    fisher = sum(torch.outer(r, r) for r in rows) / len(rows)
    weights = 0.5 / losses.detach()
    gauss_newton = sum(wi * torch.outer(r, r) for r, wi in zip(rows, weights, strict=True))
    gauss_newton = gauss_newton / len(rows)
    gradient = torch.stack(rows).mean(0)
    for kind, expected in (("fisher", fisher), ("gauss_newton", gauss_newton)):
        g, h = approximate_hessian(per_sample_losses(w, x, y), [w], kind)
        torch.testing.assert_close(h, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, gradient, rtol=1e-10, atol=1e-12)


def test_gauss_newton_of_squared_residuals_is_classical():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randn(10, generator=g, dtype=torch.float64)
    w = nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))
    residuals = torch.tanh(x @ w) - y
    jacobian = torch.stack(
        [torch.autograd.grad(residuals[i], w, retain_graph=True)[0] for i in range(10)]
    )
    _, h = approximate_hessian(residuals.square(), [w], "gauss_newton")
    torch.testing.assert_close(h, 2 * jacobian.T @ jacobian / 10, rtol=1e-10, atol=1e-12)


def test_reaches_gradient_norm_1e8_far_faster_than_gradient_descent():
    # ill-conditioned features (scales 1 .. 10^-1.5), weak regularization 1e-3
    x, y = logistic_data(n=200, d=10, seed=1)
    x = x * torch.logspace(0, -1.5, 10, dtype=torch.float64)
    f = lambda w: per_sample_losses(w, x, y, 1e-3).mean()  # noqa: E731
    w = nn.Parameter(torch.zeros(10, dtype=torch.float64))
    opt = RegularizedNewton([w])
    newton_iterations = None
    for i in range(1, 31):
        opt.step(lambda: per_sample_losses(w, x, y, 1e-3))
        if torch.func.grad(f)(w.detach()).norm() < 1e-8:
            newton_iterations = i
            break
    assert newton_iterations is not None and newton_iterations <= 15
    # gradient descent with step 1/L (L = |X|^2 / (4 n) + reg) is still far off after 200 steps
    smoothness = torch.linalg.matrix_norm(x, ord=2) ** 2 / (4 * len(x)) + 1e-3
    v = torch.zeros(10, dtype=torch.float64)
    for _ in range(200):
        v = v - torch.func.grad(f)(v) / smoothness
    assert torch.func.grad(f)(v).norm() > 1e-5


def test_every_hessian_variant_converges_on_logistic_regression():
    x, y = logistic_data(n=100, d=5, seed=2)
    f = lambda w: per_sample_losses(w, x, y).mean()  # noqa: E731
    for kind in ("exact", "fisher", "gauss_newton"):
        w = nn.Parameter(torch.zeros(5, dtype=torch.float64))
        opt = RegularizedNewton([w], hessian=kind)
        for _ in range(60):
            opt.step(lambda w=w: per_sample_losses(w, x, y))
        assert torch.func.grad(f)(w.detach()).norm() < 1e-7, kind


def test_errors_name_the_problem():
    w = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="hessian"):
        RegularizedNewton([w], hessian="diagonal")
    with pytest.raises(ValueError, match="param groups"):
        RegularizedNewton([{"params": [w]}, {"params": [nn.Parameter(torch.zeros(2))]}])
    with pytest.raises(ValueError, match="gamma_0"):
        RegularizedNewton([w], gamma_0=0.0)
    with pytest.raises(ValueError, match="per-sample losses"):
        RegularizedNewton([w]).step(lambda: (w * w).sum())
