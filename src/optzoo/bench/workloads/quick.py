"""The quick suite: short-budget variants of full-suite workloads, so that ``optzoo bench``
with every registered algorithm finishes in minutes on two cores.

Each variant is its full-suite workload with a smaller step budget and a tight time budget (a
cap for algorithms whose steps cost hundreds of times a first-order step), under its own name,
so it has its own frozen target. The suite keeps the workloads adaptive methods are not expected
to win (MNIST-1D CNN, noisy least squares). Loss-only (gradient-free) algorithms run on the
non-differentiable network only: the differentiable quick variants do not offer the
``loss_closure`` oracle (the full suite runs them everywhere they can run).
"""

from __future__ import annotations

from dataclasses import replace

from optzoo.bench.workloads.base import Workload, register_workload
from optzoo.bench.workloads.least_squares import LEAST_SQUARES_NOISY
from optzoo.bench.workloads.mnist1d import MNIST1D_CNN, MNIST1D_MLP
from optzoo.bench.workloads.nondiff import NONDIFF_DIGITS

QUICK = frozenset({"quick"})


def quick_variant(
    workload: Workload,
    max_steps: int,
    time_budget_s: float,
    eval_every: int,
    oracles: frozenset[str] | None = None,
) -> Workload:
    """``workload`` with ``max_steps`` steps and ``time_budget_s`` seconds, registered as
    ``<name>_quick`` in the quick suite (serving ``oracles``, default the workload's own)."""
    return register_workload(
        replace(
            workload,
            name=f"{workload.name}_quick",
            description=f"{workload.description} ({max_steps}-step quick variant)",
            max_steps=max_steps,
            time_budget_s=time_budget_s,
            eval_every=eval_every,
            suite=QUICK,
            oracles=workload.oracles if oracles is None else oracles,
        )
    )


def _without_loss_only(workload: Workload) -> frozenset[str]:
    return frozenset(workload.oracles - {"loss_closure"})


# Time budgets: about NAdamW's training time on one quiet core (1.0 s; the benchmark cuts a
# trial at twice its budget), so the cap binds only for algorithms whose steps cost several
# first-order steps (M-FAC, FISMO, the population methods); it keeps the suite within minutes.
MNIST1D_MLP_QUICK = quick_variant(MNIST1D_MLP, 300, 1.0, 25, _without_loss_only(MNIST1D_MLP))
MNIST1D_CNN_QUICK = quick_variant(MNIST1D_CNN, 120, 1.0, 20)
LEAST_SQUARES_NOISY_QUICK = quick_variant(
    LEAST_SQUARES_NOISY, 400, 1.0, 25, _without_loss_only(LEAST_SQUARES_NOISY)
)
NONDIFF_DIGITS_QUICK = quick_variant(NONDIFF_DIGITS, 200, 1.0, 25)
