"""Diagnostics of a model and its loss (Hessian spectrum, ...)."""

__all__: list[str] = []
