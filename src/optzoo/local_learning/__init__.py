"""Local-learning trainers: layer-local signals instead of end-to-end backpropagation."""

__all__: list[str] = []
