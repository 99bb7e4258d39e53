"""Zeroth-order gradient estimation from loss values, feeding any first-order optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, check_choice
from optzoo.gradient_free.base import COUNT, LossValueOptimizer, random_seeds, seeded_normal
from optzoo.registry import register

Distribution = Literal["gaussian", "sphere"]
Difference = Literal["central", "forward"]
Shaping = Literal["none", "centered_rank"]
InnerT = str | type | Callable[..., torch.optim.Optimizer]


def build_inner(inner: InnerT, groups: list[dict[str, Any]], **hyperparameters: Any):
    """The first-order optimizer that consumes the estimated gradient: an optzoo algorithm by
    registered name (``"AdamW"``), a ``torch.optim`` class by name (``"SGD"``, ``"Adam"``), or
    any optimizer class or factory called as ``inner(groups, **hyperparameters)``."""
    if isinstance(inner, str):
        from optzoo.registry import REGISTRY

        registered = {n.lower(): s.cls for n, s in REGISTRY.items()}
        if inner.lower() in registered:
            return registered[inner.lower()](groups, **hyperparameters)
        cls = getattr(torch.optim, inner, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ValueError(
                f"invalid inner={inner!r}: expected a registered optzoo algorithm, a "
                "torch.optim optimizer name, or an optimizer class"
            )
        return cls(groups, **hyperparameters)
    return inner(groups, **hyperparameters)


def centered_ranks(losses: Tensor) -> Tensor:
    """Ranks of ``losses`` mapped linearly onto [-0.5, 0.5] (lowest loss -> -0.5); ties get
    distinct ranks in index order. With one value, 0."""
    n = losses.numel()
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[torch.sort(losses, stable=True).indices] = torch.arange(n, dtype=torch.float64)
    return ranks / max(n - 1, 1) - 0.5


@register(
    family="gradient_free",
    paper="A Unified Perspective on Optimization in Machine Learning and Neuroscience: From "
    "Gradient Descent to Neural Adaptation",
    year=2025,
    oracle="loss_closure",
    state_bytes_per_param=0,  # the default inner optimizer, plain SGD, keeps no state
    needs_closure=True,
    supports_bf16=False,
    reference_problem="quadratic",
    convergence=(150, 0.1),
    test_hyperparameters={"lr": 0.3, "num_directions": 8},
)
class ZerothOrder(LossValueOptimizer):
    """Zeroth-order (ZO) optimization as surveyed in "A Unified Perspective on Optimization in
    Machine Learning and Neuroscience: From Gradient Descent to Neural Adaptation" (2025): a
    randomized finite-difference estimate of the gradient from loss values only, handed to
    any first-order optimizer (``inner``: SGD gives ZO-SGD, ``"AdamW"`` ZO-AdamW, ...).

    With q random directions u_j and smoothing radius mu (``perturbation_scale``)::

        central:  c_j = (f(x + mu u_j) - f(x - mu u_j)) / (2 mu)      (2q evaluations)
        forward:  c_j = (f(x + mu u_j) - f(x)) / mu                    (q + 1 evaluations)
        g = (s / q) sum_j c_j u_j,  u_j ~ N(0, I) (s = 1) or uniform on the unit sphere (s = d)

    then ``p.grad = g`` and ``inner.step()``. ``shaping="centered_rank"`` replaces each loss by
    its centred rank among the step's losses before differencing (the fitness shaping of
    evolution strategies; see ``EvolutionStrategy``). The perturbation is applied in place and
    regenerated from a per-direction seed (as MeZO does), so besides the inner optimizer's
    state and one gradient buffer no copy of the parameters is made; undoing a perturbation
    subtracts it again, which can leave a parameter one rounding step from where it started
    (float32 only: bfloat16 parameters are refused, their resolution swallows mu).

    Defaults (not fixed by the review, which surveys the family): mu 1e-3, one direction,
    Gaussian directions, central differences, inner SGD with lr 1e-3. Param groups share
    ``inner``'s param groups (so ``lr`` and LR schedulers act on the inner optimizer); mu may
    differ per group. A non-finite loss skips the step (a difference of it means nothing),
    except with rank shaping, where it ranks worst.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "perturbation_scale": POSITIVE,
        "num_directions": COUNT,
    }
    shared_hyperparameters = ("num_directions", "distribution", "difference", "shaping")
    supports_low_precision = False

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        perturbation_scale: float = 1e-3,
        num_directions: int = 1,
        distribution: Distribution = "gaussian",
        difference: Difference = "central",
        shaping: Shaping = "none",
        inner: InnerT = "SGD",
        inner_hyperparameters: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        max_evaluations: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        check_choice("distribution", distribution, ("gaussian", "sphere"))
        check_choice("difference", difference, ("central", "forward"))
        check_choice("shaping", shaping, ("none", "centered_rank"))
        defaults = {
            "lr": lr,
            "perturbation_scale": perturbation_scale,
            "num_directions": num_directions,
            "distribution": distribution,
            "difference": difference,
            "shaping": shaping,
        }
        self.inner: torch.optim.Optimizer | None = None
        self.nonfinite_candidates = "worst" if shaping == "centered_rank" else "skip"
        super().__init__(
            params, defaults, seed=seed, max_evaluations=max_evaluations, on_nonfinite=on_nonfinite
        )
        groups = [{"params": g["params"], "lr": g["lr"]} for g in self.param_groups]
        self.inner = build_inner(inner, groups, lr=lr, **dict(inner_hyperparameters or {}))
        for ours, theirs in zip(self.param_groups, self.inner.param_groups, strict=True):
            for key, value in ours.items():
                theirs.setdefault(key, value)
        self._share_with_inner()
        self._seeds = torch.empty(0, dtype=torch.int64)
        self._norms: list[float] = []
        self._applied: tuple[int, float] | None = None

    def _share_with_inner(self) -> None:
        """One set of param groups and state: ours are the inner optimizer's."""
        assert self.inner is not None
        self.param_groups = self.inner.param_groups
        self.state = self.inner.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if self.inner is not None:
            group = self.param_groups[-1]
            for key, value in self.inner.defaults.items():
                group.setdefault(key, value)

    # -- directions -----------------------------------------------------------------------------
    def _directions(self, j: int) -> list[Tensor]:
        """u_j for every active parameter (unit norm overall for the sphere distribution)."""
        params = self.active_params()
        noise = seeded_normal(int(self._seeds[j]), [p.shape for p in params])
        scale = 1.0 / self._norms[j] if self._norms else 1.0
        return [(z * scale).to(p.device, p.dtype) for z, p in zip(noise, params, strict=True)]

    def _offset(self, k: int) -> tuple[int, float] | None:
        """(direction, sign) of candidate ``k``; ``None`` for the unperturbed point."""
        if self.param_groups[0]["difference"] == "forward":
            return None if k == 0 else (k - 1, 1.0)
        return (k // 2, 1.0 if k % 2 == 0 else -1.0)

    def _shift(self, offset: tuple[int, float] | None, sign: float) -> None:
        if offset is None:
            return
        j, direction = offset
        for (group, p), u in zip(self.active(), self._directions(j), strict=True):
            p.add_(u, alpha=sign * direction * group["perturbation_scale"])

    # -- ask / tell -----------------------------------------------------------------------------
    def _save(self) -> None:  # in place: nothing to copy
        self._applied = None

    def _restore(self) -> None:
        self._shift(self._applied, -1.0)
        self._applied = None

    def _write_candidate(self, k: int) -> None:
        self._shift(self._applied, -1.0)
        self._applied = self._offset(k)
        self._shift(self._applied, 1.0)

    def _candidates(self) -> list[Tensor]:
        count = self._count()
        pairs = self.active()
        out = [p.detach().unsqueeze(0).repeat(count, *([1] * p.ndim)) for _, p in pairs]
        for k in range(count):
            offset = self._offset(k)
            if offset is None:
                continue
            j, direction = offset
            for (group, _), c, u in zip(pairs, out, self._directions(j), strict=True):
                c[k].add_(u, alpha=direction * group["perturbation_scale"])
        return out

    def _count(self) -> int:
        q = self.param_groups[0]["num_directions"]
        return q + 1 if self.param_groups[0]["difference"] == "forward" else 2 * q

    def _ask(self) -> int:
        first = self.param_groups[0]
        self._seeds = random_seeds(self.generator, first["num_directions"])
        self._norms = []
        if first["distribution"] == "sphere":
            shapes = [p.shape for p in self.active_params()]
            for seed in self._seeds.tolist():
                noise = seeded_normal(seed, shapes)
                self._norms.append(math.sqrt(sum(float(z.double().square().sum()) for z in noise)))
        return self._count()

    def _tell(self, losses: Tensor) -> None:
        first = self.param_groups[0]
        q = first["num_directions"]
        if first["shaping"] == "centered_rank":
            losses = centered_ranks(losses)
        if first["difference"] == "forward":
            differences = losses[1:] - losses[0]
        else:
            differences = (losses[0::2] - losses[1::2]) / 2
        pairs = self.active()
        dimension = sum(p.numel() for _, p in pairs) if first["distribution"] == "sphere" else 1
        grads = [torch.zeros_like(p) for _, p in pairs]
        for j in range(q):
            coefficient = float(differences[j]) * dimension / q
            for (group, _), g, u in zip(pairs, grads, self._directions(j), strict=True):
                g.add_(u, alpha=coefficient / group["perturbation_scale"])
        for (_, p), g in zip(pairs, grads, strict=True):
            p.grad = g
        assert self.inner is not None
        self.inner.step()
        for _, p in pairs:
            p.grad = None

    # -- checkpoints ----------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._share_with_inner_after_load()

    def _share_with_inner_after_load(self) -> None:
        assert self.inner is not None
        self.inner.param_groups = self.param_groups
        self.inner.state = self.state
