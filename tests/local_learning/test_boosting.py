"""GBNN against its equations: log-prior start, pseudo-residual fits combined by a Newton step,
and the partial networks written back as one hidden layer that reproduces the boosted model."""

import pytest
import torch
from torch import nn
from torch.nn import functional

from optzoo import GradientBoostingTrainer
from optzoo.local_learning.boosting import newton_step

N, D, H, K = 60, 4, 6, 3


def problem():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % K
    y[:5] = 0  # unequal class frequencies
    x = torch.randn(N, D, generator=g, dtype=torch.float64) + y[:, None].double()
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(D, H), nn.Sigmoid(), nn.Linear(H, K)).double()
    return x, y, model


def test_newton_step_minimises_the_second_order_model_of_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits, f = torch.randn(8, K, generator=g), torch.randn(8, K, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    p = logits.softmax(1)
    r = torch.eye(K)[y] - p
    # d/drho CE(logits + rho f) at 0 is -sum(f r); the diagonal-Hessian curvature sum(f^2 p(1-p))
    slope = -(f * r).sum()
    curvature = (f.square() * p * (1 - p)).sum()
    assert newton_step(r, p, f) == pytest.approx(float(-slope / curvature), rel=1e-6)
    assert newton_step(r, p, torch.zeros_like(f)) == 0.0


def test_start_is_the_log_prior_constant():
    x, y, model = problem()
    GradientBoostingTrainer(units_per_step=H, learning_rate=1e-12, max_iter=5).fit(model, (x, y))
    prior = torch.bincount(y, minlength=K).double() / N
    torch.testing.assert_close(model[2].bias.detach(), prior.log(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("learning_rate", [1.0, 0.5])
def test_written_back_network_is_the_boosted_model(learning_rate):
    x, y, model = problem()
    trainer = GradientBoostingTrainer(units_per_step=2, learning_rate=learning_rate, max_iter=20)
    result = trainer.fit(model, (x, y))
    assert len(result.history) == H // 2
    # the single network reproduces the boosted logits (its loss is the recorded one)
    loss = float(functional.cross_entropy(model(x).detach(), y))
    assert loss == pytest.approx(result.history[-1]["loss"], rel=1e-9)
    prior = torch.bincount(y, minlength=K).double() / N
    constant = float(functional.cross_entropy(prior.log().expand(N, K), y))
    assert result.history[-1]["loss"] < 0.7 * constant  # better than the best constant


def test_each_group_moves_by_a_newton_step_times_the_learning_rate():
    x, y, model = problem()
    lr = 0.7
    GradientBoostingTrainer(units_per_step=H, learning_rate=lr, max_iter=20).fit(model, (x, y))
    prior = torch.bincount(y, minlength=K).double() / N
    start = prior.log().expand(N, K)
    increment = model(x).detach() - start  # rho * h(x) of the single boosting step
    p = start.softmax(1)
    r = torch.eye(K, dtype=torch.float64)[y] - p
    # rho = lr * newton(h), and newton(rho h) = newton(h) / rho, so newton(increment) = 1 / lr
    step = float((increment * r).sum() / (increment.square() * p * (1 - p)).sum())
    assert step == pytest.approx(1 / lr, rel=1e-9)


def test_layers_before_the_last_hidden_layer_stay_fixed():
    x, y, _ = problem()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(D, 5), nn.ReLU(), nn.Linear(5, H), nn.Tanh(), nn.Linear(H, K)
    ).double()
    first = model[0].weight.detach().clone()
    GradientBoostingTrainer(units_per_step=3, max_iter=10).fit(model, (x, y))
    assert torch.equal(model[0].weight, first)


def test_unsuitable_models_are_refused():
    x, y, model = problem()
    with pytest.raises(ValueError, match="units_per_step=4 must divide"):
        GradientBoostingTrainer(units_per_step=4).fit(model, (x, y))
    with pytest.raises(ValueError, match="ending in Linear"):
        GradientBoostingTrainer().fit(nn.Sequential(nn.Linear(D, K)).double(), (x, y))
    with pytest.raises(ValueError, match="ending in Linear"):
        GradientBoostingTrainer().fit(nn.Sequential(nn.Linear(D, K), nn.ReLU()).double(), (x, y))
