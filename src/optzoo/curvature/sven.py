"""Sven: the minimum-norm update that best zeroes every per-sample residual at once, through a
truncated SVD of the residuals' Jacobian."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo._core.validation import (
    NON_NEGATIVE,
    UNIT_OPEN_RIGHT,
    Interval,
    check_hyperparameters,
)
from optzoo.curvature._closure import (
    DEFAULT_CHUNK,
    PerSampleClosureOptimizer,
    add_flat_,
    per_sample_jacobian,
)
from optzoo.registry import register

POSITIVE_INTEGER = Interval(1, math.inf, integer=True)


def truncated_pseudoinverse_solve(jacobian: Tensor, rhs: Tensor, k: int, rtol: float) -> Tensor:
    """``J_k^+ rhs``: the minimum-norm least-squares solution of ``J x = rhs`` restricted to the
    ``k`` largest singular directions of ``J`` whose singular value exceeds ``rtol`` times the
    largest one."""
    u, s, vh = torch.linalg.svd(jacobian, full_matrices=False)
    keep = min(k, s.numel())
    u, s, vh = u[:, :keep], s[:keep], vh[:keep]
    mask = s > rtol * s[0] if s.numel() else s > 0
    mask = mask & (s > 0)
    coefficients = torch.where(mask, (u.T @ rhs) / torch.where(mask, s, 1.0), 0.0)
    return vh.T @ coefficients


@register(
    family="curvature",
    paper="Sven: Singular Value Descent as a Computationally Efficient Natural Gradient Method",
    year=2026,
    oracle="per_sample_residuals",
    state_bytes_per_param=0,
    needs_closure=True,
    reference_problem="mlp",
    convergence=(20, 0.1),
    test_hyperparameters={"lr": 0.5, "k": 128},
)
class Sven(PerSampleClosureOptimizer):
    """Sven (Singular Value dEsceNt) from "Sven: Singular Value Descent as a Computationally
    Efficient Natural Gradient Method" (Bright-Thonney, Harvey, Lukas and Thaler, 2026).

    Each data point's residual ``r_i(theta)`` is a condition to satisfy; rather than descending
    the scalar loss ``sum r_i**2``, Sven asks for the minimum-norm parameter change that zeroes
    the linearised residuals, ``J delta = -r`` with ``J[i] = d r_i / d theta``, solved through the
    Moore-Penrose pseudoinverse truncated to the ``k`` largest singular directions of ``J``
    (and to singular values above ``rtol * s_max``)::

        J = U S V^T                      (per-sample Jacobian, rows = samples)
        delta = V_k S_k^-1 U_k^T r       (J_k^+ r)
        theta = theta - lr * delta

    It is a natural-gradient method generalised to the over-parametrised regime (with all
    directions kept and fewer parameters than samples it is Gauss-Newton / natural gradient).

    ``step(closure)``: the closure returns the 1-D tensor of per-sample residuals (graph
    attached, no ``backward()``); ``step`` returns those residuals, detached, evaluated before
    the update. The Jacobian is computed with batched vector-Jacobian products
    (``torch.vmap`` over rows of the identity, i.e. over samples), ``chunk_size`` samples per
    call.

    Memory, the paper's named limit: ``J`` holds ``n * P`` numbers (n residuals, P parameters;
    float32), plus ``chunk_size * P`` for the backward workspace and the SVD's ``n * P`` factor.
    Mitigation: ``chunk_size`` bounds the autograd workspace, and ``microbatch_size`` splits
    the n residuals into micro-batches whose truncated-SVD steps are computed one after the
    other and averaged, so peak memory is about ``2 * microbatch_size * P`` numbers instead of
    ``2 * n * P`` (an approximation of the joint step: each micro-batch's minimum-norm step
    ignores the others' conditions). The optimizer keeps no state (0 bytes per parameter).

    Hyperparameters: ``lr`` (per param group; 1.0 is the full linearised step), ``k`` (number
    of singular directions kept), ``rtol`` (relative singular-value cutoff). The paper's
    abstract fixes none of their values; the defaults here (``lr=0.5``, ``k=32``,
    ``rtol=1e-3``) are ours, chosen on the regression workloads (``benchmarks/sven.py``).
    """

    values_name = "per-sample residuals"
    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "k": POSITIVE_INTEGER,
        "rtol": UNIT_OPEN_RIGHT,
        "chunk_size": POSITIVE_INTEGER,
        "microbatch_size": POSITIVE_INTEGER,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.5,
        k: int = 32,
        rtol: float = 1e-3,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        microbatch_size: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        options: dict[str, Any] = {"k": k, "rtol": rtol, "chunk_size": chunk_size}
        if microbatch_size is not None:
            options["microbatch_size"] = microbatch_size
        check_hyperparameters(self.hyperparameter_ranges, options)
        self.k, self.rtol, self.chunk_size = int(k), float(rtol), int(chunk_size)
        self.microbatch_size = None if microbatch_size is None else int(microbatch_size)
        super().__init__(params, {"lr": lr}, on_nonfinite=on_nonfinite)

    def direction(self, residuals: Tensor, params: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``(J_k^+ r, J)`` over the flattened ``params`` (the average over micro-batches when
        ``microbatch_size`` is set; ``J`` is then the last micro-batch's Jacobian)."""
        n = residuals.numel()
        size = n if self.microbatch_size is None else min(self.microbatch_size, n)
        total: Tensor | None = None
        count = 0
        jacobian = residuals.new_zeros(0)
        for start in range(0, n, size):
            part = residuals[start : start + size]
            jacobian, _ = per_sample_jacobian(part, params, self.chunk_size)
            target = part.detach().to(jacobian.dtype)
            if not bool(torch.isfinite(jacobian).all()):
                return jacobian.new_full((jacobian.shape[1],), math.nan), jacobian
            step = truncated_pseudoinverse_solve(jacobian, target, self.k, self.rtol)
            total = step if total is None else total + step
            count += 1
        assert total is not None
        return total / count, jacobian

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Tensor:  # type: ignore[override]
        residuals = self._evaluate(closure)
        trainable = self._trainable()
        params = [p for _, p in trainable]
        if self._skip_nonfinite(residuals.detach()):
            return residuals.detach()
        with torch.enable_grad():
            delta, _ = self.direction(residuals, params)
        if self._skip_nonfinite(delta):
            return residuals.detach()
        add_flat_(params, delta, [-float(group["lr"]) for group, _ in trainable])
        return residuals.detach()
