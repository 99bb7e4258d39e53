"""Plots of diagnostics (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optzoo.diagnostics.hessian import SpectralDensity


def plot_spectral_density(
    density: SpectralDensity,
    path: str | Path | None = None,
    ax: Any = None,
    title: str = "Hessian spectral density (stochastic Lanczos quadrature)",
    outliers: int = 0,
) -> Any:
    """Draw ``density`` on a log-scaled density axis, so that the bulk near zero and the few
    large outlier eigenvalues show together (as in "Empirical Analysis of the Hessian of
    Over-Parametrized Neural Networks"). ``outliers > 0`` marks that many of the largest Ritz
    values of the first probe. Saves a PNG to ``path`` when given; returns the axes."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 4))
    floor = float(density.density.max()) * 1e-7
    ax.semilogy(density.grid.numpy(), density.density.clamp_min(floor).numpy(), lw=1.2)
    if outliers > 0:
        for value in density.nodes[0].sort(descending=True).values[:outliers]:
            ax.axvline(float(value), color="tab:red", lw=0.6, ls=":")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=120)
    return ax
