import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from optzoo import FISMO, Muon
from tests.curvature.test_orthogonalize import quintic_polar


def _inv_sqrt(a: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.real(scipy.linalg.sqrtm(a)))


def _refresh(old, stat, mu, gamma):
    k = old.shape[0]
    smoothed = gamma * old + (1 - gamma) * (stat + mu * np.trace(old) / k * np.eye(k))
    normalised = k / np.trace(smoothed) * smoothed
    return (normalised + normalised.T) / 2


def test_two_steps_match_algorithm_1():
    lr, beta, gamma, mu, wd = 0.1, 0.9, 0.8, 0.05, 0.1
    rng = torch.Generator().manual_seed(0)
    weight = nn.Parameter(torch.randn(4, 3, generator=rng, dtype=torch.float64))
    grads = [torch.randn(4, 3, generator=rng, dtype=torch.float64) for _ in range(2)]
    opt = FISMO([weight], lr=lr, momentum=beta, factor_decay=gamma, damping=mu, weight_decay=wd)
    w = weight.detach().numpy().copy()
    p, q, m = np.eye(4), np.eye(3), np.zeros((4, 3))
    for grad in grads:
        weight.grad = grad.clone()
        opt.step()
        g = grad.numpy()
        p = _refresh(p, g @ np.linalg.inv(q) @ g.T / 3, mu, gamma)
        q = _refresh(q, g.T @ np.linalg.inv(p) @ g / 4, mu, gamma)
        m = beta * m + (1 - beta) * _inv_sqrt(p) @ g @ _inv_sqrt(q)
        polar = quintic_polar(torch.from_numpy(m)).numpy()
        w = (1 - lr * wd) * w - lr * _inv_sqrt(p) @ polar @ _inv_sqrt(q)
        np.testing.assert_allclose(weight.detach().numpy(), w, rtol=1e-9, atol=1e-11)
    state = opt.state[weight]
    np.testing.assert_allclose(state["left_factor"].numpy(), p, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state["right_factor"].numpy(), q, rtol=1e-10, atol=1e-12)


def test_factors_stay_symmetric_positive_definite_with_trace_equal_to_their_side():
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    opt = FISMO(model.parameters())
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for layer in (model[0], model[2]):
        state = opt.state[layer.weight]
        for key in ("left_factor", "right_factor"):
            factor = state[key]
            side = factor.shape[0]
            assert torch.equal(factor, factor.T)
            assert float(torch.trace(factor)) == pytest.approx(side, rel=1e-5)
            assert float(torch.linalg.eigvalsh(factor).min()) > 0
        assert state["left_factor"].shape == (layer.weight.shape[0],) * 2
        assert state["right_factor"].shape == (layer.weight.shape[1],) * 2


def test_step_meets_the_trust_region_in_the_fisher_norm():
    # ||P^{1/2} dW Q^{1/2}||_2 = lr * ||Polar(M)||_2: the spectral trust region of the paper.
    weight = nn.Parameter(torch.zeros(5, 4, dtype=torch.float64))
    weight.grad = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    opt = FISMO([weight], lr=0.1)
    opt.step()
    state = opt.state[weight]
    root_p = torch.from_numpy(np.real(scipy.linalg.sqrtm(state["left_factor"].numpy())))
    root_q = torch.from_numpy(np.real(scipy.linalg.sqrtm(state["right_factor"].numpy())))
    whitened_step = root_p @ weight.detach() @ root_q
    want = 0.1 * torch.linalg.matrix_norm(quintic_polar(state["momentum_buffer"]), ord=2)
    assert float(torch.linalg.matrix_norm(whitened_step, ord=2)) == pytest.approx(float(want))


def test_with_huge_damping_it_is_muon_without_nesterov_or_shape_scale():
    rng = torch.Generator().manual_seed(3)
    a = nn.Parameter(torch.randn(4, 4, generator=rng, dtype=torch.float64))
    b = nn.Parameter(a.detach().clone())
    fismo = FISMO([a], lr=0.05, damping=1e8)
    muon = Muon([b], lr=0.05, nesterov=False)
    for _ in range(3):
        grad = torch.randn(4, 4, generator=rng, dtype=torch.float64)
        a.grad, b.grad = grad.clone(), grad.clone()
        fismo.step()
        muon.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_anisotropic_gradients_give_anisotropic_steps_unlike_muon():
    # Rows with large gradients raise P there, so FISMO's step is smaller along them.
    scales = torch.tensor([10.0, 1.0, 1.0, 0.1], dtype=torch.float64)[:, None]
    rng = torch.Generator().manual_seed(4)
    weight = nn.Parameter(torch.zeros(4, 6, dtype=torch.float64))
    opt = FISMO([weight], lr=0.1, damping=0.01, factor_decay=0.5)
    for _ in range(5):
        weight.grad = scales * torch.randn(4, 6, generator=rng, dtype=torch.float64)
        opt.step()
    row_norms = weight.detach().norm(dim=1)
    assert float(row_norms[0]) < float(row_norms[3])
