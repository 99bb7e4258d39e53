"""Diagnostics of a model and its loss (Hessian spectrum, ...)."""

from optzoo.diagnostics.hessian import (
    SpectralDensity,
    hessian_vector_product,
    lanczos,
    spectral_density,
    top_eigenvalues,
)
from optzoo.diagnostics.plot import plot_spectral_density

__all__: list[str] = [
    "SpectralDensity",
    "hessian_vector_product",
    "lanczos",
    "plot_spectral_density",
    "spectral_density",
    "top_eigenvalues",
]
