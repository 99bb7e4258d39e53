"""Memory-efficient low-rank optimizers: the gradient of each matrix is projected to a subspace."""

__all__: list[str] = []
