"""Matrix views of parameters, shared by the families that treat matrices differently from the
rest (low-rank projection, orthogonalized momentum): which tensors count as matrices, and the
2-D view of a convolution kernel."""

from __future__ import annotations

import torch


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A 2-D view: a matrix as is; a convolution kernel ``(out, in, *k)`` as ``(out, in*prod(k))``.

    Raises ``ValueError`` for tensors with fewer than two dimensions.
    """
    if tensor.ndim < 2:
        raise ValueError(f"a tensor of shape {tuple(tensor.shape)} has no matrix view")
    return tensor if tensor.ndim == 2 else tensor.reshape(tensor.shape[0], -1)


def is_matrix(tensor: torch.Tensor, min_dim: int = 1) -> bool:
    """Whether ``tensor`` is treated as a matrix: at least 2-D, and both sides of its matrix
    view at least ``min_dim`` long (biases, norm scales and tiny matrices are not)."""
    if tensor.ndim < 2:
        return False
    rows, cols = tensor.shape[0], tensor[0].numel()
    return min(rows, cols) >= min_dim
