import torch

from optzoo import NaturalGaLore
from tests.lowrank.steps import LR, Adam, matrix, top_left_singular_vectors, trajectory

EPS, ALPHA, DAMPING = 1e-6, 0.25, 1e-3


def test_three_steps_apply_the_inverse_empirical_fisher():
    # F = damping I + sum of g g^T over the history (2 here, so the third step drops the first),
    # inverted directly (k x k) rather than through Woodbury's identity.
    w0 = matrix(3, 5, seed=0)
    grads = [matrix(3, 5, seed=s, scale=0.1) for s in (1, 2, 3)]
    p = top_left_singular_vectors(grads[0], 2)
    adam, w, want, history = Adam(EPS), w0.clone(), [], []
    for g in grads:
        r = p.T @ g
        history = [*history, r.reshape(-1)][-2:]
        fisher = DAMPING * torch.eye(r.numel(), dtype=r.dtype)
        for h in history:
            fisher = fisher + torch.outer(h, h)
        natural = torch.linalg.solve(fisher, r.reshape(-1)).reshape(r.shape)
        w = w - LR * ALPHA * (p @ adam(natural))
        want.append(w)
    got = trajectory(lambda ps: NaturalGaLore(ps, lr=LR, rank=2, history=2), w0, grads)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_history_state_size():
    w = torch.nn.Parameter(matrix(4, 6, seed=0))
    opt = NaturalGaLore([w], rank=2)
    w.grad = matrix(4, 6, seed=1)
    opt.step()
    assert opt.state[w]["fisher_history"].shape == (20, 12)
    assert opt.state[w]["fisher_count"] == 1
