import math

import torch
from torch import nn

from optzoo import PolyStep
from optzoo.gradient_free.polystep import random_rotations, simplex_vertices


def test_simplex_is_regular_centred_and_unit():
    for d in (1, 2, 3, 5):
        v = simplex_vertices(d)
        assert v.shape == (d + 1, d)
        zero = torch.zeros(d, dtype=torch.float64)
        torch.testing.assert_close(v.sum(0), zero, atol=1e-12, rtol=0)
        gram = v @ v.T
        want = torch.full((d + 1, d + 1), -1.0 / d, dtype=torch.float64).fill_diagonal_(1.0)
        torch.testing.assert_close(gram, want, atol=1e-12, rtol=0)


def test_rotations_are_proper_orthogonal():
    r = random_rotations(50, 3, torch.Generator().manual_seed(0))
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    torch.testing.assert_close(r @ r.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(50, dtype=torch.float64))


def loss_of(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor([1.0, -1.0, 0.5], dtype=x.dtype)).square().sum() + x.prod()


def test_one_step_matches_the_softmax_barycentre_equations():
    eps, step_r, probe_r, scale = 0.2, 1.0, 2.0, 0.5
    x0 = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    p = nn.Parameter(x0.clone())
    opt = PolyStep([p], lr=eps, particle_dim=2, step_radius=step_r, probe_radius=probe_r,
                   scale_cost=scale, seed=4)  # fmt: skip
    seen = []
    opt.step(lambda: seen.append(p.detach().clone()) or loss_of(p))
    assert len(seen) == 2 * 3  # ceil(3 / 2) particles x 3 simplex vertices

    # 3 coordinates -> particles (x0, x1) and (x2, pad)
    rotations = random_rotations(2, 2, torch.Generator().manual_seed(4))
    directions = torch.einsum("pij,vj->pvi", rotations, simplex_vertices(2))
    padded = torch.cat([x0, torch.zeros(1, dtype=torch.float64)]).reshape(2, 2)
    want = padded.clone()
    for i in range(2):
        costs = []
        for v in range(3):
            probe = padded.clone()
            probe[i] = padded[i] + directions[i, v] * probe_r * eps / 2
            costs.append(loss_of(probe.reshape(-1)[:3]))
        c = torch.stack(costs)
        w = torch.softmax(-(c - c.min()) / (eps * scale), 0)
        want[i] = (w[:, None] * (padded[i] + step_r * eps * directions[i])).sum(0)
    torch.testing.assert_close(p.detach(), want.reshape(-1)[:3], rtol=1e-12, atol=1e-12)
    # every particle moves at most step_radius * epsilon
    moved = (want - padded).norm(dim=1)
    assert (moved <= step_r * eps + 1e-12).all()


def test_a_particle_moves_towards_the_lower_vertices():
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = PolyStep([p], lr=0.1)
    for _ in range(60):
        opt.step(lambda: (p - torch.tensor([1.0, 2.0], dtype=p.dtype)).square().sum())
    assert math.dist(p.detach().tolist(), [1.0, 2.0]) < 0.2
