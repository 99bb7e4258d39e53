"""The Hessian spectrum of any model and loss, matrix-free: top eigenvalues by Lanczos on
Hessian-vector products, and the spectral density by stochastic Lanczos quadrature, as used in
"Empirical Analysis of the Hessian of Over-Parametrized Neural Networks" (Sagun, Evci, Guney,
Dauphin and Bottou, 2017) to show a bulk of eigenvalues near zero and a few large outliers.

Everything takes ``loss_fn`` (a function of no arguments returning the scalar loss of the
model, e.g. ``lambda: criterion(model(x), y)``) and the parameters to differentiate; the
Hessian is never formed, each product costs one double backward."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


def hessian_vector_product(loss_fn: Callable[[], Tensor], params: Iterable[Tensor]) -> MatVec:
    """``v -> H v`` for the Hessian of ``loss_fn()`` over the flattened ``params`` (float64
    vectors in and out). The gradient graph is built once and reused for every product."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("hessian_vector_product needs at least one parameter with requires_grad")
    with torch.enable_grad():
        loss = loss_fn()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    if not pairs:
        raise ValueError("the loss does not depend on the given parameters")
    numel = sum(p.numel() for p in params)
    sizes = [p.numel() for p in params]
    used = [g is not None for g in grads]

    def product(vector: Tensor) -> Tensor:
        if vector.shape != (numel,):
            raise ValueError(
                f"expected a vector of {numel} entries, got shape {tuple(vector.shape)}"
            )
        pieces = torch.split(vector, sizes)
        tangents = [
            piece.view_as(p).to(p.dtype)
            for piece, p, u in zip(pieces, params, used, strict=True)
            if u
        ]
        with torch.enable_grad():
            out = torch.autograd.grad(
                [g for _, g in pairs],
                [p for p, _ in pairs],
                grad_outputs=tangents,
                retain_graph=True,
                allow_unused=True,
            )
        result = iter(out)
        flat = []
        for p, u in zip(params, used, strict=True):
            h = next(result) if u else None
            flat.append(torch.zeros(p.numel(), dtype=torch.float64) if h is None else h.reshape(-1))
        return torch.cat([f.double() for f in flat])

    product.dim = numel  # type: ignore[attr-defined]
    return product


def lanczos(
    matvec: MatVec, dim: int, steps: int, start: Tensor | None = None, generator=None
) -> tuple[Tensor, Tensor, Tensor]:
    """``steps`` iterations of Lanczos with full reorthogonalisation on the symmetric operator
    ``matvec`` of size ``dim`` (float64), from ``start`` (default: a random Gaussian vector).

    Returns ``(alphas, betas, basis)``: the diagonal and off-diagonal of the tridiagonal matrix
    ``T`` (``m`` and ``m - 1`` entries, ``m <= steps``; fewer when an invariant subspace is
    found) and the orthonormal Lanczos vectors as rows of ``basis`` (``m x dim``)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"invalid steps={steps!r}: expected an integer >= 1")
    steps = min(steps, dim)
    q = (
        torch.randn(dim, dtype=torch.float64, generator=generator)
        if start is None
        else start.double().clone()
    )
    q = q / q.norm()
    basis = [q]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    for j in range(steps):
        w = matvec(basis[j])
        alpha = torch.dot(w, basis[j])
        alphas.append(alpha)
        stacked = torch.stack(basis)
        w = w - stacked.T @ (stacked @ w)  # full reorthogonalisation (twice is enough)
        w = w - stacked.T @ (stacked @ w)
        beta = w.norm()
        if j == steps - 1 or beta <= 1e-10 * max(1.0, float(alpha.abs())):
            break
        betas.append(beta)
        basis.append(w / beta)
    return (
        torch.stack(alphas),
        torch.stack(betas) if betas else torch.zeros(0, dtype=torch.float64),
        torch.stack(basis[: len(alphas)]),
    )


def tridiagonal(alphas: Tensor, betas: Tensor) -> Tensor:
    """The symmetric tridiagonal matrix with diagonal ``alphas`` and off-diagonal ``betas``."""
    return torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)


def top_eigenvalues(
    loss_fn: Callable[[], Tensor],
    params: Iterable[Tensor],
    k: int = 1,
    steps: int = 50,
    seed: int = 0,
) -> Tensor:
    """The ``k`` algebraically largest eigenvalues of the Hessian of ``loss_fn()`` (descending,
    float64), as Ritz values of ``steps`` Lanczos iterations (the extreme ones converge first;
    raise ``steps`` for more accuracy)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"invalid k={k!r}: expected an integer >= 1")
    matvec = hessian_vector_product(loss_fn, params)
    generator = torch.Generator().manual_seed(seed)
    alphas, betas, _ = lanczos(matvec, matvec.dim, max(steps, k), generator=generator)  # type: ignore[attr-defined]
    ritz = torch.linalg.eigvalsh(tridiagonal(alphas, betas))
    return ritz.flip(0)[:k]


@dataclass(frozen=True)
class SpectralDensity:
    """A Hessian spectral density estimated by stochastic Lanczos quadrature.

    ``nodes`` / ``weights``: per probe (rows), the Ritz values and their quadrature weights
    (each row sums to 1); ``grid`` / ``density``: the density smoothed by a Gaussian of width
    ``sigma`` and evaluated on ``grid`` (it integrates to about 1)."""

    nodes: Tensor
    weights: Tensor
    grid: Tensor
    density: Tensor
    sigma: float

    def moment(self, order: int) -> float:
        """The estimate of ``trace(H**order) / dim`` (exact in expectation over probes)."""
        return float((self.weights * self.nodes**order).sum(dim=1).mean())


def spectral_density(
    loss_fn: Callable[[], Tensor],
    params: Iterable[Tensor],
    probes: int = 10,
    steps: int = 80,
    grid_points: int = 1000,
    sigma: float | None = None,
    seed: int = 0,
) -> SpectralDensity:
    """The eigenvalue density of the Hessian of ``loss_fn()`` by stochastic Lanczos quadrature
    (Rademacher probes; each probe's ``steps``-point Gauss quadrature gives Ritz values
    ``theta_j`` and weights ``tau_j`` = squared first components of the eigenvectors of
    ``T``; the density is ``mean over probes of sum_j tau_j N(t; theta_j, sigma^2)``).

    ``sigma`` defaults to 1e-3 of the spectrum's range; the grid spans the Ritz values with a
    margin of ``5 sigma``."""
    if not isinstance(probes, int) or probes < 1:
        raise ValueError(f"invalid probes={probes!r}: expected an integer >= 1")
    if not isinstance(grid_points, int) or grid_points < 2:
        raise ValueError(f"invalid grid_points={grid_points!r}: expected an integer >= 2")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"invalid sigma={sigma!r}: expected a number > 0")
    matvec = hessian_vector_product(loss_fn, params)
    dim = matvec.dim  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(seed)
    all_nodes, all_weights = [], []
    width = min(steps, dim)
    for _ in range(probes):
        probe = torch.randint(0, 2, (dim,), generator=generator).double() * 2 - 1
        alphas, betas, _ = lanczos(matvec, dim, steps, start=probe)
        values, vectors = torch.linalg.eigh(tridiagonal(alphas, betas))
        nodes = torch.zeros(width, dtype=torch.float64)
        weights = torch.zeros(width, dtype=torch.float64)
        nodes[: values.numel()] = values
        weights[: values.numel()] = vectors[0] ** 2
        all_nodes.append(nodes)
        all_weights.append(weights)
    nodes, weights = torch.stack(all_nodes), torch.stack(all_weights)
    used = weights > 0
    low, high = float(nodes[used].min()), float(nodes[used].max())
    if sigma is None:
        sigma = max(1e-3 * (high - low), 1e-12)
    grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, grid_points, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / sigma) ** 2)
    kernel = kernel / (sigma * math.sqrt(2 * math.pi))
    density = (kernel * weights[None]).sum(dim=2).mean(dim=1)
    return SpectralDensity(nodes=nodes, weights=weights, grid=grid, density=density, sigma=sigma)
