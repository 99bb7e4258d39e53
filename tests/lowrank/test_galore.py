import pytest
import torch

from optzoo import GaLore
from optzoo.lowrank.engine import LowRankOptimizer
from tests.lowrank.steps import LR, Adam, matrix, top_left_singular_vectors, trajectory

EPS, ALPHA = 1e-6, 0.25


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)], ids=["wide-left", "tall-right"])
def test_two_steps_match_the_paper(shape):
    w0 = matrix(*shape, seed=0)
    grads = [matrix(*shape, seed=1), matrix(*shape, seed=2)]
    # one SVD at the first step (T = 200): P from G1, Adam in P's coordinates, back with alpha.
    p = top_left_singular_vectors(grads[0], 2)
    adam, w, want = Adam(EPS), w0.clone(), []
    for g in grads:
        if shape[0] <= shape[1]:  # left projection: R = P^T G, back P N
            w = w - LR * ALPHA * (p @ adam(p.T @ g))
        else:  # right projection: R = G Q, back N Q^T
            w = w - LR * ALPHA * (adam(g @ p) @ p.T)
        want.append(w)
    got = trajectory(lambda ps: GaLore(ps, lr=LR, rank=2), w0, grads)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_refresh_every_step_keeps_the_moments():
    w0, grads = matrix(3, 5, seed=0), [matrix(3, 5, seed=s) for s in (1, 2, 3)]
    adam, w, want = Adam(EPS), w0.clone(), []
    for g in grads:
        p = top_left_singular_vectors(g, 2)  # new subspace, same moment buffers
        w = w - LR * ALPHA * (p @ adam(p.T @ g))
        want.append(w)
    got = trajectory(lambda ps: GaLore(ps, lr=LR, rank=2, update_gap=1), w0, grads)
    torch.testing.assert_close(got[-1], want[-1], rtol=1e-12, atol=1e-12)


def test_state_is_low_rank_and_small_tensors_take_plain_adamw():
    weight = torch.nn.Parameter(matrix(6, 40, seed=0))
    small = torch.nn.Parameter(matrix(3, 40, seed=1))  # short side 3 < min_dim 4
    bias = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = GaLore([weight, small, bias], lr=LR, rank=2, min_dim=4, weight_decay=0.1)
    twin = [torch.nn.Parameter(t.detach().clone()) for t in (small, bias)]
    adamw = torch.optim.AdamW(twin, lr=LR, eps=1e-6, weight_decay=0.1)
    for seed in (2, 3):
        for q, tq in zip((weight, small, bias), (None, *twin), strict=True):
            q.grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed)).double()
            if tq is not None:
                tq.grad = q.grad.clone()
        opt.step()
        adamw.step()
    assert opt.state[weight]["exp_avg"].shape == (2, 40)
    assert opt.state[weight]["projector_basis"].shape == (6, 2)
    for q, tq in zip((small, bias), twin, strict=True):
        torch.testing.assert_close(q, tq, rtol=1e-12, atol=1e-12)


def test_param_group_can_opt_out_of_projection():
    w = torch.nn.Parameter(matrix(6, 8, seed=0))
    opt = GaLore([{"params": [w], "project": False}], rank=2)
    w.grad = matrix(6, 8, seed=1)
    opt.step()
    assert opt.state[w]["exp_avg"].shape == (6, 8)


def test_defaults_are_the_papers():
    group = GaLore([torch.nn.Parameter(torch.zeros(2, 2))]).param_groups[0]
    assert (group["rank"], group["update_gap"], group["scale"]) == (128, 200, 0.25)
    assert group["lr"] == 1e-2
    assert (group["eps"], group["weight_decay"], group["residual"]) == (1e-6, 0.0, "drop")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"projector": "qr"}, "projector"), ({"residual": "x"}, "residual"), ({"inner": 3}, "inner")],
)
def test_bad_composition_names_the_argument(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        LowRankOptimizer([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)
