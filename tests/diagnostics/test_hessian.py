"""Hessian diagnostics against a dense Hessian (``torch.func.hessian`` + ``eigvalsh``) on a model
small enough to form it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from optzoo.diagnostics import (
    hessian_vector_product,
    lanczos,
    plot_spectral_density,
    spectral_density,
    top_eigenvalues,
)


def small_classifier(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)

    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())

    def flat_loss(flat: torch.Tensor) -> torch.Tensor:
        tensors, offset = {}, 0
        for name, p in zip(names, params, strict=True):
            tensors[name] = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return nn.functional.cross_entropy(functional_call(model, tensors, (x,)), y)

    flat0 = torch.cat([p.detach().reshape(-1) for p in params])
    dense = torch.func.hessian(flat_loss)(flat0)
    return model, loss, dense


def test_hessian_vector_product_matches_dense_hessian():
    model, loss, dense = small_classifier()
    v = torch.randn(dense.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(
        hessian_vector_product(loss, model.parameters())(v), dense @ v, rtol=1e-10, atol=1e-12
    )


def test_lanczos_top_eigenvalues_match_eigvalsh():
    model, loss, dense = small_classifier()
    expected = torch.linalg.eigvalsh(dense).flip(0)[:3]
    found = top_eigenvalues(loss, list(model.parameters()), k=3, steps=40)
    torch.testing.assert_close(found, expected, rtol=1e-8, atol=1e-10)


def test_lanczos_on_a_known_diagonal_operator():
    diagonal = torch.cat([torch.linspace(0, 1, 50, dtype=torch.float64), torch.tensor([10.0])])
    alphas, betas, basis = lanczos(lambda v: diagonal * v, 51, 20)
    torch.testing.assert_close(
        basis @ basis.T, torch.eye(20, dtype=torch.float64), atol=1e-10, rtol=0
    )
    ritz = torch.linalg.eigvalsh(torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1))
    assert float(ritz[-1]) == pytest.approx(10.0, rel=1e-10)


def test_spectral_density_moments_and_mass():
    model, loss, dense = small_classifier()
    eigenvalues = torch.linalg.eigvalsh(dense)
    density = spectral_density(loss, list(model.parameters()), probes=30, steps=40, seed=0)
    assert float(torch.trapezoid(density.density, density.grid)) == pytest.approx(1.0, abs=1e-3)
    # full-dimensional Lanczos per probe: moments are exact per probe up to the probe's
    # Hutchinson error, so the mean over 30 Rademacher probes is within a few percent
    assert density.moment(1) == pytest.approx(float(eigenvalues.mean()), rel=0.1)
    assert density.moment(2) == pytest.approx(float(eigenvalues.square().mean()), rel=0.15)
    # Ritz values reach the extreme eigenvalues (the outliers)
    assert float(density.nodes.max()) == pytest.approx(float(eigenvalues.max()), rel=1e-8)


def test_plot_writes_a_png(tmp_path):
    model, loss, _ = small_classifier()
    density = spectral_density(loss, list(model.parameters()), probes=2, steps=10)
    path = tmp_path / "spectrum.png"
    plot_spectral_density(density, path=path, outliers=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_raise():
    model, loss, _ = small_classifier()
    with pytest.raises(ValueError, match="steps"):
        lanczos(lambda v: v, 4, 0)
    with pytest.raises(ValueError, match="k="):
        top_eigenvalues(loss, list(model.parameters()), k=0)
    with pytest.raises(ValueError, match="probes"):
        spectral_density(loss, list(model.parameters()), probes=0)
    with pytest.raises(ValueError, match="requires_grad"):
        hessian_vector_product(loss, [])
