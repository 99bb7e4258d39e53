"""tpSGD against its equations, in float64: the local target is the fixed random projection of
the one-hot label, hidden layers follow the delta rule, the output layer cross-entropy."""

import pytest
import torch
from torch import nn

from optzoo import TargetProjectionSGD

N, D, H, K = 6, 5, 4, 3


def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(D, H), nn.Sigmoid(), nn.Linear(H, K)).double()
    return x, y, model


def test_projection_is_fixed_per_seed_and_layer():
    a = TargetProjectionSGD(seed=1).projection(0, H, K)
    assert a.shape == (H, K)
    torch.testing.assert_close(a, TargetProjectionSGD(seed=1).projection(0, H, K))
    assert not torch.equal(a, TargetProjectionSGD(seed=2).projection(0, H, K))
    assert not torch.equal(a, TargetProjectionSGD(seed=1).projection(1, H, K))
    scaled = TargetProjectionSGD(seed=1, projection_scale=3.0).projection(0, H, K)
    torch.testing.assert_close(scaled, 3 * a)


@pytest.mark.parametrize("hidden_loss", ["mse", "l1"])
def test_one_layerwise_epoch_is_the_delta_rule_then_cross_entropy(hidden_loss):
    x, y, model = problem()
    w1, b1 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    w2, b2 = model[2].weight.detach().clone(), model[2].bias.detach().clone()
    lr = 0.3
    trainer = TargetProjectionSGD(lr=lr, epochs=1, batch_size=N, hidden_loss=hidden_loss, seed=1)
    target = torch.eye(K, dtype=torch.float64)[y] @ trainer.projection(0, H, K).T  # P y*
    trainer.fit(model, (x, y))

    # hidden layer: w += lr * mean_b [(residual * s'(z)) x^T], residual = P y* - y (l1: its sign)
    z = x @ w1.T + b1
    out = torch.sigmoid(z)
    residual = target - out
    if hidden_loss == "l1":
        residual = residual.sign()
    delta = residual * out * (1 - out)
    w1_new, b1_new = w1 + lr * delta.T @ x / N, b1 + lr * delta.mean(0)
    torch.testing.assert_close(model[0].weight.detach(), w1_new, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model[0].bias.detach(), b1_new, rtol=1e-12, atol=1e-12)

    # output layer, trained afterwards on the updated hidden layer: cross-entropy step
    h = torch.sigmoid(x @ w1_new.T + b1_new)
    error = torch.softmax(h @ w2.T + b2, dim=1) - torch.eye(K, dtype=torch.float64)[y]
    torch.testing.assert_close(model[2].weight.detach(), w2 - lr * error.T @ h / N)
    torch.testing.assert_close(model[2].bias.detach(), b2 - lr * error.mean(0))


def test_simultaneous_schedule_passes_no_error_between_layers():
    x, y, model = problem()
    w1, b1 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    w2, b2 = model[2].weight.detach().clone(), model[2].bias.detach().clone()
    lr = 0.2
    trainer = TargetProjectionSGD(lr=lr, epochs=1, batch_size=N, schedule="simultaneous", seed=1)
    target = torch.eye(K, dtype=torch.float64)[y] @ trainer.projection(0, H, K).T
    trainer.fit(model, (x, y))
    out = torch.sigmoid(x @ w1.T + b1)
    delta = (target - out) * out * (1 - out)  # the output layer's error plays no part
    torch.testing.assert_close(model[0].weight.detach(), w1 + lr * delta.T @ x / N)
    error = torch.softmax(out @ w2.T + b2, dim=1) - torch.eye(K, dtype=torch.float64)[y]
    torch.testing.assert_close(model[2].weight.detach(), w2 - lr * error.T @ out / N)


def test_layerwise_history_walks_the_layers_in_order():
    x, y, model = problem()
    result = TargetProjectionSGD(epochs=2, batch_size=3).fit(model, (x, y))
    assert [(h["layer"], h["epoch"]) for h in result.history] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_invalid_choices_and_models_are_refused():
    with pytest.raises(ValueError, match="hidden_loss"):
        TargetProjectionSGD(hidden_loss="huber")
    with pytest.raises(ValueError, match="schedule"):
        TargetProjectionSGD(schedule="random")
    x, y, _ = problem()
    with pytest.raises(ValueError, match=r"nn\.Sequential"):
        TargetProjectionSGD().fit(nn.Linear(D, K).double(), (x, y))
