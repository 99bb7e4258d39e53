"""Curvature-aware optimizers: orthogonalized momentum, matrix-free inverse Hessians, Sven."""

__all__: list[str] = []
