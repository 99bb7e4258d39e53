import math

import pytest
import torch
from torch import nn

from optzoo import AdamW, Muon
from tests.curvature.test_orthogonalize import quintic_polar


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = nn.Parameter(
        torch.randn(6, 3, generator=g, dtype=torch.float64)
    )  # tall: scale sqrt(2)
    bias = nn.Parameter(torch.randn(6, generator=g, dtype=torch.float64))
    grads = [
        (torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, generator=g))
        for _ in range(2)
    ]
    return weight, bias, [(gw, gb.double()) for gw, gb in grads]


def test_two_steps_match_the_reference_equations():
    lr, mu, wd, ratio, (b1, b2), eps, adam_wd = 0.1, 0.9, 0.3, 0.5, (0.8, 0.95), 1e-10, 0.2
    weight, bias, grads = _params()
    opt = Muon(
        [weight, bias],
        lr=lr,
        momentum=mu,
        weight_decay=wd,
        adamw_lr_ratio=ratio,
        adamw_betas=(b1, b2),
        adamw_eps=eps,
        adamw_weight_decay=adam_wd,
    )
    w, b = weight.detach().clone(), bias.detach().clone()
    buf, m, v = torch.zeros_like(w), torch.zeros_like(b), torch.zeros_like(b)
    for t, (gw, gb) in enumerate(grads, start=1):
        weight.grad, bias.grad = gw.clone(), gb.clone()
        opt.step()
        # Muon: EMA momentum, Nesterov look-ahead, quintic polar factor, shape scale sqrt(6/3).
        buf = mu * buf + (1 - mu) * gw
        direction = (1 - mu) * gw + mu * buf
        w = (1 - lr * wd) * w - lr * math.sqrt(2) * quintic_polar(direction)
        # inner AdamW at lr * ratio
        m = b1 * m + (1 - b1) * gb
        v = b2 * v + (1 - b2) * gb**2
        step = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps) + adam_wd * b
        b = b - lr * ratio * step
        torch.testing.assert_close(weight.detach(), w, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bias.detach(), b, rtol=1e-10, atol=1e-12)


def test_without_nesterov_the_momentum_itself_is_orthogonalized():
    weight, _, grads = _params(1)
    w0 = weight.detach().clone()
    opt = Muon([weight], lr=0.1, momentum=0.5, nesterov=False)
    for gw, _ in grads:
        weight.grad = gw.clone()
        opt.step()
    buf = 0.5 * (0.5 * grads[0][0]) + 0.5 * grads[1][0]
    want = w0 - 0.1 * math.sqrt(2) * (quintic_polar(0.5 * grads[0][0]) + quintic_polar(buf))
    torch.testing.assert_close(weight.detach(), want, rtol=1e-10, atol=1e-12)


def test_split_by_shape_convolutions_are_matrices_biases_and_row_vectors_are_not():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(8, 1))
    opt = Muon(model.parameters())
    model(torch.randn(5, 2, 4)).sum().backward()
    opt.step()
    conv_w, conv_b, head_w, head_b = model.parameters()
    assert set(opt.state[conv_w]) == {"step", "momentum_buffer"}
    assert opt.state[conv_w]["momentum_buffer"].shape == conv_w.shape
    for p in (conv_b, head_w, head_b):
        assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}


def test_conv_kernel_update_is_the_orthogonalized_matrix_view():
    conv = nn.Conv2d(3, 4, 2, bias=False).double()
    w0 = conv.weight.detach().clone()
    conv.weight.grad = torch.randn_like(conv.weight)
    Muon([conv.weight], lr=0.1).step()
    g = conv.weight.grad.reshape(4, 12)
    direction = 0.05 * g + 0.95 * (0.05 * g)  # (1 - mu) g + mu B, B = (1 - mu) g at step 1
    want = w0 - 0.1 * quintic_polar(direction).reshape(w0.shape)
    torch.testing.assert_close(conv.weight.detach(), want, rtol=1e-10, atol=1e-12)


def test_orthogonalize_flag_overrides_the_split():
    layer = nn.Linear(4, 5)
    opt = Muon([{"params": [layer.weight], "orthogonalize": False}, {"params": [layer.bias]}])
    layer(torch.randn(3, 4)).sum().backward()
    opt.step()
    assert "exp_avg" in opt.state[layer.weight]
    with pytest.raises(ValueError, match="orthogonalize=True needs matrix"):
        Muon([{"params": [layer.bias], "orthogonalize": True}])
    with pytest.raises(ValueError, match="orthogonalize"):
        Muon([{"params": [layer.weight], "orthogonalize": "yes"}])


def test_inner_adamw_equals_adamw_at_the_scaled_learning_rate():
    a, b = nn.Parameter(torch.ones(5)), nn.Parameter(torch.ones(5))
    muon = Muon([a], lr=0.2, adamw_lr_ratio=0.25, adamw_betas=(0.9, 0.99), adamw_eps=1e-8)
    adamw = AdamW([b], lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        grad = torch.randn(5, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        muon.step()
        adamw.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_every_singular_value_of_a_step_is_close_to_lr_times_scale():
    weight = nn.Parameter(torch.zeros(32, 16))
    weight.grad = torch.randn(32, 16, generator=torch.Generator().manual_seed(4))
    Muon([weight], lr=0.01).step()
    s = torch.linalg.svdvals(weight.detach()) / (0.01 * math.sqrt(2))
    assert float(s.min()) > 0.6 and float(s.max()) < 1.25


def test_agrees_with_torch_muon_port_of_the_reference_code():
    # torch.optim.Muon ports KellerJordan/Muon (Newton-Schulz in bfloat16): agreement to ~1%.
    g = torch.Generator().manual_seed(5)
    a = nn.Parameter(torch.randn(12, 5, generator=g))
    b = nn.Parameter(a.detach().clone())
    ours = Muon([a], lr=0.1, weight_decay=0.1)
    theirs = torch.optim.Muon([b], lr=0.1, weight_decay=0.1, adjust_lr_fn="original")
    start = a.detach().clone()
    for _ in range(3):
        grad = torch.randn(12, 5, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
    moved = (a - start).detach()
    torch.testing.assert_close(b - start, moved, rtol=0, atol=0.03 * float(moved.abs().max()))
