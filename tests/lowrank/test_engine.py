import pytest
import torch
from torch import nn

from optzoo import GaLore, Lion
from optzoo.lowrank.engine import LowRankOptimizer, expected_state_bytes
from optzoo.lowrank.projectors import PROJECTORS, RefreshContext
from tests.lowrank.steps import matrix

CONTEXT = RefreshContext(seed=0, index=0, count=1, refresh=0)


def test_randomized_svd_spans_the_top_subspace_of_a_low_rank_matrix():
    m = matrix(20, 3, seed=0) @ matrix(3, 50, seed=1)
    exact = PROJECTORS["svd"]
    fast = PROJECTORS["randomized_svd"]
    p_exact, p_fast = exact.basis(m, 3, CONTEXT), fast.basis(m, 3, CONTEXT)
    torch.testing.assert_close(p_fast @ p_fast.T, p_exact @ p_exact.T, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["random", "randomized_svd"])
def test_random_projectors_are_orthonormal_and_seeded(name):
    m = matrix(10, 30, seed=0)
    projector = PROJECTORS[name]
    a = projector.basis(m, 4, CONTEXT)
    torch.testing.assert_close(a.T @ a, torch.eye(4, dtype=a.dtype), rtol=0, atol=1e-12)
    assert torch.equal(a, projector.basis(m, 4, CONTEXT))
    other = RefreshContext(seed=0, index=0, count=1, refresh=1)
    assert not torch.equal(a, PROJECTORS["random"].basis(m, 4, other)) or name != "random"


def test_any_first_order_rule_can_run_inside_the_subspace():
    w = nn.Parameter(matrix(4, 9, seed=0))
    opt = LowRankOptimizer([w], inner=Lion, betas=(0.9, 0.99), rank=2, scale=1.0, lr=0.1)
    w.grad = matrix(4, 9, seed=1)
    before = w.detach().clone()
    opt.step()
    basis = opt.state[w]["projector_basis"]
    # Lion's first step is sign(R): the update is P sign(P^T G).
    want = before - 0.1 * basis @ torch.sign(basis.T @ w.grad)
    torch.testing.assert_close(w.detach(), want, rtol=1e-12, atol=1e-12)
    assert set(opt.state[w]) >= {"exp_avg", "projector_basis"} and "exp_avg_sq" not in opt.state[w]


@pytest.mark.parametrize(
    ("projector", "residual", "preconditioner"),
    [("svd", "drop", None), ("dct", "fira", None), ("random", "sgd", "natural")],
)
def test_expected_state_bytes_match_the_measured(projector, residual, preconditioner):
    model = nn.Sequential(nn.Linear(48, 96), nn.ReLU(), nn.Linear(96, 32))
    hp = {"rank": 8, "projector": projector, "residual": residual}
    opt = LowRankOptimizer(model.parameters(), preconditioner=preconditioner, history=5, **hp)
    model(torch.randn(4, 48)).square().sum().backward()
    opt.step()
    measured = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v) and v.ndim
    ) / sum(p.numel() for p in model.parameters())
    expected = expected_state_bytes(
        list(model.parameters()), preconditioner=preconditioner, history=5, **hp
    )
    assert measured == pytest.approx(expected, rel=1e-12)
    assert expected < 8.0 or preconditioner == "natural"


def test_bfloat16_matrix_update_runs_in_float32():
    w = nn.Parameter(matrix(4, 9, seed=0).to(torch.bfloat16))
    opt = GaLore([w], rank=2)
    w.grad = matrix(4, 9, seed=1).to(torch.bfloat16)
    opt.step()
    assert opt.state[w]["projector_basis"].dtype == torch.float32
    assert opt.state[w]["exp_avg"].dtype == torch.float32
