import copy
import io

import pytest
import torch
from torch import nn

from optzoo import MFAC
from optzoo.curvature.mfac import inverse_fisher_product, state_bytes


def _dense_inverse_fisher(window: torch.Tensor, damp: float) -> torch.Tensor:
    m, d = window.shape
    fisher = damp * torch.eye(d, dtype=torch.float64) + window.T @ window / m
    return torch.linalg.inv(fisher)


@pytest.mark.parametrize("damp", [1e-5, 0.3])
def test_inverse_fisher_product_equals_the_dense_inverse(damp):
    g = torch.Generator().manual_seed(0)
    window = torch.randn(5, 12, generator=g, dtype=torch.float64)
    v = torch.randn(12, generator=g, dtype=torch.float64)
    got = inverse_fisher_product(window, window @ window.T, v, window @ v, damp)
    want = _dense_inverse_fisher(window, damp) @ v
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))


def test_steps_use_the_sliding_window_of_the_last_m_gradients():
    # Window m = 3, 5 steps: the ring buffer starts at zeros and wraps around twice.
    m, lr, damp = 3, 0.1, 0.05
    g = torch.Generator().manual_seed(1)
    weight = nn.Parameter(torch.randn(2, 3, generator=g, dtype=torch.float64))
    bias = nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))
    opt = MFAC([weight, bias], lr=lr, ngrads=m, damp=damp)
    x = torch.cat([weight.detach().reshape(-1), bias.detach()])
    window = torch.zeros(m, 8, dtype=torch.float64)
    for t in range(5):
        gw = torch.randn(2, 3, generator=g, dtype=torch.float64)
        gb = torch.randn(2, generator=g, dtype=torch.float64)
        weight.grad, bias.grad = gw, gb
        opt.step()
        flat = torch.cat([gw.reshape(-1), gb])
        window[t % m] = flat
        x = x - lr * _dense_inverse_fisher(window, damp) @ flat
        got = torch.cat([weight.detach().reshape(-1), bias.detach()])
        torch.testing.assert_close(got, x, rtol=1e-10, atol=1e-10)


def test_momentum_and_weight_decay_follow_the_authors_code():
    # u = mu u + (1 - mu) F^{-1} (g + wd x); the decayed gradient enters the window.
    m, lr, damp, mu, wd = 2, 0.05, 0.1, 0.5, 0.2
    g = torch.Generator().manual_seed(2)
    p = nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))
    opt = MFAC([p], lr=lr, ngrads=m, damp=damp, momentum=mu, weight_decay=wd)
    x, u, window = p.detach().clone(), torch.zeros(4, dtype=torch.float64), torch.zeros(m, 4)
    window = window.double()
    for t in range(3):
        grad = torch.randn(4, generator=g, dtype=torch.float64)
        p.grad = grad
        opt.step()
        full = grad + wd * x
        window[t % m] = full
        u = mu * u + (1 - mu) * _dense_inverse_fisher(window, damp) @ full
        x = x - lr * u
        torch.testing.assert_close(p.detach(), x, rtol=1e-10, atol=1e-12)


def _trained(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))
    data = torch.randn(16, 4, generator=torch.Generator().manual_seed(seed))
    opt = MFAC(model.parameters(), lr=0.05, ngrads=4, damp=0.1)
    for _ in range(6):  # past one full turn of the ring buffer
        opt.zero_grad()
        model(data).square().mean().backward()
        opt.step()
    return model, opt, data


def test_window_is_state_that_round_trips_without_sharing_storage():
    model, opt, _ = _trained()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin = copy.deepcopy(model)
    resumed = MFAC(twin.parameters(), lr=0.05, ngrads=4, damp=0.1)
    resumed.load_state_dict(saved)
    mine, theirs = opt.state["mfac_group_0"], resumed.state["mfac_group_0"]
    assert mine["step"] == theirs["step"] == 6
    for key in ("window", "gram"):
        assert torch.equal(mine[key], theirs[key])
    # two optimizers loaded from one in-memory state dict keep separate windows
    other = MFAC(copy.deepcopy(model).parameters(), lr=0.05, ngrads=4, damp=0.1)
    other.load_state_dict(saved)
    assert other.state["mfac_group_0"]["window"].data_ptr() != theirs["window"].data_ptr()


def test_state_is_the_window_and_its_gram_matrix_never_a_d_by_d_matrix():
    model, opt, _ = _trained()
    params = list(model.parameters())
    d = sum(p.numel() for p in params)
    state = opt.state["mfac_group_0"]
    assert state["window"].shape == (4, d) and state["gram"].shape == (4, 4)
    torch.testing.assert_close(state["gram"], state["window"] @ state["window"].T)
    assert all(not s for p, s in opt.state.items() if not isinstance(p, str))
    assert state_bytes(params, ngrads=4) == pytest.approx(4 * (4 * d + 16) / d)


def test_parameters_without_gradient_enter_the_window_as_zeros_and_do_not_move():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    opt = MFAC([a, b], lr=0.1, ngrads=2, damp=0.1)
    a.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()
    assert torch.equal(b, torch.ones(2))
    window = opt.state["mfac_group_0"]["window"]
    assert torch.equal(window[0], torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0]))
    assert not torch.equal(a, torch.ones(3))


def test_changing_the_window_size_after_the_first_step_raises():
    p = nn.Parameter(torch.ones(3))
    opt = MFAC([p], ngrads=4)
    p.grad = torch.ones(3)
    opt.step()
    opt.param_groups[0]["ngrads"] = 8
    with pytest.raises(ValueError, match="ngrads changed from 4 to 8"):
        opt.step()
