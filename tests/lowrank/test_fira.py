import torch

from optzoo import Fira
from tests.lowrank.steps import LR, Adam, matrix, top_left_singular_vectors, trajectory

EPS, ALPHA, GAMMA = 1e-6, 0.25, 1.01


def test_two_steps_match_the_paper_with_the_limiter_active():
    w0 = matrix(3, 6, seed=0)
    grads = [matrix(3, 6, seed=1), matrix(3, 6, seed=2, scale=5.0)]  # a jump in the residual
    p = top_left_singular_vectors(grads[0], 2)
    adam, w, want, previous, limited = Adam(EPS), w0.clone(), [], None, False
    for g in grads:
        r = p.T @ g
        n = adam(r)
        phi = n.norm(dim=0) / (r.norm(dim=0) + 1e-8)  # one factor per column
        s = (g - p @ r) * phi
        # the limiter, with the authors' 1e-8 guard on the previous norm
        if previous is not None and s.norm() / (previous + 1e-8) > GAMMA:
            s = s * GAMMA * (previous + 1e-8) / s.norm()
            limited = True
        previous = s.norm()
        w = w - LR * (ALPHA * p @ n + s)
        want.append(w)
    assert limited, "the test must exercise the norm-growth limiter"
    got = trajectory(lambda ps: Fira(ps, lr=LR, rank=2), w0, grads)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_step_is_full_rank_where_galore_is_not():
    w = torch.nn.Parameter(matrix(4, 8, seed=0))
    opt = Fira([w], lr=LR, rank=1)
    w.grad = matrix(4, 8, seed=1)
    before = w.detach().clone()
    opt.step()
    assert torch.linalg.matrix_rank(w.detach() - before) == 4
    assert opt.state[w]["residual_norm"].ndim == 0
