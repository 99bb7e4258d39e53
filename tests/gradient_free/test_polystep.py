import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

import optzoo
from optzoo import PolyStep
from optzoo.gradient_free.polystep import (
    random_basis,
    random_rotations,
    simplex_vertices,
    top_directions,
)


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


# -- subspace mode ----------------------------------------------------------------------------


def test_random_basis_is_orthonormal():
    b = random_basis(40, 7, torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.T @ b, torch.eye(7, dtype=torch.float64), atol=1e-12, rtol=0)


def quadratic_of(x: torch.Tensor) -> torch.Tensor:
    target = torch.linspace(-1.0, 1.0, x.numel(), dtype=x.dtype)
    return ((x - target).square() * torch.arange(1, x.numel() + 1, dtype=x.dtype)).sum() + x.prod()


def expected_subspace_step(x, basis, rotations, eps, step_r, probe_r, scale):
    """Probe points and next iterate of one subspace step, from the equations: 5 parameters,
    d = 3, particles of 2 coordinates: (z0, z1) and (z2, padding)."""
    columns = [basis[:, 0:2], torch.cat([basis[:, 2:3], torch.zeros(5, 1, dtype=torch.float64)], 1)]
    probes, move = [], torch.zeros(5, dtype=torch.float64)
    for i in range(2):
        u = rotations[i] @ simplex_vertices(2).T  # (2, 3): rotated vertices as columns
        mine = [x + columns[i] @ (u[:, v] * probe_r * eps / 2) for v in range(3)]
        c = torch.stack([quadratic_of(q) for q in mine])
        w = torch.softmax(-(c - c.min()) / (eps * scale), 0)
        move += columns[i] @ (u @ w) * step_r * eps
        probes += mine
    return probes, x + move


def test_two_subspace_steps_match_the_equations():
    eps, step_r, probe_r, scale = 0.3, 1.5, 2.0, 0.5
    x0 = torch.tensor([0.1, -0.2, 0.3, 0.05, -0.4], dtype=torch.float64)
    p = nn.Parameter(x0.clone())
    opt = PolyStep([p], lr=eps, step_radius=step_r, probe_radius=probe_r, scale_cost=scale,
                   subspace_dim=3, subspace_particle_dim=2, seed=7)  # fmt: skip
    seen = []
    opt.step(lambda: seen.append(p.detach().clone()) or quadratic_of(p))
    assert len(seen) == opt.evaluations == 2 * 3  # ceil(3 / 2) particles x 3 simplex vertices

    # step 1, the draws in order: a Haar basis (5 x 3), then one rotation per particle
    g = torch.Generator().manual_seed(7)
    basis = random_basis(5, 3, g)
    probes, x1 = expected_subspace_step(x0, basis, random_rotations(2, 2, g), eps, step_r,
                                        probe_r, scale)  # fmt: skip
    torch.testing.assert_close(torch.stack(seen), torch.stack(probes), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.detach(), x1, rtol=0, atol=1e-12)
    move = x1 - x0  # in the drawn subspace, each particle's part no longer than r_step
    assert 0 < move.norm() <= math.sqrt(2) * step_r * eps + 1e-12
    torch.testing.assert_close(basis @ (basis.T @ move), move, rtol=0, atol=1e-12)

    # step 2 (t = 1): k = max(1, floor(3 * 1 / 100)) = 1 leading column, the first move's
    # direction, then Gaussian columns
    seen.clear()
    opt.step(lambda: seen.append(p.detach().clone()) or quadratic_of(p))
    direction = top_directions(move[:, None], 1)
    torch.testing.assert_close(direction.abs(), (move / move.norm())[:, None].abs())
    basis = random_basis(5, 3, g, leading=direction)
    torch.testing.assert_close(basis[:, :1], direction, rtol=0, atol=1e-12)
    probes, x2 = expected_subspace_step(x1, basis, random_rotations(2, 2, g), eps, step_r,
                                        probe_r, scale)  # fmt: skip
    torch.testing.assert_close(torch.stack(seen), torch.stack(probes), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.detach(), x2, rtol=0, atol=1e-12)
    history = opt.state[p]["displacements"]
    assert history.shape == (5, 5) and opt.state[p]["subspace_step"] == 2
    torch.testing.assert_close(history[:2], torch.stack([x1 - x0, x2 - x1]), rtol=0, atol=1e-12)


def test_top_directions_span_the_history():
    g = torch.Generator().manual_seed(1)
    history = torch.randn(30, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, 4, generator=g, dtype=torch.float64
    )  # 4 displacements of rank 2: only two directions survive the tolerance
    u = top_directions(history, 3)
    assert u.shape == (30, 2)
    torch.testing.assert_close(u.T @ u, torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(u @ (u.T @ history), history, atol=1e-10, rtol=0)
    top = torch.linalg.svd(history, full_matrices=False).U[:, 0]
    assert abs(float(u[:, 0] @ top)) > 1 - 1e-10  # ordered by singular value
    assert top_directions(torch.zeros(30, 4, dtype=torch.float64), 3) is None


def test_random_rotation_keeps_no_state():
    p = nn.Parameter(torch.zeros(50))
    opt = PolyStep([p], subspace_dim=10, subspace_rotation="random")
    opt.step(lambda: (p - 1).square().sum())
    assert not opt.state[p]
    opt = PolyStep([p], subspace_dim=10)
    opt.step(lambda: (p - 1).square().sum())
    assert opt.state[p]["displacements"].dtype == torch.float32  # 20 bytes per parameter


def test_subspace_step_population_equals_closure_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    twin = copy.deepcopy(model)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True).sin()
    opts = [PolyStep(m.parameters(), subspace_dim=12, seed=2) for m in (model, twin)]
    for _ in range(3):
        opts[0].step(lambda: nn.functional.mse_loss(model(x), y))
        opts[1].step_population(optzoo.vectorized_loss(
            twin, lambda v: nn.functional.mse_loss(functional_call(twin, v, (x,)), y)))  # fmt: skip
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert opts[0].evaluations == opts[1].evaluations == 3 * 2 * 9


@pytest.mark.parametrize(
    ("n", "kwargs", "per_step"),
    [
        (4810, dict(subspace_dim=240), 30 * 9),  # the sign network at the package's 5%
        (100, dict(subspace_dim=25), 4 * 9),  # ceil(25 / 8) particles
        (100, dict(subspace_dim=24, polytope="orthoplex"), 3 * 16),
        (100, dict(subspace_dim=12, subspace_particle_dim=3), 4 * 4),
        (10, dict(subspace_dim=50), 2 * 9),  # clamped to n = 10
        (100, dict(), 50 * 3),  # full space: n / 2 particles x 3
    ],
)
def test_evaluations_per_step(n, kwargs, per_step):
    p = nn.Parameter(torch.zeros(n))
    opt = PolyStep([p], **kwargs)
    calls = []
    for _ in range(2):
        opt.step(lambda: calls.append(1) or p.square().sum())
    assert len(calls) == opt.evaluations == 2 * per_step


@pytest.mark.parametrize(
    ("rotation", "factor"),
    [("displacement", 1e-3), ("random", 0.1)],  # measured: 20.7 -> 5.2e-5 and 0.45
)
def test_subspace_mode_decreases_a_quadratic(rotation, factor):
    n = 60
    target = torch.linspace(-1.0, 1.0, n)
    p = nn.Parameter(torch.zeros(n))
    opt = PolyStep([p], lr=0.2, subspace_dim=16, subspace_rotation=rotation, seed=0)

    def loss() -> torch.Tensor:
        return (p - target).square().sum().detach()

    start = float(loss())
    for _ in range(150):
        opt.step(loss)
    # 150 steps x 18 evaluations = 2,700 (the full-space mode spends 90 a step)
    assert opt.evaluations == 150 * 18
    assert float(loss()) < factor * start


def test_subspace_state_dict_round_trip_is_bit_exact():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
        return model, PolyStep(model.parameters(), subspace_dim=7, seed=5)

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(3))

    def steps(model, opt, k):
        for _ in range(k):
            opt.step(lambda: model(x).square().mean())

    model, opt = make()
    steps(model, opt, 5)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    steps(model, opt, 3)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed, fresh = make()
    resumed.load_state_dict(saved["model"])
    fresh.load_state_dict(saved["opt"])
    steps(resumed, fresh, 3)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "auto"])
def test_invalid_subspace_dim_is_named(bad):
    with pytest.raises(ValueError, match="subspace_dim"):
        PolyStep([nn.Parameter(torch.zeros(3))], subspace_dim=bad)
    opt = PolyStep([nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="subspace_dim"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))], "subspace_dim": bad})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="subspace_particle_dim"):
        PolyStep([nn.Parameter(torch.zeros(3))], subspace_dim=2, subspace_particle_dim=0)
    with pytest.raises(ValueError, match="subspace_rotation"):
        PolyStep([nn.Parameter(torch.zeros(3))], subspace_dim=2, subspace_rotation="svd")
