import torch

from optzoo import FRUGAL
from optzoo.lowrank.projectors import active_blocks
from tests.lowrank.steps import LR, matrix, top_left_singular_vectors, trajectory

EPS = 1e-8


def test_svd_split_resets_adam_at_each_refresh():
    # update_gap 1: a new subspace every step, Adam restarted from zero each time (t = 1), so
    # its direction is R / (|R| + eps); the residual moves by its sign.
    w0, grads = matrix(4, 6, seed=0), [matrix(4, 6, seed=s) for s in (1, 2)]
    w, want = w0.clone(), []
    for g in grads:
        p = top_left_singular_vectors(g, 2)  # density 0.5 of the short side 4
        r = p.T @ g
        w = w - LR * (p @ (r / (r.abs() + EPS)) + (g - p @ r).sign())
        want.append(w)
    got = trajectory(
        lambda ps: FRUGAL(ps, lr=LR, density=0.5, update_gap=1, projector="svd"), w0, grads
    )
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_blockwise_split_gives_adam_to_active_tensors_and_signsgd_to_the_rest():
    weights = [torch.nn.Parameter(matrix(4, 6, seed=s)) for s in (0, 1)]
    bias = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = FRUGAL([*weights, bias], lr=LR, density=0.5)
    (active,) = active_blocks(seed=0, refresh=0, count=2, density=0.5)
    before = [q.detach().clone() for q in (*weights, bias)]
    grads = [matrix(4, 6, seed=7), matrix(4, 6, seed=8), torch.ones(4, dtype=torch.float64)]
    for q, g in zip((*weights, bias), grads, strict=True):
        q.grad = g.clone()
    opt.step()
    for i, q in enumerate(weights):
        g = grads[i]
        step = g / (g.abs() + EPS) if i == active else g.sign()
        torch.testing.assert_close(q.detach(), before[i] - LR * step, rtol=1e-12, atol=1e-12)
    # only the active matrix holds Adam moments; the bias (not a matrix) takes Adam too.
    assert opt.state[weights[active]]["exp_avg"].shape == (4, 6)
    assert opt.state[weights[1 - active]]["exp_avg"].numel() == 0
    assert opt.state[bias]["exp_avg"].shape == (4,)


def test_defaults_are_the_papers():
    group = FRUGAL([torch.nn.Parameter(torch.zeros(2, 2))]).param_groups[0]
    assert (group["density"], group["update_gap"], group["projector"]) == (0.25, 200, "blockwise")
    assert (group["residual"], group["residual_scale"], group["reset_on_refresh"]) == (
        "sign",
        1.0,
        True,
    )
