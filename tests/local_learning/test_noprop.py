"""NoProp-DT against its equations: the cosine noise schedule, the inference coefficients (the
Gaussian posterior q(z_t | z_{t-1}, y), derived here by conditioning), and the denoising loss."""

import math

import pytest
import torch
from torch import nn

from optzoo import NoProp, NoPropNetwork
from optzoo.local_learning.noprop import cosine_alpha_bar, inference_coefficients, snr


def test_cosine_schedule_values():
    T, s = 10, 0.008
    got = cosine_alpha_bar(T)
    f0 = math.cos(0.5 * math.pi * s / (1 + s)) ** 2
    for t in range(1, T + 1):
        tau = 1 - t / (T + 1)
        want = math.cos(0.5 * math.pi * (tau + s) / (1 + s)) ** 2 / f0
        assert float(got[t]) == pytest.approx(want, rel=1e-12)
    assert float(got[0]) == 0.0  # z_0 is pure noise
    assert bool((got[1:] > got[:-1]).all()) and float(got[-1]) < 1.0  # finite SNR(T)


def test_inference_coefficients_are_the_gaussian_posterior():
    alpha_bar = cosine_alpha_bar(6)
    a, b, c = inference_coefficients(alpha_bar)
    for t in range(1, 7):
        now, before = float(alpha_bar[t]), float(alpha_bar[t - 1])
        alpha = before / now  # z_{t-1} = sqrt(alpha) z_t + sqrt(1 - alpha) eps
        covariance = math.sqrt(alpha) * (1 - now)  # Cov(z_t, z_{t-1}) given y
        variance = 1 - before  # Var(z_{t-1} | y)
        b_want = covariance / variance
        a_want = math.sqrt(now) - b_want * math.sqrt(before)
        c_want = (1 - now) - covariance**2 / variance
        assert float(b[t - 1]) == pytest.approx(b_want, rel=1e-10, abs=1e-14)
        assert float(a[t - 1]) == pytest.approx(a_want, rel=1e-10)
        assert float(c[t - 1]) == pytest.approx(c_want, rel=1e-10)


def test_denoising_loss_is_the_weighted_squared_error():
    torch.manual_seed(0)
    model = NoPropNetwork(5, 3, num_blocks=4, hidden=8)
    trainer = NoProp(eta=0.3)
    x, y = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    noise = torch.randn(7, 3)
    alpha_bar = cosine_alpha_bar(4)
    for t in (1, 3, 4):
        z = math.sqrt(alpha_bar[t - 1]) * torch.eye(3)[y] + math.sqrt(1 - alpha_bar[t - 1]) * noise
        u_hat = model.blocks[t - 1](z, x, torch.eye(3))
        weight = 4 / 2 * 0.3 * float(snr(alpha_bar)[t] - snr(alpha_bar)[t - 1])
        want = weight * (u_hat - torch.eye(3)[y]).square().sum(1).mean()
        got = trainer.denoising_loss(model, t, x, y, noise)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_blocks_are_trained_independently_of_each_other():
    torch.manual_seed(0)
    model = NoPropNetwork(5, 3, num_blocks=3, hidden=8)
    x, y = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    loss = NoProp().denoising_loss(model, 2, x, y, torch.randn(7, 3))
    loss.backward()
    assert all(p.grad is None for p in model.blocks[0].parameters())
    assert all(p.grad is None for p in model.blocks[2].parameters())
    assert all(p.grad is not None for p in model.blocks[1].parameters())


def test_block_output_is_a_mixture_of_class_embeddings():
    torch.manual_seed(0)
    embedding = torch.randn(3, 6)
    model = NoPropNetwork(5, 3, num_blocks=2, hidden=8, embedding=embedding)
    u_hat = model.blocks[0](torch.randn(4, 6), torch.randn(4, 5), model.embedding)
    weights = torch.linalg.lstsq(embedding.T, u_hat.T.detach()).solution.T
    torch.testing.assert_close(weights.sum(1), torch.ones(4), rtol=1e-4, atol=1e-4)
    assert bool((weights > -1e-4).all())


def test_inference_is_seeded_and_noprop_needs_its_network():
    torch.manual_seed(0)
    model = NoPropNetwork(5, 3, num_blocks=2, hidden=8)
    x = torch.randn(4, 5)
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    torch.testing.assert_close(model(x, g[0]), model(x, g[1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="NoPropNetwork"):
        NoProp().fit(nn.Sequential(nn.Linear(5, 3)), (x, torch.tensor([0, 1, 2, 0])))
    with pytest.raises(ValueError, match="embedding"):
        NoPropNetwork(5, 3, embedding=torch.eye(4))
