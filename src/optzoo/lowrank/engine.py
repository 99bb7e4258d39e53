"""The low-rank engine: projector x inner rule x residual rule x optional preconditioner.

One optimizer class, ``LowRankOptimizer``, runs every member of the family; the named
optimizers (``GaLore``, ``Fira``, ``FRUGAL``, ``NaturalGaLore``, ``DCTGaLore``) are thin
subclasses that fix the paper's defaults. A user composes other combinations directly::

    LowRankOptimizer(model.parameters(), projector="dct", residual="fira",
                     inner=Lion, betas=(0.9, 0.99), rank=64)

For each matrix parameter of a group with ``project=True`` whose short side is at least
``min_dim`` and larger than the rank (``round(density * short)`` where ``density`` is set),
with ``M`` the gradient oriented short side first (left projection for wide matrices, right
projection for tall ones, as GaLore chooses)::

    every update_gap steps:  refresh the subspace from M (reset the moments if reset_on_refresh)
    R = down(M);  R' = F^-1 R (Natural GaLore only);  N = inner(R')
    update = scale * up(N) + residual(M - up(R), R, N)
    p = p - lr * (update + weight_decay * p)

Every other parameter (biases, norms, embeddings, small matrices, groups with
``project=False``) takes the inner rule at full rank: ``p = p - lr * (inner(g) + wd * p)``.
The inner rule is Adam (``ScaleByAdam``) unless ``inner`` names another: a transform from
``optzoo._core.rules``, a ``Chain``, or a registered ``RuleOptimizer`` class (its chain without
weight decay); its hyperparameters (``betas``, ``eps``, ...) are read from the group.

State per projected tensor: the inner rule's buffers in the subspace shape, a float32 ``step``
(the inner rule's step count, reset with the moments), ``projector_step`` (updates taken, a
plain int), the projector's subspace (a basis, indices or a flag), and ``residual_norm``
(Fira) or ``fisher_history`` / ``fisher_count`` (Natural GaLore). Updates run eagerly, per
tensor, in float32 for low-precision parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from optzoo._core.matrices import as_matrix, is_matrix
from optzoo._core.optimizer import NonfinitePolicy, ParamsT, ZooOptimizer, state_dtype
from optzoo._core.rules import LOW_PRECISION, AddDecayedWeights, Chain, ScaleByAdam, widened
from optzoo._core.validation import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    UNIT_OPEN_RIGHT,
    Interval,
    check_choice,
    check_value,
)
from optzoo.lowrank.projectors import PROJECTORS, RefreshContext, active_blocks, up_into
from optzoo.lowrank.residuals import RESIDUALS, natural_gradient

POSITIVE_INTEGER = Interval(1.0, math.inf, integer=True)
PRECONDITIONERS = (None, "natural")


def inner_transforms(inner: Any) -> tuple[Any, ...]:
    """The transforms of an inner rule given as a transform, a ``Chain`` or a ``RuleOptimizer``
    class whose rule is a ``Chain``; weight decay is left out (the engine applies it to the
    full parameter)."""
    rule = getattr(inner, "rule", inner)
    transforms = rule.transforms if isinstance(rule, Chain) else (rule,)
    kept = tuple(t for t in transforms if not isinstance(t, AddDecayedWeights))
    if not kept or not all(callable(t) and hasattr(t, "buffers") for t in kept):
        raise ValueError(
            f"invalid inner={inner!r}: expected a transform of optzoo._core.rules, a Chain, or "
            "a RuleOptimizer class whose rule is a Chain"
        )
    return kept


def subspace_rank(short: int, group: dict[str, Any]) -> int:
    """Rows of the subspace for a matrix whose short side is ``short``."""
    density = group.get("density")
    if density is not None:
        return round(density * short)
    return min(int(group["rank"]), short)


def is_projected(p: Tensor, group: dict[str, Any]) -> bool:
    """Whether ``p`` is updated in a subspace (else at full rank by the inner rule)."""
    if not group.get("project", True) or not is_matrix(p, int(group["min_dim"])):
        return False
    if group["projector"] == "blockwise":
        return True
    short = min(as_matrix(p).shape)
    return subspace_rank(short, group) < short


def oriented(matrix: Tensor) -> Tensor:
    """The matrix with its short side first (a view)."""
    return matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T


class LowRankOptimizer(ZooOptimizer):
    """The low-rank engine (see the module docstring); named optimizers subclass it."""

    abstract = True
    hyperparameter_ranges: ClassVar[dict[str, Interval]] = {
        "lr": NON_NEGATIVE,
        "betas": UNIT_OPEN_RIGHT,
        "eps": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "rank": POSITIVE_INTEGER,
        "update_gap": POSITIVE_INTEGER,
        "scale": NON_NEGATIVE,
        "min_dim": POSITIVE_INTEGER,
        "limiter_gamma": Interval(1.0, math.inf),
        "history": POSITIVE_INTEGER,
        "damping": POSITIVE,
        "residual_scale": NON_NEGATIVE,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        rank: int = 128,
        update_gap: int = 200,
        scale: float = 0.25,
        min_dim: int = 2,
        projector: str = "svd",
        residual: str = "drop",
        preconditioner: str | None = None,
        reset_on_refresh: bool = False,
        *,
        inner: Any = None,
        density: float | None = None,
        residual_scale: float = 1.0,
        limiter_gamma: float = 1.01,
        history: int = 20,
        damping: float = 1e-3,
        seed: int = 0,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        self.inner = inner_transforms(ScaleByAdam() if inner is None else inner)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "rank": rank,
            "update_gap": update_gap,
            "scale": scale,
            "min_dim": min_dim,
            "projector": projector,
            "residual": residual,
            "preconditioner": preconditioner,
            "reset_on_refresh": reset_on_refresh,
            "seed": seed,
            "project": True,
            "density": density,
            "residual_scale": residual_scale,
            "limiter_gamma": limiter_gamma,
            "history": history,
            "damping": damping,
        }
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            check_choice("projector", group["projector"], tuple(PROJECTORS))
            check_choice("residual", group["residual"], tuple(RESIDUALS))
            check_choice("preconditioner", group["preconditioner"], PRECONDITIONERS)
            if group["density"] is not None:
                check_value("density", group["density"], UNIT)
            elif group["projector"] == "blockwise":
                raise ValueError("invalid density=None: the blockwise projector needs a density")
        except ValueError:
            self.param_groups.pop()
            raise

    # -- the step -----------------------------------------------------------------------------
    def _update_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]):
        hp = {k: v for k, v in group.items() if k != "params"}
        projected = [p for p in group["params"] if is_projected(p, group)]
        position = {id(p): i for i, p in enumerate(projected)}
        for p, g in zip(params, grads, strict=True):
            work = p.float() if p.dtype in LOW_PRECISION else p
            if id(p) in position:
                context = (group["seed"], position[id(p)], len(projected))
                update = self._low_rank_update(work, widened(g), self.state[p], hp, context)
            else:
                update = self._full_rank_update(work, widened(g), self.state[p], hp)
            if hp["weight_decay"]:  # decoupled: p (1 - lr wd) - lr update, in place
                work.mul_(1 - hp["lr"] * hp["weight_decay"])
            work.add_(update, alpha=-hp["lr"])
            if work is not p:
                p.copy_(work)

    def _inner(self, r: Tensor, state: dict[str, Any], hp: dict[str, Any]) -> Tensor:
        """The inner rule on ``r`` (its buffers in ``state``, created at ``r``'s shape)."""
        for transform in self.inner:
            for name in transform.buffers:
                if name not in state or state[name].shape != r.shape:
                    state[name] = torch.zeros_like(r)
                    state["step"].zero_()
        state["step"] += 1
        view = dict(state)
        for transform in self.inner:
            if hasattr(transform, "scalars"):
                view.update(transform.scalars(state, hp))
        u = r
        for transform in self.inner:
            u = transform(u, r, r, view, hp)
        return u

    def _full_rank_update(self, work, g, state, hp) -> Tensor:
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=work.device)
        return self._inner(g.to(state_dtype(work)), state, hp)

    def _low_rank_update(self, work, g, state, hp, context) -> Tensor:
        projector = PROJECTORS[hp["projector"]]
        m = oriented(as_matrix(g.to(state_dtype(work))))
        if "projector_step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=work.device)
            state["projector_step"] = 0
            if hp["preconditioner"] == "natural":
                state["fisher_count"] = 0
        k = state["projector_step"]
        if k % hp["update_gap"] == 0:
            seed, index, count = context
            ctx = RefreshContext(seed, index, count, k // hp["update_gap"], hp.get("density"))
            projector.refresh(m, state, subspace_rank(m.shape[0], hp), ctx)
            if hp["reset_on_refresh"]:
                for transform in self.inner:
                    for name in transform.buffers:
                        state.pop(name, None)
        r = projector.down(m, state)
        preconditioned = r
        if hp["preconditioner"] == "natural" and r.numel():
            history = state.get("fisher_history")
            if history is None or history.shape != (hp["history"], r.numel()):
                state["fisher_history"] = r.new_zeros(hp["history"], r.numel())
                state["fisher_count"] = 0
            preconditioned = natural_gradient(r, state, hp)
        n = self._inner(preconditioned, state, hp)
        update = up_into(projector, n * hp["scale"], state, m)  # scale the small factor
        residual = RESIDUALS[hp["residual"]]
        if residual is not RESIDUALS["drop"]:
            e = m - up_into(projector, r, state, m)
            update = update + residual(e, r, n, state, hp, k == 0)
        state["projector_step"] = k + 1
        rows, cols = as_matrix(work).shape
        return (update if rows <= cols else update.T).reshape(work.shape)


# --------------------------------------------------------------------------------------------
# Expected state size (the registry's state_bytes_per_param)
# --------------------------------------------------------------------------------------------


def expected_state_bytes(
    params: Sequence[Tensor], inner_buffers: int = 2, **hyperparameters: Any
) -> float:
    """Bytes of optimizer state per parameter element after one step, for float32 parameters
    in one param group with ``hyperparameters`` (0-d counters left out): what
    ``LowRankOptimizer`` allocates, computed from shapes and rank alone."""
    group = {
        "rank": 128,
        "min_dim": 2,
        "projector": "svd",
        "residual": "drop",
        "preconditioner": None,
        "history": 20,
        "seed": 0,
        **hyperparameters,
    }
    params = list(params)
    projected = [p for p in params if is_projected(p, group)]
    position = {id(p): i for i, p in enumerate(projected)}
    total = 0
    for p in params:
        if id(p) not in position:
            total += 4 * inner_buffers * p.numel()
            continue
        short, long = sorted(as_matrix(p).shape)
        if group["projector"] == "blockwise":
            active = active_blocks(group["seed"], 0, len(projected), group["density"])
            rows = short if position[id(p)] in active else 0
        else:
            rows = subspace_rank(short, group)
        index = position[id(p)]
        ctx = RefreshContext(group["seed"], index, len(projected), 0, group.get("density"))
        total += PROJECTORS[group["projector"]].state_bytes(short, long, rows, ctx)
        total += 4 * inner_buffers * rows * long
        if group["preconditioner"] == "natural" and rows:
            total += 4 * group["history"] * rows * long
    return total / sum(p.numel() for p in params)
