"""The one lifecycle every loss-value-only optimizer shares (nevergrad's ask/tell, in torch).

A step *asks* the algorithm for K candidate parameter values, evaluates the loss at each, and
*tells* it the K losses; the algorithm then updates its state and writes the point it currently
believes best (its *centre*: a mean, a consensus point, an elite) into the parameters. The base
class does the bookkeeping: evaluation count and an optional budget, the best loss seen,
non-finite losses (treated as worst, or the step skipped), a seeded generator saved in the
checkpoint, and the two ways of driving a step:

- ``step(closure)``: torch.optim style. Each candidate is written into the model's parameters in
  turn and ``closure()`` returns its loss (no backward is needed; the step runs under
  ``torch.no_grad``). One Python call and one host sync per candidate.
- ``step_population(loss_fn)``: ``loss_fn(params, candidates)`` gets the parameters and, for
  each, a tensor of shape ``(K, *param.shape)`` holding all K candidates, and returns the K
  losses in one call. ``vectorized_loss`` builds such a function for an ``nn.Module`` with
  ``torch.func.functional_call`` + ``vmap``, so a whole population is evaluated as one batched
  forward pass.

Algorithms fill in ``_ask`` (draw this step's candidates, return K) and ``_tell`` (update state
from the K losses and write the new centre). Population methods keep their candidates in
``self._pending`` (one ``(K, *shape)`` tensor per parameter); methods that perturb in place
(zeroth-order estimators) override ``_write_candidate``, ``_candidates`` and ``_restore``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optzoo._core.optimizer import NonfinitePolicy, ParamsT, ZooOptimizer, state_dtype
from optzoo._core.validation import Interval, check_value

PopulationLossFn = Callable[[list[Tensor], list[Tensor]], Tensor]
SEED = Interval(0.0, 2.0**63 - 1, integer=True)
COUNT = Interval(1.0, math.inf, integer=True)


def random_seeds(generator: torch.Generator, count: int) -> Tensor:
    """``count`` int64 seeds drawn from ``generator`` (non-negative, 63 bits)."""
    return torch.randint(0, 2**62, (count,), generator=generator, dtype=torch.int64)


def seeded_normal(seed: int, shapes: list[torch.Size]) -> list[Tensor]:
    """Standard normal float32 tensors of ``shapes`` drawn in order from a CPU generator seeded
    with ``seed``: the same seed always regenerates the same noise (zeroth-order perturbations,
    the GA's seed encoding)."""
    generator = torch.Generator().manual_seed(int(seed))
    return [torch.randn(shape, generator=generator, dtype=torch.float32) for shape in shapes]


class LossValueOptimizer(ZooOptimizer):
    """Base of the optimizers that need loss values only (``oracle="loss_closure"``).

    Keyword arguments shared by every subclass: ``seed`` (the generator behind every random
    draw; its state is saved by ``state_dict``), ``max_evaluations`` (once that many losses have
    been evaluated, ``step`` evaluates nothing more and returns ``None``; ``exhausted`` says
    so), ``on_nonfinite``: with ``"skip"`` (default) a NaN or infinite loss counts as the worst
    possible value (``+inf``) where the algorithm can rank it, and a step whose losses leave
    nothing to learn from (all non-finite, or any for a finite-difference estimator) changes
    no parameter or state and increments ``skipped_steps``; ``"raise"`` raises
    ``FloatingPointError`` (after restoring the parameters); ``"ignore"`` passes the losses on
    unchanged.

    Parameters with ``requires_grad=False`` are left alone (the analogue of parameters without
    a gradient). Hyperparameters named in ``shared_hyperparameters`` (population sizes, number
    of directions) describe the whole population and must agree across param groups.
    """

    abstract = True
    shared_hyperparameters: ClassVar[tuple[str, ...]] = ()
    # "worst": a non-finite candidate loss becomes +inf; "skip": any non-finite loss skips.
    nonfinite_candidates: ClassVar[str] = "worst"
    supports_low_precision: ClassVar[bool] = True

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        seed: int = 0,
        max_evaluations: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        check_value("seed", seed, SEED)
        if max_evaluations is not None:
            check_value("max_evaluations", max_evaluations, COUNT)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.max_evaluations = max_evaluations
        self.evaluations = 0
        self.best_loss = math.inf
        self._pending: list[Tensor] = []
        self._saved: list[Tensor] = []
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    # -- construction -------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            first = self.param_groups[0]
            for name in self.shared_hyperparameters:
                if group[name] != first[name]:
                    raise ValueError(
                        f"{type(self).__name__}: {name} describes the whole population and must "
                        f"be the same in every param group (got {group[name]!r} and "
                        f"{first[name]!r})"
                    )
            if not self.supports_low_precision:
                for p in group["params"]:
                    if state_dtype(p) != p.dtype:
                        raise ValueError(
                            f"{type(self).__name__} does not support {p.dtype} parameters "
                            "(its perturbations fall below their resolution); use float32"
                        )
        except ValueError:
            self.param_groups.pop()
            raise

    # -- what the algorithms see ----------------------------------------------------------------
    def active(self) -> list[tuple[dict[str, Any], Tensor]]:
        """(group, parameter) pairs that are optimized, in order."""
        return [(g, p) for g in self.param_groups for p in g["params"] if p.requires_grad]

    def active_params(self) -> list[Tensor]:
        return [p for _, p in self.active()]

    @property
    def exhausted(self) -> bool:
        """Whether ``max_evaluations`` losses have been evaluated."""
        return self.max_evaluations is not None and self.evaluations >= self.max_evaluations

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        """Fill a parameter's state before its first step (default: nothing)."""

    def _ask(self) -> int:
        raise NotImplementedError

    def _tell(self, losses: Tensor) -> None:
        raise NotImplementedError

    def _write_candidate(self, k: int) -> None:
        """Put candidate ``k`` into the parameters (default: from ``self._pending``)."""
        for p, candidates in zip(self.active_params(), self._pending, strict=True):
            p.copy_(candidates[k])

    def _candidates(self) -> list[Tensor]:
        """Every candidate, one ``(K, *shape)`` tensor per parameter in the parameters' dtype."""
        params = self.active_params()
        return [c.to(p.dtype) for p, c in zip(params, self._pending, strict=True)]

    def _save(self) -> None:
        """Remember the centre before candidates overwrite the parameters."""
        self._saved = [p.detach().clone() for p in self.active_params()]

    def _restore(self) -> None:
        """Put the centre saved by ``_save`` back."""
        for p, saved in zip(self.active_params(), self._saved, strict=True):
            p.copy_(saved)

    # -- the lifecycle --------------------------------------------------------------------------
    def _begin(self, in_place: bool) -> int | None:
        if self.exhausted:
            return None
        for group, p in self.active():
            state = self.state[p]
            if not state:
                self._init_state(group, p, state)
        if in_place:
            self._save()
        return self._ask()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Tensor | None:  # type: ignore[override]
        """Evaluate every candidate with ``closure`` (which returns the loss of the model's
        current parameters; no backward needed) and update. Returns the lowest loss among this
        step's candidates, or ``None`` once the evaluation budget is spent."""
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__} needs a closure that returns the loss: step(closure)"
            )
        count = self._begin(in_place=True)
        if count is None:
            return None
        losses = torch.empty(count, dtype=torch.float64)
        for k in range(count):
            self._write_candidate(k)
            losses[k] = float(closure())
        self._restore()
        return self._finish(losses)

    @torch.no_grad()
    def step_population(self, loss_fn: PopulationLossFn) -> Tensor | None:
        """One step with every candidate evaluated in one call: ``loss_fn(params, candidates)``
        gets the optimized parameters and one ``(K, *param.shape)`` tensor per parameter and
        returns the K losses (see ``vectorized_loss``). Same updates as ``step``, given the
        same losses."""
        self._opt_called = True  # torch's LR schedulers warn unless they saw a step
        count = self._begin(in_place=False)
        if count is None:
            return None
        losses = loss_fn(self.active_params(), self._candidates())
        losses = torch.as_tensor(losses).detach().to("cpu", torch.float64).reshape(-1)
        if losses.numel() != count:
            raise ValueError(f"loss_fn returned {losses.numel()} losses for {count} candidates")
        return self._finish(losses)

    def _finish(self, losses: Tensor) -> Tensor | None:
        self.evaluations += losses.numel()
        finite = torch.isfinite(losses)
        if self.on_nonfinite != "ignore" and not bool(finite.all()):
            if self.on_nonfinite == "raise":
                self._pending = []
                raise FloatingPointError(
                    f"{type(self).__name__}: non-finite loss; no update was applied"
                )
            if self.nonfinite_candidates == "skip" or not bool(finite.any()):
                self.skipped_steps += 1
                self._pending = []
                return None
            losses = torch.where(finite, losses, math.inf)
        self._tell(losses)
        self._pending = []
        self._saved = []
        best = losses.min()
        if bool(torch.isfinite(best)):
            self.best_loss = min(self.best_loss, float(best))
        return best

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["optzoo"].update(
            generator=self.generator.get_state(),
            evaluations=self.evaluations,
            best_loss=self.best_loss,
        )
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        extra = state_dict.get("optzoo", {})
        if "generator" in extra:
            self.generator.set_state(extra["generator"].to(torch.uint8).cpu())
        self.evaluations = int(extra.get("evaluations", 0))
        self.best_loss = float(extra.get("best_loss", math.inf))


def vectorized_loss(
    model: nn.Module,
    loss_of_params: Callable[[Mapping[str, Tensor]], Tensor],
    chunk_size: int | None = None,
) -> PopulationLossFn:
    """A ``loss_fn`` for ``step_population`` that evaluates a whole population of ``model``'s
    parameters in one vectorized call.

    ``loss_of_params(params)`` returns the scalar loss with ``model``'s parameters taken from
    the dict ``params`` (names as in ``model.named_parameters()``), e.g. built on
    ``torch.func.functional_call(model, params, inputs)``; it is mapped over the population
    with ``torch.func.vmap`` (``chunk_size`` candidates at a time, all at once if ``None``).
    """
    names = {id(p): n for n, p in model.named_parameters()}

    def evaluate(params: list[Tensor], candidates: list[Tensor]) -> Tensor:
        missing = [p for p in params if id(p) not in names]
        if missing:
            raise ValueError("vectorized_loss: the optimizer has parameters not in the model")
        keys = [names[id(p)] for p in params]

        def one(*values: Tensor) -> Tensor:
            return loss_of_params(dict(zip(keys, values, strict=True)))

        return torch.func.vmap(one, chunk_size=chunk_size)(*candidates)

    return evaluate
