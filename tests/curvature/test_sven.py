"""Sven against the paper's update computed independently in float64: the per-sample Jacobian by
a plain loop over residuals, the truncated pseudoinverse through the eigenvectors of J^T J (or
the closed form J^T (J J^T)^{-1} r when every direction is kept)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optzoo import Sven


def tiny_problem(n: int = 6, seed: int = 0):
    """A 2-4-1 tanh MLP (17 parameters) and n samples, float64: over-parametrised for n < 17."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(1))

    def residuals() -> torch.Tensor:
        return model(x).reshape(-1) - y

    return model, residuals


def loop_jacobian(model: nn.Module, residuals) -> tuple[torch.Tensor, torch.Tensor]:
    r = residuals()
    rows = []
    for i in range(r.numel()):
        grads = torch.autograd.grad(r[i], list(model.parameters()), retain_graph=True)
        rows.append(torch.cat([gr.reshape(-1) for gr in grads]))
    return torch.stack(rows), r.detach()


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def truncated_step(jacobian: torch.Tensor, r: torch.Tensor, k: int, rtol: float) -> torch.Tensor:
    """sum over the top-k eigenpairs (s_i^2, v_i) of J^T J with s_i > rtol s_1 of
    v_i (v_i^T J^T r) / s_i^2."""
    eigenvalues, vectors = torch.linalg.eigh(jacobian.T @ jacobian)
    # J^T J has rank <= rows: its other eigenvalues are round-off, not directions.
    order = eigenvalues.argsort(descending=True)[: min(k, jacobian.shape[0])]
    step = torch.zeros(jacobian.shape[1], dtype=torch.float64)
    top = eigenvalues[order[0]].sqrt()
    for i in order:
        s = eigenvalues[i].clamp_min(0).sqrt()
        if s > rtol * top and s > 1e-12:
            v = vectors[:, i]
            step += v * (v @ (jacobian.T @ r)) / s**2
    return step


def test_full_rank_step_is_the_minimum_norm_solution():
    model, residuals = tiny_problem()
    jacobian, r = loop_jacobian(model, residuals)
    expected = flat(model) - 0.7 * jacobian.T @ torch.linalg.solve(jacobian @ jacobian.T, r)
    returned = Sven(model.parameters(), lr=0.7, k=100, rtol=0.0).step(residuals)
    torch.testing.assert_close(flat(model), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(returned, r)


@pytest.mark.parametrize(("k", "rtol"), [(2, 0.0), (4, 0.0), (6, 0.3)])
def test_two_truncated_steps_match_the_paper(k, rtol):
    model, residuals = tiny_problem()
    twin, twin_residuals = tiny_problem()
    opt = Sven(twin.parameters(), lr=0.5, k=k, rtol=rtol)
    for _ in range(2):
        jacobian, r = loop_jacobian(model, residuals)
        expected = flat(model) - 0.5 * truncated_step(jacobian, r, k, rtol)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(expected, model.parameters())
        opt.step(twin_residuals)
        torch.testing.assert_close(flat(twin), expected, rtol=1e-9, atol=1e-11)


def test_truncation_changes_the_step():
    steps = []
    for k in (1, 6):
        model, residuals = tiny_problem()
        start = flat(model)
        Sven(model.parameters(), lr=1.0, k=k, rtol=0.0).step(residuals)
        steps.append(flat(model) - start)
    assert (steps[0] - steps[1]).norm() > 1e-3 * steps[1].norm()


def test_linear_model_is_solved_in_one_full_step():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 12, generator=g, dtype=torch.float64)
    y = torch.randn(5, generator=g, dtype=torch.float64)
    w = nn.Parameter(torch.zeros(12, dtype=torch.float64))
    Sven([w], lr=1.0, k=5, rtol=0.0).step(lambda: x @ w - y)
    torch.testing.assert_close(x @ w.detach(), y, rtol=0, atol=1e-12)
    # minimum norm: w lies in the row space of x
    torch.testing.assert_close(w.detach(), torch.linalg.pinv(x) @ y, rtol=0, atol=1e-12)


def test_microbatches_average_their_own_minimum_norm_steps():
    model, residuals = tiny_problem(n=8)
    jacobian, r = loop_jacobian(model, residuals)
    parts = [slice(0, 3), slice(3, 6), slice(6, 8)]
    steps = [truncated_step(jacobian[s], r[s], 100, 0.0) for s in parts]
    expected = flat(model) - 0.5 * torch.stack(steps).mean(0)
    Sven(model.parameters(), lr=0.5, k=100, rtol=0.0, microbatch_size=3).step(residuals)
    torch.testing.assert_close(flat(model), expected, rtol=1e-9, atol=1e-11)


def test_chunk_size_does_not_change_the_step():
    results = []
    for chunk in (1, 4, 64):
        model, residuals = tiny_problem(n=8)
        Sven(model.parameters(), k=3, chunk_size=chunk).step(residuals)
        results.append(flat(model))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(results[0], results[2], rtol=1e-12, atol=1e-14)


def test_bad_closure_and_hyperparameters_raise():
    model, residuals = tiny_problem()
    opt = Sven(model.parameters())
    with pytest.raises(ValueError, match="1-D tensor of per-sample residuals"):
        opt.step(lambda: residuals().reshape(2, 3))
    with pytest.raises(ValueError, match="microbatch_size"):
        Sven(model.parameters(), microbatch_size=0)
    with pytest.raises(ValueError, match="k="):
        Sven(model.parameters(), k=2.5)
