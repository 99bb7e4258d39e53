import numpy as np
import scipy.fft
import torch

from optzoo import DCTGaLore
from tests.lowrank.steps import LR, Adam, matrix, trajectory

EPS, ALPHA = 1e-6, 0.25


def test_two_steps_select_dct_columns_by_alignment():
    w0, grads = matrix(4, 7, seed=0), [matrix(4, 7, seed=s) for s in (1, 2)]
    # the orthonormal DCT-II matrix C (C x = dct(x)); candidate basis vectors are its columns.
    c = torch.from_numpy(scipy.fft.dct(np.eye(4), norm="ortho", axis=0))
    scores = (c.T @ grads[0]).abs().sum(dim=1)
    p = c[:, scores.argsort(descending=True)[:2]]
    adam, w, want = Adam(EPS), w0.clone(), []
    for g in grads:
        w = w - LR * ALPHA * (p @ adam(p.T @ g))
        want.append(w)
    got = trajectory(lambda ps: DCTGaLore(ps, lr=LR, rank=2), w0, grads)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_only_indices_are_stored():
    w = torch.nn.Parameter(matrix(16, 8, seed=0))  # tall: right projection, basis of size 8
    opt = DCTGaLore([w], rank=3)
    w.grad = matrix(16, 8, seed=1)
    opt.step()
    state = opt.state[w]
    assert state["projector_indices"].dtype == torch.int32
    assert state["projector_indices"].shape == (3,)
    assert "projector_basis" not in state
    assert state["exp_avg"].shape == (3, 16)
