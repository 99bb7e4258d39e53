"""Gradient-regularized Newton method with approximate Hessians (exact, empirical Fisher,
Gauss-Newton) and the adaptive search on the gradient-normalized smoothness constant."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo._core.validation import POSITIVE, Interval, check_choice, check_hyperparameters
from optzoo.curvature._closure import (
    DEFAULT_CHUNK,
    PerSampleClosureOptimizer,
    compute_dtype,
    dense_hessian,
    flat_view,
    per_sample_jacobian,
    set_flat_,
)
from optzoo.registry import register

HessianKind = Literal["exact", "fisher", "gauss_newton"]
HESSIANS: tuple[str, ...] = ("exact", "fisher", "gauss_newton")
# Safeguard of the authors' code: lambda = |g| / (gamma + EPS).
EPS = 1e-8


def approximate_hessian(
    losses: Tensor, params: list[Tensor], kind: str, chunk_size: int = DEFAULT_CHUNK
) -> tuple[Tensor, Tensor]:
    """Gradient and Hessian approximation of ``f = mean(losses)`` over the flattened params.

    - ``"exact"``: the Hessian of ``f`` (double backward);
    - ``"fisher"``: the empirical Fisher ``(1/n) sum_i g_i g_i^T`` with ``g_i = grad l_i``;
    - ``"gauss_newton"``: the Gauss-Newton matrix of ``l_i = (sqrt l_i)^2``, that is
      ``(1/n) sum_i g_i g_i^T / (2 l_i)`` (samples with ``l_i = 0`` contribute nothing): for a
      squared residual ``l_i = r_i^2`` it is the classical ``(2/n) J_r^T J_r``.
    """
    if kind == "exact":
        return dense_hessian(losses.mean(), params, chunk_size)
    jacobian, _ = per_sample_jacobian(losses, params, chunk_size)
    n = losses.numel()
    gradient = jacobian.mean(dim=0)
    if kind == "fisher":
        return gradient, jacobian.T @ jacobian / n
    values = losses.detach().to(jacobian.dtype)
    weights = torch.where(values > 0, 0.5 / values.clamp_min(torch.finfo(values.dtype).tiny), 0.0)
    return gradient, (jacobian.T * weights) @ jacobian / n


def regularized_newton_step(hessian: Tensor, gradient: Tensor, regularization: float) -> Tensor:
    """``-(H + lambda I)^{-1} g`` by a Cholesky solve (least squares if that fails)."""
    system = hessian + regularization * torch.eye(
        hessian.shape[0], dtype=hessian.dtype, device=hessian.device
    )
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        return -torch.cholesky_solve(gradient.unsqueeze(1), factor).squeeze(1)
    return -torch.linalg.lstsq(system, gradient.unsqueeze(1)).solution.squeeze(1)


@register(
    family="curvature",
    paper="Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
    year=2025,
    oracle="per_sample_losses",
    state_bytes_per_param=0,
    needs_closure=True,
    reference_problem="logistic",
    convergence=(10, 0.25),
    test_hyperparameters={},
    invalid_hyperparameters=(({"hessian": "diagonal"}, "hessian"),),
)
class RegularizedNewton(PerSampleClosureOptimizer):
    """Gradient-regularized Newton method with approximate Hessians (Algorithm 1 of
    "Gradient-Normalized Smoothness for Optimization with Approximate Hessians", Semenov, Jaggi
    and Doikov, 2025).

    Newton's step is regularized by a multiple of the identity proportional to the current
    gradient norm; the constant ``gamma`` (the gradient-normalized smoothness: the radius,
    relative to the gradient norm, in which the Hessian approximation linearises the gradient
    well) is found by an adaptive search, so no smoothness constant or step size is tuned::

        lambda = |g(x)| / gamma
        x+     = x - (H(x) + lambda I)^{-1} g(x)           H: exact or approximate Hessian
        accept if f(x) - f(x+) >= |g(x+)|^2 / (8 lambda), then gamma = 2 gamma;
        else gamma = gamma / 2 and recompute x+ (at most ``max_search`` times).

    ``step(closure)``: the closure returns the 1-D tensor of per-sample losses ``l_i`` (graph
    attached, no ``backward()``); the objective is their mean. ``step`` re-evaluates the closure
    at each trial point (one forward and backward each), so the closure must be deterministic
    within a step (full batch, as in the paper). It returns the objective before the update.
    ``hessian`` picks ``H``: ``"exact"`` (dense, by double backward), ``"fisher"`` (empirical
    Fisher ``mean_i g_i g_i^T``) or ``"gauss_newton"`` (``mean_i g_i g_i^T / (2 l_i)``, the
    Gauss-Newton matrix of the square-root form of each loss, exact Gauss-Newton for squared
    residuals). ``H`` is a dense ``P x P`` matrix over all parameters: for small models and
    convex problems (logistic, softmax regression), hence a single param group.

    Defaults from the paper and the authors' code: ``gamma_0 = 1``, doubling / halving,
    ``gamma_min = 1e-9``, at most 40 search iterations; the paper's identity metric
    (``B = I``).
    """

    values_name = "per-sample losses"
    hyperparameter_ranges = {
        "gamma_0": POSITIVE,
        "gamma_min": POSITIVE,
        "max_search": Interval(1, math.inf, integer=True),
        "chunk_size": Interval(1, math.inf, integer=True),
    }

    def __init__(
        self,
        params: ParamsT,
        hessian: HessianKind = "exact",
        gamma_0: float = 1.0,
        gamma_min: float = 1e-9,
        max_search: int = 40,
        adaptive_search: bool = True,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        check_choice("hessian", hessian, HESSIANS)
        check_hyperparameters(self.hyperparameter_ranges, {"chunk_size": chunk_size})
        self.chunk_size = int(chunk_size)
        defaults = {
            "hessian": hessian,
            "gamma_0": gamma_0,
            "gamma_min": gamma_min,
            "max_search": max_search,
            "adaptive_search": bool(adaptive_search),
        }
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            check_choice("hessian", self.param_groups[-1]["hessian"], HESSIANS)
            if len(self.param_groups) > 1:
                raise ValueError(
                    f"{type(self).__name__} does not support several param groups (its Hessian "
                    "couples all parameters); pass one list of parameters"
                )
        except ValueError:
            self.param_groups.pop()
            raise

    @property
    def gamma(self) -> float:
        """The current estimate of the gradient-normalized smoothness constant."""
        group = self.param_groups[0]
        holder = self.state[group["params"][0]]
        return float(holder["gamma"]) if "gamma" in holder else float(group["gamma_0"])

    def _objective_and_gradient(self, closure: Callable[[], Any], params: list[Tensor]):
        losses = self._evaluate(closure)
        with torch.enable_grad():
            objective = losses.mean()
            grads = torch.autograd.grad(objective, params, allow_unused=True)
        dtype = compute_dtype(params)
        flat = torch.cat(
            [
                torch.zeros(p.numel(), dtype=dtype) if g is None else g.reshape(-1).to(dtype)
                for g, p in zip(grads, params, strict=True)
            ]
        )
        return objective.detach().to(dtype), flat

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        losses = self._evaluate(closure)
        objective = losses.detach().mean()
        params = [p for p in group["params"] if p.requires_grad]
        with torch.enable_grad():
            used = [
                g is not None
                for g in torch.autograd.grad(
                    losses.sum(), params, retain_graph=True, allow_unused=True
                )
            ]
            params = [p for p, u in zip(params, used, strict=True) if u]
            if not params:
                return objective
            gradient, hessian = approximate_hessian(
                losses, params, group["hessian"], self.chunk_size
            )
        if self._skip_nonfinite(objective, gradient, hessian):
            return objective
        holder = self.state[group["params"][0]]
        dtype = gradient.dtype
        gamma = float(holder["gamma"]) if "gamma" in holder else float(group["gamma_0"])
        grad_norm = float(gradient.norm())
        if grad_norm == 0.0:
            return objective
        start = flat_view(params, dtype)
        f_start = float(objective)
        accepted = False
        for _ in range(int(group["max_search"])):
            regularization = grad_norm / (gamma + EPS)
            delta = regularized_newton_step(hessian, gradient, regularization)
            set_flat_(params, start + delta)
            if not group["adaptive_search"]:
                accepted = True
                break
            f_new, g_new = self._objective_and_gradient(closure, params)
            decrease = f_start - float(f_new)
            if decrease >= float(g_new.square().sum()) / (8 * regularization):
                gamma = max(2.0 * gamma, float(group["gamma_min"]))
                accepted = True
                break
            gamma *= 0.5
        if not accepted and not bool(torch.isfinite(flat_view(params, dtype)).all()):
            set_flat_(params, start)  # the authors keep the last trial; never a non-finite one
        holder["gamma"] = torch.tensor(gamma, dtype=torch.float64)
        holder["step"] = holder.get("step", torch.tensor(0.0)) + 1
        return objective
