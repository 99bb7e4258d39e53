import itertools

import torch
from torch import nn

from optzoo import DeepGA
from optzoo.gradient_free.base import random_seeds, seeded_normal


def loss_of(p: nn.Parameter) -> torch.Tensor:
    return (p - 1.0).square().sum()


def test_generation_zero_is_the_start_and_seeded_mutations_of_it():
    p = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = DeepGA([p], lr=0.1, population_size=6, truncation=2, seed=3)
    seen = []
    opt.step(lambda: seen.append(p.detach().clone()) or loss_of(p))
    seeds = random_seeds(torch.Generator().manual_seed(3), 6)
    assert torch.equal(seen[0], torch.zeros(5, dtype=torch.float64))
    for k in range(1, 6):
        want = 0.1 * seeded_normal(int(seeds[k]), [torch.Size([5])])[0].double()
        torch.testing.assert_close(seen[k], want, rtol=1e-12, atol=1e-12)
    # the model now holds the best of the generation
    best = min(range(6), key=lambda k: float(loss_of(seen[k])))
    assert torch.equal(p.detach(), seen[best])


def test_elite_survives_and_children_descend_from_the_truncated_parents():
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = DeepGA([p], lr=0.3, population_size=10, truncation=3, seed=0)
    bests = []
    for _ in range(15):
        opt.step(lambda: loss_of(p))
        bests.append(float(loss_of(p.detach())))
    # elitism: the model's loss never gets worse
    assert all(b <= a for a, b in itertools.pairwise(bests))
    assert bests[-1] < bests[0]
    # every next-generation individual except the elite is a parent plus one mutation
    assert (opt.encoding[0, -1] == -1) and (opt.encoding[1:, -1] >= 0).all()


def test_compact_encoding_rebuilds_every_individual_exactly():
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    opt = DeepGA(model.parameters(), lr=0.05, population_size=12, truncation=4, seed=1)
    for _ in range(5):
        opt.step(lambda: nn.functional.mse_loss(model(x), y))
    params = list(model.parameters())
    opt._ask()  # materialise the next generation's candidates
    for i in range(12):
        rebuilt = opt.decode(opt.encoding[i])
        for value, candidates in zip(rebuilt, opt._pending, strict=True):
            torch.testing.assert_close(value, candidates[i], rtol=0, atol=1e-6)
    opt._pending = []
    # the paper's claim: seeds are far smaller than the weights they encode
    n = sum(p.numel() for p in params)
    row = opt.encoding[1]
    assert DeepGA.encoding_bytes(row) == 8 * int((row >= 0).sum()) <= 8 * 6
    assert DeepGA.encoding_bytes(row) * 10 < 4 * n


def test_truncation_larger_than_population_is_refused():
    import pytest

    with pytest.raises(ValueError, match="truncation"):
        DeepGA([nn.Parameter(torch.zeros(2))], population_size=4, truncation=5)
