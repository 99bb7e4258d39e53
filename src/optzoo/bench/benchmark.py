"""The benchmark protocol behind ``optzoo bench``: tune every algorithm with the same budget on
the tuning seed, rerun each winner on fresh paired seeds against the frozen targets, and keep
everything in the store, so scoring and the report are rebuilt from it alone.

Every trial runs the workload's step budget with the same learning-rate schedule (linear
warm-up over 5% of the steps, then cosine decay: AlgoPerf's NAdamW baseline recipe), applied to
the algorithm's own ``lr``. A trial stops at the workload's target. Each algorithm runs only on
the workloads that serve its oracle (``layer_local`` trainers, which own their loop, are not run
by the benchmark). The plan is deterministic, so a resumed run picks up exactly where the
killed one stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from optzoo.bench import tune
from optzoo.bench.algorithms import BenchAlgorithm, bench_algorithms, resolve_algorithm, suits
from optzoo.bench.runner import Progress, Trial, run_trials
from optzoo.bench.store import Store
from optzoo.bench.workloads import SUITES, Workload, get_workload, target_for, workloads_in_suite
from optzoo.registry import ORACLES

SCHEDULE = "warmup_cosine"
SCHEDULE_ARGS: Mapping[str, Any] = {"warmup_fraction": 0.05}
TUNING_SEED = 0
# The budget is in steps; the workload's time budget, times this factor, only caps a runaway
# trial (so a contended machine does not cut trials short).
TIME_CAP_FACTOR = 2.0
# Trainers (layer_local) own their training loop, so the runner cannot drive them.
BENCHMARKED_ORACLES = tuple(o for o in ORACLES if o != "layer_local")
# Per suite: configurations per (algorithm, workload) on the tuning seed, and final seeds.
SUITE_DEFAULTS: Mapping[str, tuple[int, tuple[int, ...]]] = {
    "quick": (5, (1, 2, 3)),
    "full": (7, (1, 2, 3, 4, 5)),
}


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run covers. ``max_steps`` overrides every workload's step budget
    (``None``: each workload's own; the frozen targets were set on those)."""

    algorithms: tuple[str, ...]
    workloads: tuple[str, ...]
    tuning_budget: int
    seeds: tuple[int, ...]
    tuning_seed: int = TUNING_SEED
    max_steps: int | None = None
    suite: str | None = None
    targets: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("no algorithms to benchmark")
        if not self.workloads:
            raise ValueError("no workloads to benchmark")
        if self.tuning_budget < 1:
            raise ValueError(f"tuning budget must be >= 1, got {self.tuning_budget}")
        if not self.seeds:
            raise ValueError("at least one final seed is needed")
        if self.tuning_seed in self.seeds:
            raise ValueError(
                f"final seeds {list(self.seeds)} must be fresh: they include the tuning seed "
                f"{self.tuning_seed}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    def to_json(self) -> str:
        data = asdict(self)
        data["targets"] = dict(self.targets)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BenchConfig:
        data = json.loads(text)
        for name in ("algorithms", "workloads", "seeds"):
            data[name] = tuple(data[name])
        return cls(**data)


def make_config(
    *,
    suite: str = "quick",
    algorithms: Sequence[str] | None = None,
    workloads: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    tuning_budget: int | None = None,
    max_steps: int | None = None,
) -> BenchConfig:
    """A run over ``suite``'s workloads (or ``workloads``) and every benchmarkable algorithm
    (or ``algorithms``: registered names or bench baselines), with the suite's tuning budget
    and seeds unless given. Unknown names raise ``ValueError`` naming close matches."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {SUITES}")
    budget, default_seeds = SUITE_DEFAULTS[suite]
    chosen_workloads = (
        [w.name for w in workloads_in_suite(suite)]
        if workloads is None
        else [get_workload(w).name for w in workloads]
    )
    if algorithms is None:
        found = [a for a in bench_algorithms() if a.oracle in BENCHMARKED_ORACLES]
    else:
        found = [resolve_algorithm(a) for a in algorithms]
    targets = {w: target_for(get_workload(w)) for w in chosen_workloads}
    return BenchConfig(
        algorithms=tuple(dict.fromkeys(a.name for a in found)),
        workloads=tuple(dict.fromkeys(chosen_workloads)),
        tuning_budget=budget if tuning_budget is None else tuning_budget,
        seeds=tuple(default_seeds if seeds is None else seeds),
        max_steps=max_steps,
        suite=suite,
        targets=targets,
    )


def pairs(config: BenchConfig) -> list[tuple[BenchAlgorithm, Workload]]:
    """The (algorithm, workload) pairs the run covers: each algorithm where its oracle is
    served."""
    found = []
    for workload_name in config.workloads:
        workload = get_workload(workload_name)
        for name in config.algorithms:
            algorithm = resolve_algorithm(name)
            if algorithm.oracle in BENCHMARKED_ORACLES and suits(algorithm, workload):
                found.append((algorithm, workload))
    return found


def time_cap(workload: Workload, steps: int) -> float:
    """The wall-time cap of a ``steps``-step trial on ``workload`` (``TIME_CAP_FACTOR`` times its
    time budget, scaled to the steps): the benchmark and the target-setting pass use the same."""
    return TIME_CAP_FACTOR * workload.time_budget_s * steps / workload.max_steps


def _trial(
    config: BenchConfig,
    algorithm: BenchAlgorithm,
    workload: Workload,
    hyperparameters: Mapping[str, Any],
    seed: int,
    phase: str,
) -> Trial:
    steps = config.max_steps or workload.max_steps
    return Trial(
        algorithm=algorithm.name,
        workload=workload.name,
        seed=seed,
        max_steps=steps,
        time_budget_s=time_cap(workload, steps),
        hyperparameters=dict(hyperparameters),
        schedule=SCHEDULE,
        schedule_args=dict(SCHEDULE_ARGS),
        target=config.targets.get(workload.name),
        phase=phase,
    )


def tuning_trials(config: BenchConfig) -> list[Trial]:
    """The first tuning round: ``tuning_budget`` configurations per pair, on the tuning seed."""
    return [
        _trial(config, algorithm, workload, hp, config.tuning_seed, "tune")
        for algorithm, workload in pairs(config)
        for hp in tune.configurations(algorithm.search_space, config.tuning_budget)
    ]


def _tuned(store: Store, config: BenchConfig, algorithm: BenchAlgorithm, workload: Workload):
    records = store.trials(
        phase="tune", algorithm=algorithm.name, workload=workload.name, seed=config.tuning_seed
    )
    steps = config.max_steps or workload.max_steps
    return [
        r for r in records if r["max_steps"] == steps and r["target"] == _target(config, workload)
    ]


def _target(config: BenchConfig, workload: Workload) -> float | None:
    value = config.targets.get(workload.name)
    return None if value is None else float(value)


def widening_trials(config: BenchConfig, store: Store) -> list[Trial]:
    """The second tuning round: where the best configuration so far is on the edge of the
    search space, ``tune.WIDEN_POINTS`` more configurations beyond that edge."""
    found = []
    for algorithm, workload in pairs(config):
        grid = tune.configurations(algorithm.search_space, config.tuning_budget)
        records = _tuned(store, config, algorithm, workload)
        # From the first round only, so a resumed run plans the same widening.
        best = tune.best_record([r for r in records if r["hyperparameters"] in grid])
        if best is None or best["status"] != "ok":
            continue
        for hp in tune.widen(algorithm.search_space, config.tuning_budget, best["hyperparameters"]):
            found.append(_trial(config, algorithm, workload, hp, config.tuning_seed, "tune"))
    return found


def chosen(config: BenchConfig, store: Store) -> dict[tuple[str, str], dict[str, Any]]:
    """(workload, algorithm) -> the tuned configuration (best over both rounds), with
    ``edge`` listing the hyperparameters still on the edge of the widened grid."""
    found = {}
    for algorithm, workload in pairs(config):
        records = _tuned(store, config, algorithm, workload)
        best = tune.best_record(records)
        if best is None:
            continue
        hp = dict(best["hyperparameters"])
        on_edge = []
        for name, values in algorithm.search_space.items():
            if not isinstance(values, tuple) or name not in hp:
                continue
            tried = [float(r["hyperparameters"][name]) for r in records]
            value = float(hp[name])
            beyond_low = value <= values[0] * (1 + 1e-3) and value <= min(tried)
            beyond_high = value >= values[1] * (1 - 1e-3) and value >= max(tried)
            if beyond_low or beyond_high:
                on_edge.append(name)
        found[(workload.name, algorithm.name)] = {"hyperparameters": hp, "edge": on_edge}
    return found


def final_trials(config: BenchConfig, store: Store) -> list[Trial]:
    """Each tuned configuration on the fresh final seeds (paired across algorithms)."""
    picks = chosen(config, store)
    found = []
    for algorithm, workload in pairs(config):
        pick = picks.get((workload.name, algorithm.name))
        if pick is None:
            continue
        for seed in config.seeds:
            found.append(
                _trial(config, algorithm, workload, pick["hyperparameters"], seed, "final")
            )
    return found


CONFIG_KEY = "bench_config"


def run_benchmark(
    config: BenchConfig,
    store: Store,
    *,
    workers: int = 2,
    resume: bool = False,
    progress: Callable[[str, Progress], None] | None = None,
) -> None:
    """Run the three stages (tuning, widening, final) into ``store``. The config is kept in the
    store; resuming with another config is an error. ``progress(stage, event)`` is called with
    the runner's events."""
    stored = store.get_meta(CONFIG_KEY)
    if stored is not None and stored != config.to_json():
        if not resume:
            raise ValueError(
                f"{store.path} holds another benchmark run; use a new output folder or --resume"
            )
        raise ValueError(
            f"{store.path} holds a run with other options; resume it with the same options "
            f"(stored: {stored})"
        )
    if stored is None and len(store) and not resume:
        raise ValueError(f"{store.path} already holds trials; use a new output folder")
    store.set_meta(CONFIG_KEY, config.to_json())
    for stage, plan in (
        ("tune", lambda: tuning_trials(config)),
        ("widen", lambda: widening_trials(config, store)),
        ("final", lambda: final_trials(config, store)),
    ):
        trials = plan()

        def report(event: Progress, stage: str = stage) -> None:
            if progress is not None:
                progress(stage, event)

        run_trials(trials, store, workers=workers, resume=True, progress=report)


def stored_config(store: Store) -> BenchConfig | None:
    """The config of the benchmark run held by ``store`` (None for a store of loose trials)."""
    text = store.get_meta(CONFIG_KEY)
    return None if text is None else BenchConfig.from_json(text)
