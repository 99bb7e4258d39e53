"""Shared mechanics of the curvature methods whose ``step(closure)`` needs a closure returning a
1-D tensor of per-sample values (residuals for Sven, losses for the regularized Newton method):
evaluating and checking that closure, per-sample Jacobians by batched vector-Jacobian products,
dense Hessians for small models, and reading / writing the parameters as one flat vector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from optzoo._core.optimizer import ZooOptimizer
from optzoo._core.rules import LOW_PRECISION

# Rows of the identity pushed through one batched vector-Jacobian product by default: the
# backward workspace of one call is about this many gradient-sized buffers.
DEFAULT_CHUNK = 64


def compute_dtype(params: list[Tensor]) -> torch.dtype:
    """float64 when every parameter is float64, else float32 (low precision is widened)."""
    return torch.float64 if all(p.dtype == torch.float64 for p in params) else torch.float32


def flat_view(tensors: list[Tensor], dtype: torch.dtype) -> Tensor:
    """The tensors concatenated into one detached 1-D tensor of ``dtype``."""
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])


def add_flat_(params: list[Tensor], delta: Tensor, scales: list[float] | None = None) -> None:
    """``p += scale * piece`` for each parameter and its piece of the flat vector ``delta``."""
    offset = 0
    for i, p in enumerate(params):
        piece = delta[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        scale = 1.0 if scales is None else scales[i]
        if scale != 0.0:
            p.add_(piece.to(p.dtype), alpha=scale)


def set_flat_(params: list[Tensor], values: Tensor) -> None:
    """Copy the flat vector ``values`` into the parameters."""
    offset = 0
    for p in params:
        p.copy_(values[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def batched_vjp(
    output: Tensor, inputs: list[Tensor], cotangents: Tensor, *, retain_graph: bool = True
) -> list[Tensor | None]:
    """``cotangents @ d output / d inputs`` for a batch of cotangent rows, in one call
    vectorised by ``torch.vmap`` (``is_grads_batched``); falls back to a loop over rows where
    an operation has no batching rule. Unused inputs give ``None``."""
    try:
        return list(
            torch.autograd.grad(
                output,
                inputs,
                grad_outputs=cotangents,
                is_grads_batched=True,
                retain_graph=retain_graph,
                allow_unused=True,
            )
        )
    except RuntimeError as error:
        if "batching rule" not in str(error) and "vmap" not in str(error):
            raise
    rows = [
        torch.autograd.grad(output, inputs, grad_outputs=c, retain_graph=True, allow_unused=True)
        for c in cotangents
    ]
    return [
        None if rows[0][j] is None else torch.stack([r[j] for r in rows])
        for j in range(len(inputs))
    ]


def per_sample_jacobian(
    values: Tensor, params: list[Tensor], chunk_size: int = DEFAULT_CHUNK
) -> tuple[Tensor, list[bool]]:
    """The Jacobian ``J[i, :] = d values[i] / d params`` (rows: samples, columns: the
    parameters flattened and concatenated; zero columns for parameters ``values`` does not
    depend on) in float32, or float64 for float64 parameters, and the mask of the parameters
    ``values`` depends on.

    Rows are computed ``chunk_size`` at a time by batched vector-Jacobian products with rows of
    the identity (``torch.vmap`` over samples), so the autograd workspace holds ``chunk_size``
    gradients at once; ``J`` itself holds ``len(values) * numel`` numbers."""
    n = values.numel()
    dtype = compute_dtype(params)
    eye = torch.eye(n, dtype=values.dtype, device=values.device)
    blocks: list[Tensor] = []
    used = [False] * len(params)
    for start in range(0, n, chunk_size):
        grads = batched_vjp(values, params, eye[start : start + chunk_size])
        rows = min(chunk_size, n - start)
        columns = []
        for j, (g, p) in enumerate(zip(grads, params, strict=True)):
            if g is None:
                columns.append(torch.zeros(rows, p.numel(), dtype=dtype, device=p.device))
            else:
                used[j] = True
                columns.append(g.reshape(rows, -1).to(dtype))
        blocks.append(torch.cat(columns, dim=1))
    return torch.cat(blocks, dim=0), used


def dense_hessian(
    loss: Tensor, params: list[Tensor], chunk_size: int = DEFAULT_CHUNK
) -> tuple[Tensor, Tensor]:
    """Gradient and dense Hessian of the scalar ``loss`` over the flattened ``params`` (all of
    which it must depend on): one backward with ``create_graph``, then the Hessian's rows by
    batched Hessian-vector products, ``chunk_size`` at a time. For small models only:
    ``numel**2`` numbers."""
    dtype = compute_dtype(params)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    n = flat.numel()
    eye = torch.eye(n, dtype=flat.dtype, device=flat.device)
    rows = []
    for start in range(0, n, chunk_size):
        blocks = batched_vjp(flat, params, eye[start : start + chunk_size])
        rows.append(
            torch.cat(
                [
                    torch.zeros(min(chunk_size, n - start), p.numel(), dtype=dtype)
                    if b is None
                    else b.reshape(b.shape[0], -1).to(dtype)
                    for b, p in zip(blocks, params, strict=True)
                ],
                dim=1,
            )
        )
    hessian = torch.cat(rows, dim=0)
    return flat.detach().to(dtype), 0.5 * (hessian + hessian.T)


class PerSampleClosureOptimizer(ZooOptimizer):
    """Base of optimizers whose ``step(closure)`` takes a closure returning a 1-D tensor of
    per-sample values (``values_name`` says which) with its autograd graph, and no
    ``backward()`` call: the optimizer differentiates it itself.

    Non-finite values, Jacobians or Hessians follow ``on_nonfinite`` (see ``ZooOptimizer``):
    skip the step and count it, raise ``FloatingPointError``, or ignore."""

    abstract = True  # an engine base class, not an algorithm (see tests/test_registry.py)
    values_name: ClassVar[str] = "per-sample values"

    def _evaluate(self, closure: Callable[[], Any] | None) -> Tensor:
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step needs a closure that returns the 1-D tensor of "
                f"{self.values_name} (without calling backward)"
            )
        with torch.enable_grad():
            values = closure()
        if not isinstance(values, Tensor) or values.ndim != 1 or values.numel() == 0:
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(
                f"{type(self).__name__}: the closure must return a non-empty 1-D tensor of "
                f"{self.values_name}, got {shape}"
            )
        if values.is_complex():
            raise ValueError(f"{type(self).__name__}: {self.values_name} must be real")
        return values

    def _trainable(self) -> list[tuple[dict[str, Any], Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _skip_nonfinite(self, *tensors: Tensor) -> bool:
        """Whether to skip this step because a tensor is not finite (counting it), raising
        under ``on_nonfinite="raise"``."""
        if self.on_nonfinite == "ignore":
            return False
        if all(bool(torch.isfinite(t).all()) for t in tensors):
            return False
        if self.on_nonfinite == "raise":
            raise FloatingPointError(
                f"{type(self).__name__}: non-finite {self.values_name} or derivative; "
                "no update was applied"
            )
        self.skipped_steps = self.skipped_steps + 1
        return True


def low_precision(params: list[Tensor]) -> bool:
    """Whether any parameter is stored in a low-precision dtype."""
    return any(p.dtype in LOW_PRECISION for p in params)
