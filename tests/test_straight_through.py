"""Straight-through and surrogate-gradient estimators: exact forward passes, the backward factor
of every estimator against its formula, and training of the non-differentiable workload."""

import pytest
import torch
from torch import nn

from optzoo import straight_through as st
from optzoo.bench.workloads.nondiff import STAIR, Sign, Staircase, centered_digits, sign_network

X = torch.tensor([-3.0, -1.0, -0.4, 0.0, 0.3, 0.9, 2.5], dtype=torch.float64)


def grad_of(fn, x=X):
    x = x.clone().requires_grad_(True)
    fn(x).backward(torch.ones_like(x))
    return x.grad


def test_forward_passes_are_exact():
    for estimator in st.ESTIMATORS:
        assert torch.equal(st.sign(X, estimator), torch.sign(X))
        assert torch.equal(st.step(X, estimator), (X > 0).double())
        assert torch.equal(st.staircase(X, 0.25, estimator), torch.round(X / 0.25) * 0.25)
    x = torch.randn(5, 64)
    assert torch.equal(st.Sign()(x), Sign()(x))
    assert torch.equal(st.Staircase(STAIR)(x), Staircase(STAIR)(x))


def test_backward_factors_match_their_formulas():
    beta = 3.0
    s = torch.sigmoid(beta * X)
    ones = torch.ones_like(X)
    cases = {
        ("sign", "identity"): ones,
        ("sign", "saturated"): (X.abs() <= 1).double(),
        ("sign", "sigmoid"): 2 * beta * s * (1 - s),
        ("sign", "fast_sigmoid"): 2 / (1 + beta * X.abs()) ** 2,
        ("step", "identity"): ones,
        ("step", "saturated"): (X.abs() <= 1).double(),
        ("step", "sigmoid"): beta * s * (1 - s),
        ("step", "fast_sigmoid"): 1 / (1 + beta * X.abs()) ** 2,
    }
    for (kind, estimator), want in cases.items():
        fn = getattr(st, kind)
        got = grad_of(lambda x, fn=fn, e=estimator: fn(x, e, beta))
        torch.testing.assert_close(got, want, msg=f"{kind}/{estimator}")


def test_staircase_surrogate_peaks_at_every_jump():
    width, beta = 0.5, 4.0
    jumps = torch.tensor([-0.75, -0.25, 0.25, 0.75, 1.25], dtype=torch.float64)
    middles = jumps + width / 2
    for estimator, peak in [("sigmoid", beta / 4), ("fast_sigmoid", 1.0)]:
        at_jump = grad_of(lambda x, e=estimator: st.staircase(x, width, e, beta), jumps)
        torch.testing.assert_close(at_jump, torch.full_like(jumps, peak))
        between = grad_of(lambda x, e=estimator: st.staircase(x, width, e, beta), middles)
        assert bool((between < at_jump).all())
    copied = grad_of(lambda x: st.staircase(x, width, "saturated"), X)
    torch.testing.assert_close(copied, torch.ones_like(X))


def test_sigmoid_surrogate_integrates_to_the_jump_height():
    x = torch.linspace(-40, 40, 200_001, dtype=torch.float64)
    for fn, jump in [(st.sign, 2.0), (st.step, 1.0)]:
        area = torch.trapezoid(grad_of(lambda v, fn=fn: fn(v, "sigmoid", 2.0), x), x)
        assert float(area) == pytest.approx(jump, rel=1e-6)


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="estimator"):
        st.Sign("tanh")
    with pytest.raises(ValueError, match="beta"):
        st.step(X, "sigmoid", beta=0.0)
    with pytest.raises(ValueError, match="width"):
        st.Staircase(width=-1.0)


def test_surrogate_gradients_train_the_non_differentiable_network():
    split = centered_digits()
    x, y = split.x_train.flatten(1), split.y_train
    torch.manual_seed(0)
    plain = sign_network()
    loss = nn.functional.cross_entropy(plain(x), y)
    loss.backward()
    assert all(float(p.grad.abs().sum()) == 0 for p in plain.parameters())  # no signal

    torch.manual_seed(0)
    model = sign_network()
    model[2] = st.Sign("saturated")
    model[4] = st.Staircase(STAIR, "identity")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        batch = torch.randint(len(x), (128,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    # the trained weights, in the workload's own (exact) network
    exact = sign_network()
    exact.load_state_dict(model.state_dict())
    test_x = split.x_test.flatten(1)
    error = float((exact(test_x).argmax(1) != split.y_test).float().mean())
    assert error < 0.3
