"""Scoring as AlgoPerf does it, read from the store alone.

Per (workload, algorithm): the final runs on paired seeds (same seed = same initialisation and
batch order for every algorithm) give steps to target (the primary figure), training wall time
and process CPU time to target; a seed that misses the target counts as infinite, and the median
over seeds is taken (so an algorithm that misses on most seeds misses).

Across workloads: the performance ratio of an algorithm on a workload is its median steps to
target over the best algorithm's; a ratio above ``MAX_RATIO`` (4) is a miss. Its performance
profile ``rho(tau)`` is the fraction of the workloads it ran on with ratio <= tau, and its
benchmark score is the profile's mean over tau in [1, 4] (the normalised area under it, 1 = best
everywhere). Beside it, the geometric-mean speed-up over the NAdamW baseline (baseline steps /
the algorithm's, over workloads where both reach the target) does not move when entrants join.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_RATIO = 4.0
BASELINE = "NAdamW"
TAU_POINTS = 301


def median(values: Sequence[float]) -> float:
    """The median, with ``inf`` standing for a miss (``nan`` for no values)."""
    return statistics.median(values) if values else math.nan


@dataclass
class Summary:
    """The final runs of one algorithm on one workload."""

    workload: str
    algorithm: str
    hyperparameters: Mapping[str, Any]
    seeds: list[int] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    final_metrics: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    state_bytes_per_param: float | None = None
    peak_memory_bytes: int | None = None
    statuses: list[str] = field(default_factory=list)

    @property
    def median_steps(self) -> float:
        return median(self.steps)

    @property
    def median_time(self) -> float:
        return median(self.times)

    @property
    def median_cpu_time(self) -> float:
        return median(self.cpu_times)

    @property
    def median_final_metric(self) -> float:
        finite = [m for m in self.final_metrics if math.isfinite(m)]
        return median(finite) if len(finite) == len(self.final_metrics) else math.inf

    @property
    def median_step_ms(self) -> float:
        return median(self.step_ms)

    @property
    def reached(self) -> int:
        """How many seeds reached the target."""
        return sum(math.isfinite(s) for s in self.steps)


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Summary]:
    """Final-phase trial records (``Store.trials(phase="final")``) grouped by (workload,
    algorithm); a trial without a target reached counts as a miss."""
    found: dict[tuple[str, str], Summary] = {}
    for r in sorted(records, key=lambda r: (r["workload"], r["algorithm"], r["seed"])):
        key = (r["workload"], r["algorithm"])
        summary = found.setdefault(
            key, Summary(r["workload"], r["algorithm"], r["hyperparameters"])
        )
        ok = r["status"] == "ok" and r["steps_to_target"] is not None
        summary.seeds.append(int(r["seed"]))
        summary.statuses.append(r["status"])
        summary.steps.append(float(r["steps_to_target"]) if ok else math.inf)
        summary.times.append(float(r["time_to_target_s"]) if ok else math.inf)
        summary.cpu_times.append(float(r["cpu_time_to_target_s"]) if ok else math.inf)
        final = r["final_metric"]
        good = r["status"] == "ok" and final is not None
        summary.final_metrics.append(float(final) if good else math.inf)
        if r["median_step_ms"] is not None:
            summary.step_ms.append(float(r["median_step_ms"]))
        if r["state_bytes_per_param"] is not None:
            summary.state_bytes_per_param = float(r["state_bytes_per_param"])
        if r["peak_memory_bytes"] is not None:
            peak = int(r["peak_memory_bytes"])
            summary.peak_memory_bytes = max(summary.peak_memory_bytes or 0, peak)
    return found


def performance_ratios(
    summaries: Mapping[tuple[str, str], Summary], figure: str = "median_steps"
) -> dict[str, dict[str, float]]:
    """algorithm -> workload -> ratio of its ``figure`` (``"median_steps"`` or
    ``"median_time"``) to the best algorithm's on that workload; ``inf`` for a miss or a ratio
    above ``MAX_RATIO``. Workloads no algorithm finished are left out."""
    by_workload: dict[str, dict[str, float]] = defaultdict(dict)
    for (workload, algorithm), summary in summaries.items():
        by_workload[workload][algorithm] = getattr(summary, figure)
    ratios: dict[str, dict[str, float]] = defaultdict(dict)
    for workload, values in by_workload.items():
        best = min(values.values())
        if not math.isfinite(best):
            continue
        for algorithm, value in values.items():
            ratio = value / best if best > 0 else (1.0 if value == best else math.inf)
            ratios[algorithm][workload] = ratio if ratio <= MAX_RATIO else math.inf
    return dict(ratios)


def profile(ratios: Mapping[str, float], taus: Sequence[float]) -> list[float]:
    """rho(tau): the fraction of the workloads in ``ratios`` with ratio <= tau."""
    if not ratios:
        return [0.0 for _ in taus]
    values = list(ratios.values())
    return [sum(r <= tau for r in values) / len(values) for tau in taus]


def taus(points: int = TAU_POINTS) -> list[float]:
    """Evenly spaced tau from 1 to ``MAX_RATIO``."""
    return [1 + (MAX_RATIO - 1) * i / (points - 1) for i in range(points)]


def benchmark_score(ratios: Mapping[str, float], points: int = TAU_POINTS) -> float:
    """The profile's mean over tau in [1, MAX_RATIO] (trapezoid rule): 1 when the algorithm is
    the fastest on every workload, 0 when it misses every one."""
    grid = taus(points)
    rho = profile(ratios, grid)
    area = sum((rho[i] + rho[i + 1]) / 2 * (grid[i + 1] - grid[i]) for i in range(points - 1))
    return area / (MAX_RATIO - 1)


def speedup_over(
    summaries: Mapping[tuple[str, str], Summary], algorithm: str, baseline: str = BASELINE
) -> tuple[float, int]:
    """Geometric-mean speed-up of ``algorithm`` over ``baseline`` in steps to target, over the
    workloads where both reach it, and how many those are (``nan``, 0 when none)."""
    logs = []
    for (workload, name), summary in summaries.items():
        other = summaries.get((workload, baseline))
        if name != algorithm or other is None:
            continue
        mine, theirs = summary.median_steps, other.median_steps
        if math.isfinite(mine) and math.isfinite(theirs) and mine > 0:
            logs.append(math.log(theirs / mine))
    if not logs:
        return math.nan, 0
    return math.exp(statistics.fmean(logs)), len(logs)


@dataclass(frozen=True)
class Standing:
    """One algorithm's line of the summary table."""

    algorithm: str
    score: float
    time_score: float
    workloads: int
    reached: int
    speedup: float
    speedup_workloads: int


def standings(
    summaries: Mapping[tuple[str, str], Summary], baseline: str = BASELINE
) -> list[Standing]:
    """Every algorithm's benchmark score (steps and wall time) and speed-up over ``baseline``,
    best score first."""
    by_steps = performance_ratios(summaries, "median_steps")
    by_time = performance_ratios(summaries, "median_time")
    algorithms = sorted({a for _, a in summaries})
    found = []
    for algorithm in algorithms:
        mine = {w: s for (w, a), s in summaries.items() if a == algorithm}
        speedup, count = speedup_over(summaries, algorithm, baseline)
        found.append(
            Standing(
                algorithm=algorithm,
                score=benchmark_score(by_steps.get(algorithm, {w: math.inf for w in mine})),
                time_score=benchmark_score(by_time.get(algorithm, {w: math.inf for w in mine})),
                workloads=len(mine),
                reached=sum(math.isfinite(s.median_steps) for s in mine.values()),
                speedup=speedup,
                speedup_workloads=count,
            )
        )
    return sorted(found, key=lambda s: (-s.score, s.algorithm))
