"""Gradient-free optimizers: they need loss values only (no backward pass)."""

__all__: list[str] = []
