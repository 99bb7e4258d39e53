import pytest
import torch
from torch import nn

from optzoo import EvolutionStrategy, ZerothOrder
from optzoo.gradient_free.base import random_seeds, seeded_normal
from optzoo.gradient_free.zeroth_order import centered_ranks

A = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)


def f(x: torch.Tensor) -> torch.Tensor:
    return (A * x.square()).sum() + x.sum() ** 3 / 10


def directions(seed: int, q: int, d: int) -> list[torch.Tensor]:
    seeds = random_seeds(torch.Generator().manual_seed(seed), q)
    return [seeded_normal(int(s), [torch.Size([d])])[0].double() for s in seeds]


@pytest.mark.parametrize("difference", ["central", "forward"])
def test_zo_sgd_step_matches_the_two_point_estimator(difference):
    lr, mu, q = 0.1, 1e-3, 3
    x0 = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    p = nn.Parameter(x0.clone())
    opt = ZerothOrder([p], lr=lr, perturbation_scale=mu, num_directions=q,
                      difference=difference, seed=5)  # fmt: skip
    opt.step(lambda: f(p))
    g = torch.zeros(4, dtype=torch.float64)
    for u in directions(5, q, 4):
        if difference == "central":
            c = (f(x0 + mu * u) - f(x0 - mu * u)) / (2 * mu)
        else:
            c = (f(x0 + mu * u) - f(x0)) / mu
        g += c * u / q
    torch.testing.assert_close(p.detach(), x0 - lr * g, rtol=1e-9, atol=1e-12)
    assert opt.evaluations == (2 * q if difference == "central" else q + 1)


@pytest.mark.parametrize("distribution", ["gaussian", "sphere"])
def test_estimator_is_unbiased_for_a_linear_loss(distribution):
    a = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, -1.0], dtype=torch.float64)
    p = nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = ZerothOrder([p], lr=1.0, num_directions=1000, distribution=distribution, seed=0)
    opt.step(lambda: (a * p).sum())
    estimate = -p.detach()  # one SGD step with lr 1 from 0
    assert (estimate - a).norm() / a.norm() < 0.25


def test_any_first_order_rule_consumes_the_estimate():
    p = nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64))
    opt = ZerothOrder([p], lr=0.01, inner="AdamW", inner_hyperparameters={"weight_decay": 0.0})
    assert type(opt.inner).__name__ == "AdamW"
    opt.step(lambda: f(p))
    assert set(opt.state[p]) >= {"exp_avg", "exp_avg_sq"}
    # Adam's first step moves every coordinate by about lr
    moved = (p.detach() - torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)).abs()
    lr = torch.full((4,), 0.01, dtype=torch.float64)
    torch.testing.assert_close(moved, lr, rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="inner"):
        ZerothOrder([nn.Parameter(torch.zeros(2))], inner="NoSuchOptimizer")


def test_in_place_perturbations_are_undone():
    p = nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.4]))
    opt = ZerothOrder([p], lr=0.0, perturbation_scale=0.1, num_directions=5)
    seen = []
    opt.step(lambda: seen.append(p.detach().clone()) or f(p.double()))
    assert len(seen) == 10 and not torch.equal(seen[0], seen[1])
    torch.testing.assert_close(p.detach(), torch.tensor([0.3, -0.2, 0.1, 0.4]), rtol=0, atol=1e-7)


def test_centered_ranks():
    ranks = centered_ranks(torch.tensor([3.0, -1.0, 10.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(ranks, torch.tensor([1 / 6, -0.5, 0.5, -1 / 6], dtype=torch.float64))


def test_es_step_matches_openai_es_with_adam():
    lr, sigma, q, wd = 0.05, 0.1, 4, 0.005
    x0 = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    p = nn.Parameter(x0.clone())
    opt = EvolutionStrategy([p], lr=lr, perturbation_scale=sigma, num_directions=q,
                            weight_decay=wd, seed=2)  # fmt: skip
    opt.step(lambda: f(p))
    us = directions(2, q, 4)
    losses = torch.stack([f(x0 + s * sigma * u) for u in us for s in (1, -1)])
    ranks = centered_ranks(losses)
    g = sum((ranks[2 * j] - ranks[2 * j + 1]) * us[j] for j in range(q)) / (2 * q * sigma)
    ref = nn.Parameter(x0.clone())
    adam = torch.optim.Adam([ref], lr=lr, weight_decay=wd)
    ref.grad = g
    adam.step()
    torch.testing.assert_close(p.detach(), ref.detach(), rtol=1e-9, atol=1e-12)
