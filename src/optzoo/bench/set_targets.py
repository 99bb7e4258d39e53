"""The target-setting pass behind ``optzoo targets`` (AlgoPerf's ``workload_targets.json``).

For each workload, a pool of baselines (``POOL``: NAdamW and AdamW, momentum and Nesterov SGD, all
with warm-up + cosine decay) is tuned on the tuning seed with the benchmark's own budget for the
workload's suite (``suite_tuning_budget``: learning rates over each baseline's search space,
widened at an edge), with no target, on the workload's full step budget. Each baseline's best
configuration is rerun on ``SEEDS`` (fresh seeds, used by no benchmark run), and each baseline's
median over those seeds of the best metric reached within ``FRACTION`` (3/4) of the budget (of its
steps, and of the benchmark's time cap, which the pass applies too: it binds only for algorithms
with costly steps) is recorded. The target is the calibrated NAdamW baseline's median
(``REFERENCE``), so that the reference every speed-up is measured against reaches every target;
where another baseline does better (momentum on noisy least squares and on the MNIST-1D MLP) it
reaches the target sooner, and scores higher. (AlgoPerf takes the best baseline's value and
adjusts the budgets instead; with fixed budgets that makes NAdamW miss targets and its speed-up
undefined.) A workload NAdamW cannot serve takes the best pool member's value; one no pool member
can serve (a loss-only workload) falls back to the registered algorithms that can, and says so.
Targets are never taken from the runs being scored.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optzoo.bench import tune
from optzoo.bench.algorithms import BenchAlgorithm, bench_algorithms, resolve_algorithm, suits
from optzoo.bench.benchmark import (
    BENCHMARKED_ORACLES,
    SCHEDULE,
    SCHEDULE_ARGS,
    SUITE_DEFAULTS,
    TUNING_SEED,
    time_cap,
)
from optzoo.bench.runner import Progress, Trial, run_trials
from optzoo.bench.store import Store
from optzoo.bench.workloads import Target, Workload, get_workload

POOL = ("NAdamW", "AdamW", "SGDMomentum", "SGDNesterov")
REFERENCE = "NAdamW"


def suite_tuning_budget(workload: Workload) -> int:
    """The tuning budget the benchmark gives every algorithm on ``workload``'s suite: the pass
    tunes the baselines with the same grid (and widening), so the NAdamW baseline the
    benchmark calibrates is the one the targets come from (a finer grid here found learning
    rates the benchmark's grid cannot reach, and NAdamW then missed its own targets)."""
    return SUITE_DEFAULTS["quick" if "quick" in workload.suite else "full"][0]


SEEDS = (100, 101, 102, 103, 104)
FRACTION = 0.75


@dataclass(frozen=True)
class BaselineResult:
    """One baseline's outcome on one workload: its tuned configuration, and per final seed the
    best metric reached within ``FRACTION`` of the budget."""

    algorithm: str
    hyperparameters: Mapping[str, Any]
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.inf


def pool_for(workload: Workload, pool: Sequence[str] = POOL) -> tuple[list[BenchAlgorithm], bool]:
    """The pool members that serve ``workload``; when none does, the registered algorithms
    that do (second value True)."""
    found = [a for a in map(resolve_algorithm, pool) if suits(a, workload)]
    if found:
        return found, False
    fallback = [
        a for a in bench_algorithms(False) if a.oracle in BENCHMARKED_ORACLES and suits(a, workload)
    ]
    return fallback, True


def _trial(algorithm: BenchAlgorithm, workload: Workload, hp: Mapping[str, Any], seed: int):
    return Trial(
        algorithm=algorithm.name,
        workload=workload.name,
        seed=seed,
        max_steps=workload.max_steps,
        time_budget_s=time_cap(workload, workload.max_steps),
        hyperparameters=dict(hp),
        schedule=SCHEDULE,
        schedule_args=dict(SCHEDULE_ARGS),
        target=None,
        phase="targets",
    )


def best_within(store: Store, record: Mapping[str, Any], fraction: float = FRACTION) -> float:
    """The lowest eval metric of a stored trial within ``fraction`` of its budget: at steps
    and training wall time both within that fraction of the trial's (inf for a failed or
    diverged trial)."""
    if record["status"] != "ok":
        return math.inf
    limit = fraction * record["max_steps"]
    cap = record["time_budget_s"]
    time_limit = math.inf if cap is None else fraction * cap
    values = [
        p.eval_metric
        for p in store.curve(record["id"])
        if p.step <= limit and p.wall_s <= time_limit and p.eval_metric is not None
    ]
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else math.inf


def _records(store: Store, algorithm: str, workload: Workload, seeds: Sequence[int]):
    return [
        r
        for r in store.trials(phase="targets", algorithm=algorithm, workload=workload.name)
        if r["seed"] in seeds and r["max_steps"] == workload.max_steps
    ]


def _best(store: Store, records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    ranked = sorted(records, key=lambda r: (best_within(store, r), r["id"]))
    return ranked[0] if ranked else None


def set_targets(
    workloads: Sequence[str],
    store: Store,
    *,
    pool: Sequence[str] = POOL,
    tuning_budget: int | None = None,
    seeds: Sequence[int] = SEEDS,
    workers: int = 2,
    progress: Callable[[str, Progress], None] | None = None,
) -> tuple[dict[str, Target], dict[str, list[BaselineResult]]]:
    """Run (or resume) the target-setting pass into ``store``; return the targets and, per
    workload, every baseline's result (best first)."""
    if TUNING_SEED in seeds:
        raise ValueError(f"target seeds must not include the tuning seed {TUNING_SEED}")
    chosen = [get_workload(w) for w in workloads]
    members = {w.name: pool_for(w, pool) for w in chosen}

    def run(stage: str, trials: list[Trial]) -> None:
        def report(event: Progress) -> None:
            if progress is not None:
                progress(stage, event)

        run_trials(trials, store, workers=workers, resume=True, progress=report)

    def tuned(
        algorithm: BenchAlgorithm, workload: Workload, first_round: bool = False
    ) -> Mapping[str, Any] | None:
        records = _records(store, algorithm.name, workload, [TUNING_SEED])
        if first_round:  # so that a resumed pass plans the same widening
            chosen = grid[(algorithm.name, workload.name)]
            records = [r for r in records if r["hyperparameters"] in chosen]
        return _best(store, records)

    def budget(workload: Workload) -> int:
        return tuning_budget or suite_tuning_budget(workload)

    grid = {
        (a.name, w.name): tune.configurations(a.search_space, budget(w))
        for w in chosen
        for a in members[w.name][0]
    }
    run(
        "tune",
        [
            _trial(a, w, hp, TUNING_SEED)
            for w in chosen
            for a in members[w.name][0]
            for hp in grid[(a.name, w.name)]
        ],
    )
    extra = []
    for w in chosen:
        for a in members[w.name][0]:
            best = tuned(a, w, first_round=True)
            if best is not None and best["status"] == "ok":
                for hp in tune.widen(a.search_space, budget(w), best["hyperparameters"]):
                    extra.append(_trial(a, w, hp, TUNING_SEED))
    run("widen", extra)
    finals, picks = [], {}
    for w in chosen:
        for a in members[w.name][0]:
            best = tuned(a, w)
            if best is not None and math.isfinite(best_within(store, best)):
                picks[(a.name, w.name)] = best["hyperparameters"]
                finals += [_trial(a, w, best["hyperparameters"], seed) for seed in seeds]
    run("final", finals)

    targets, results = {}, {}
    for w in chosen:
        found = []
        for a in members[w.name][0]:
            if (a.name, w.name) not in picks:
                continue
            records = _records(store, a.name, w, seeds)
            records = [r for r in records if r["hyperparameters"] == picks[(a.name, w.name)]]
            values = tuple(best_within(store, r) for r in records)
            found.append(BaselineResult(a.name, picks[(a.name, w.name)], values))
        found.sort(key=lambda r: r.median)
        results[w.name] = found
        targets[w.name] = _target(w, found, members[w.name][1], len(seeds))
    return targets, results


def _target(workload: Workload, found: list[BaselineResult], fallback: bool, seeds: int) -> Target:
    if not found or not math.isfinite(found[0].median):
        how = "target-setting pass found no baseline that trains this workload"
        return Target(workload.version, workload.metric, None, how)
    chosen = [r for r in found if r.algorithm == REFERENCE and math.isfinite(r.median)]
    best = chosen[0] if chosen else found[0]
    others = "; ".join(f"{r.algorithm} {r.median:.4g}" for r in found if r is not best)
    pool = (
        "registered algorithms serving its oracle (no pool baseline can)"
        if fallback
        else ("baselines " + ", ".join(r.algorithm for r in found))
    )
    how = (
        f"median over {seeds} seeds of the best {workload.metric} within "
        f"{FRACTION:g} of {workload.max_steps} steps and of the "
        f"{time_cap(workload, workload.max_steps):g} s time cap, of {pool} tuned over "
        f"{suite_tuning_budget(workload)} "
        f"configurations with warm-up + cosine; target from "
        + ("the reference " if chosen else "the best ")
        + f"{best.algorithm} "
        f"{dict(best.hyperparameters)} {best.median:.4g}"
        + (f" (others: {others})" if others else "")
    )
    return Target(workload.version, workload.metric, float(f"{best.median:.6g}"), how)
