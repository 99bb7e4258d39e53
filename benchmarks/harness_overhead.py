"""Harness overhead of ``optzoo bench``: a trial's training wall time against a bare loop.

The anchor is the bare training loop a user would write: the same task, optimizer and LR
schedule, ``batch -> zero_grad -> loss -> backward -> step -> scheduler.step`` and nothing
else. The harness is ``optzoo.bench.runner.run_trial`` on the same (algorithm, workload, seed),
whose training time excludes evaluation, as AlgoPerf's does. Both run in this process, taking
turns (a round = one of each, in alternating order) so machine noise hits both alike.

Printed per workload: the medians over rounds of the bare loop's time, the harness's training
time, their ratio (harness / bare; the overhead is ratio - 1) and the runner's own accounting of
overhead (time outside the algorithm's step / training time). The bench promises < 5%.

    .venv/bin/python benchmarks/harness_overhead.py                  # ~1 minute
    .venv/bin/python benchmarks/harness_overhead.py --rounds 9 --algorithm SGDNesterov
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from optzoo.bench.algorithms import resolve_algorithm
from optzoo.bench.benchmark import SCHEDULE, SCHEDULE_ARGS
from optzoo.bench.runner import Trial, make_schedule, run_trial
from optzoo.bench.workloads import get_workload

WORKLOADS = ("least_squares_noisy_quick", "mnist1d_mlp_quick", "mnist1d_cnn_quick")
LEARNING_RATES = {"NAdamW": 3e-3, "SGDNesterov": 0.05}


def bare_loop(trial: Trial) -> float:
    """Seconds of the bare training loop of ``trial`` (task built outside the clock)."""
    spec = resolve_algorithm(trial.algorithm)
    task = get_workload(trial.workload).build(trial.seed)
    optimizer = spec.build(task.model.parameters(), **trial.hyperparameters)
    scheduler = make_schedule(optimizer, SCHEDULE, SCHEDULE_ARGS, trial.max_steps)
    start = time.perf_counter()
    for step in range(trial.max_steps):
        batch = task.batch(step)
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(batch)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - start


def harness(trial: Trial) -> tuple[float, float]:
    """Training wall time of ``run_trial`` and its overhead fraction."""
    result = run_trial(trial)
    if result.status != "ok":
        raise RuntimeError(f"{trial.algorithm} on {trial.workload}: {result.error}")
    return result.wall_s, result.overhead_fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per workload (default 5)")
    parser.add_argument("--algorithm", default="NAdamW", help="algorithm (default NAdamW)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lr = LEARNING_RATES.get(args.algorithm)
    hyperparameters = {} if lr is None else {"lr": lr}
    print(f"{args.algorithm}, {args.rounds} rounds, 1 thread; medians over rounds")
    header = f"{'workload':28s} {'steps':>6s} {'bare s':>8s} {'harness s':>10s}"
    print(f"{header} {'ratio':>7s} {'runner overhead':>16s}")
    for name in args.workloads.split(","):
        workload = get_workload(name)
        trial = Trial(
            algorithm=args.algorithm,
            workload=workload.name,
            seed=1,
            max_steps=workload.max_steps,
            hyperparameters=hyperparameters,
            schedule=SCHEDULE,
            schedule_args=dict(SCHEDULE_ARGS),
        )
        bare_loop(trial)  # warm-up: first-touch allocations, lazy imports
        bares, walls, fractions, ratios = [], [], [], []
        for round_index in range(args.rounds):
            if round_index % 2:
                wall, fraction = harness(trial)
                bare = bare_loop(trial)
            else:
                bare = bare_loop(trial)
                wall, fraction = harness(trial)
            bares.append(bare)
            walls.append(wall)
            fractions.append(fraction)
            ratios.append(wall / bare)
        print(
            f"{name:28s} {workload.max_steps:6d} {statistics.median(bares):8.3f} "
            f"{statistics.median(walls):10.3f} {statistics.median(ratios):7.3f} "
            f"{100 * statistics.median(fractions):15.2f}%"
        )


if __name__ == "__main__":
    main()
