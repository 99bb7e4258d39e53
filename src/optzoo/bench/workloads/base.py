"""What a benchmark workload is, and the helpers every workload here shares.

A ``Workload`` is a recipe: ``build(seed)`` returns a ``Task`` (model, data and evaluation) that
is entirely determined by the seed, on the CPU in float32. The same seed gives every algorithm
the same initial parameters and the same batch order (paired seeds); the data set itself is
fixed per workload (generated from a constant data seed), so only initialisation and batch
order vary with the seed and targets stay comparable across seeds.

The runner uses a task like this::

    task = workload.build(seed)
    for step in range(max_steps):
        loss = task.loss(task.batch(step))  # a scalar tensor; backward() where needed
        ...
        metric = task.evaluate()            # on held-out data, lower is better
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from optzoo.registry import ORACLES

SUITES = ("quick", "full")


@runtime_checkable
class Task(Protocol):
    """One seeded instance of a workload.

    Required: ``model`` (an ``nn.Module`` whose parameters the algorithm updates),
    ``batch(step)`` (the training batch of step ``step``, a pure function of the seed and the
    step), ``loss(batch)`` (the scalar training loss of ``model`` on ``batch``) and
    ``evaluate()`` (the workload's metric on held-out data, computed without gradients).

    Optional: ``residuals(batch)`` (a 1-D tensor of per-sample residuals with
    ``loss(batch) == residuals(batch).square().mean()``; present exactly when the workload
    offers the ``"per_sample_residuals"`` oracle), ``per_sample_losses(batch)`` (a 1-D tensor
    whose mean is ``loss(batch)``; for the ``"per_sample_losses"`` oracle) and
    ``functional_loss(params, batch)`` (the loss with the parameters taken from the dict
    ``params`` instead of ``model``, built on ``torch.func.functional_call`` so that
    ``torch.func.vmap`` can evaluate a population).
    """

    model: nn.Module

    def batch(self, step: int) -> Any: ...

    def loss(self, batch: Any) -> Tensor: ...

    def evaluate(self) -> float: ...


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: how to build it from a seed, and how to run and judge it.

    ``oracles`` lists the algorithm oracles (``optzoo.registry.ORACLES``) the workload can serve;
    ``metric`` names what ``Task.evaluate`` returns (lower is better); ``max_steps`` and
    ``time_budget_s`` are the default budget of one trial and ``eval_every`` its evaluation
    period in steps; ``suite`` says which suites (``"quick"``, ``"full"``) include it.
    ``version`` changes whenever the workload changes in a way that moves its metric, so a
    frozen target is only used for the version it was set on. ``data`` is the workload's
    cached data loader (``None`` when it has no data set): the runner calls it once in its fork
    server, so trials (forks of it) do not each regenerate the data.
    """

    name: str
    description: str
    build: Callable[[int], Task]
    oracles: frozenset[str]
    metric: str
    max_steps: int
    time_budget_s: float
    eval_every: int
    suite: frozenset[str] = frozenset({"full"})
    version: int = 1
    data: Callable[[], object] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.oracles) - set(ORACLES)
        if not self.oracles or unknown:
            raise ValueError(
                f"workload {self.name!r}: oracles must be a non-empty subset of {ORACLES}, "
                f"got unknown {sorted(unknown)}"
            )
        if not self.suite or set(self.suite) - set(SUITES):
            raise ValueError(f"workload {self.name!r}: suite must be a subset of {SUITES}")
        if self.max_steps < 1 or self.eval_every < 1 or not self.time_budget_s > 0:
            raise ValueError(
                f"workload {self.name!r}: max_steps and eval_every must be >= 1 and "
                "time_budget_s > 0"
            )


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_WORKLOADS: dict[str, Workload] = {}
WORKLOADS: Mapping[str, Workload] = MappingProxyType(_WORKLOADS)


def register_workload(workload: Workload) -> Workload:
    """Add ``workload`` to ``WORKLOADS``; a name already taken (case-insensitively) is an error."""
    lowered = {n.lower(): n for n in _WORKLOADS}
    if workload.name.lower() in lowered:
        raise ValueError(
            f"workload name {workload.name!r} collides with the registered "
            f"{lowered[workload.name.lower()]!r}"
        )
    _WORKLOADS[workload.name] = workload
    return workload


def get_workload(name: str) -> Workload:
    """The workload registered as ``name`` (case-insensitive); unknown names list close matches."""
    if name in _WORKLOADS:
        return _WORKLOADS[name]
    lowered = {n.lower(): n for n in _WORKLOADS}
    if name.lower() in lowered:
        return _WORKLOADS[lowered[name.lower()]]
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown workload {name!r}{hint} (registered: {', '.join(sorted(_WORKLOADS))})"
    )


def load_all_data() -> None:
    """Call every registered workload's ``data`` loader once (each caches its result)."""
    for loader in dict.fromkeys(w.data for w in _WORKLOADS.values() if w.data is not None):
        loader()


def workloads_in_suite(suite: str) -> list[Workload]:
    """The registered workloads of ``suite`` (``"quick"`` or ``"full"``), sorted by name."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {SUITES}")
    return [w for _, w in sorted(_WORKLOADS.items()) if suite in w.suite]


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------


def derive_seed(seed: int, *purpose: object) -> int:
    """A 63-bit seed for one ``purpose`` of a trial seed (stable across processes and runs,
    unlike ``hash``): ``derive_seed(seed, "init")``, ``derive_seed(seed, "batches", epoch)``."""
    digest = hashlib.blake2b(repr((int(seed), *purpose)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(seed: int, *purpose: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *purpose)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *purpose))


def seeded_module(seed: int, factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` with its parameters initialised from ``seed`` alone: the global RNG is
    seeded inside a fork and restored afterwards, so the result does not depend on (or change)
    anything else the process did."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        module = factory()
    return module.float()


class EpochBatches:
    """Minibatches of ``tensors`` (all with the same first dimension ``n``): epochs of
    ``n // batch_size`` batches, each epoch a fresh permutation drawn from ``(seed, epoch)``.
    The permutation is applied once per epoch, so a batch is a tuple of contiguous views
    (cheap: batch creation counts as harness overhead); any step can be asked for, in any order.
    """

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, seed: int) -> None:
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors need the same first dimension")
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
        self.tensors, self.n, self.batch_size, self.seed = tensors, n, batch_size, seed
        self.batches_per_epoch = n // batch_size
        self._epoch = -1
        self._shuffled: tuple[Tensor, ...] = ()

    def order(self, epoch: int) -> Tensor:
        """The permutation of ``range(n)`` used in ``epoch``."""
        return torch.randperm(self.n, generator=generator(self.seed, "batches", epoch))

    def __call__(self, step: int) -> tuple[Tensor, ...]:
        epoch, index = divmod(int(step), self.batches_per_epoch)
        if epoch != self._epoch:
            order = self.order(epoch)
            self._shuffled = tuple(t[order] for t in self.tensors)
            self._epoch = epoch
        start = index * self.batch_size
        return tuple(t[start : start + self.batch_size] for t in self._shuffled)


# --------------------------------------------------------------------------------------------
# Tasks built on an nn.Module
# --------------------------------------------------------------------------------------------

Forward = Callable[..., Any]


class ModuleTask:
    """Base of the tasks here: a workload writes its loss once, as ``compute_loss(forward,
    batch)`` where ``forward`` is the model's call, and gets both ``loss`` (the model itself) and
    ``functional_loss`` (parameters from a dict, via ``torch.func.functional_call``) from it."""

    model: nn.Module

    def compute_loss(self, forward: Forward, batch: Any) -> Tensor:
        """The scalar training loss of the model called as ``forward`` on ``batch``."""
        raise NotImplementedError

    def batch(self, step: int) -> Any:
        raise NotImplementedError

    def evaluate(self) -> float:
        raise NotImplementedError

    def loss(self, batch: Any) -> Tensor:
        """The scalar training loss of ``self.model`` on ``batch``."""
        return self.compute_loss(self.model, batch)

    def functional_loss(self, params: Mapping[str, Tensor], batch: Any) -> Tensor:
        """The training loss with the model's parameters replaced by ``params`` (names as in
        ``model.named_parameters()``; missing names keep the model's own tensors)."""
        return self.compute_loss(_functional_forward(self.model, params), batch)


class ResidualTask(ModuleTask):
    """A task whose loss is the mean square of per-sample residuals: a workload writes
    ``compute_residuals(forward, batch)`` and gets ``residuals``, ``loss`` and
    ``functional_loss`` with ``loss == residuals.square().mean()`` by construction."""

    def compute_residuals(self, forward: Forward, batch: Any) -> Tensor:
        """The 1-D tensor of residuals of the model called as ``forward`` on ``batch``."""
        raise NotImplementedError

    def compute_loss(self, forward: Forward, batch: Any) -> Tensor:
        return self.compute_residuals(forward, batch).square().mean()

    def residuals(self, batch: Any) -> Tensor:
        """Per-sample residuals of ``self.model`` on ``batch`` (a 1-D tensor)."""
        return self.compute_residuals(self.model, batch)

    def per_sample_losses(self, batch: Any) -> Tensor:
        """Per-sample losses (squared residuals; their mean is ``loss(batch)``)."""
        return self.residuals(batch).square()


def _functional_forward(model: nn.Module, params: Mapping[str, Tensor]) -> Forward:
    def forward(*args: Any) -> Tensor:
        return functional_call(model, dict(params), args)

    return forward


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def error_rate(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows of ``logits`` whose arg-max is not the label."""
    return float((logits.argmax(dim=-1) != labels).float().mean())


def finite_or_inf(value: float) -> float:
    """``value``, or ``inf`` when it is NaN (so a broken model never looks good)."""
    return math.inf if math.isnan(value) else value


def offers(*oracles: str) -> frozenset[str]:
    """The frozenset of ``oracles`` (checked against ``optzoo.registry.ORACLES``)."""
    unknown = set(oracles) - set(ORACLES)
    if unknown:
        raise ValueError(f"unknown oracles {sorted(unknown)}; expected some of {ORACLES}")
    return frozenset(oracles)


@dataclass(frozen=True)
class Split:
    """A supervised data set split into training and held-out tensors."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
