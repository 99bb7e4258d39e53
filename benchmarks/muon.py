"""Muon and FISMO against AdamW: steps and wall time to target on the classification workloads
and the tiny character-level LM, in one run.

Protocol (every algorithm gets the same budget; AdamW is the anchor):

1. Tuning, seed 0: each algorithm trains with each learning rate of the same small sweep (its
   centre times 1/3, 1 and 3: AdamW 1e-2, Muon and FISMO 0.06, so AdamW's grid is
   3.3e-3..3e-2 and Muon's 0.02..0.18; centres set where a first run with 3x lower centres
   picked the top of every grid at these short budgets) under the runner's warm-up + cosine
   schedule for the step budget, no target.
2. Target: the workload's frozen target from ``optzoo/bench/workloads/targets.json`` when one is
   set for the workload's version and tuned AdamW reaches it within the budget; otherwise the
   best metric tuned AdamW (its best LR) reached by 3/4 of the budget on seed 0. The table says
   which ("frozen" or "adamw@3/4").
3. Each algorithm keeps the LR that reached the target in the fewest steps on seed 0 (else the
   best final metric); a pick at the edge of the grid is marked ``*``.
4. Fresh seeds 1..N (paired: same initialisation and batches across algorithms) train to the
   target or the budget. Reported: median steps to target and median training time to target
   (the runner's clock: optimizer and model work, evaluation excluded), each as a ratio to
   AdamW's median; a seed that misses the target counts as infinitely slow, and where AdamW's
   median misses it the step ratio is shown as an upper bound (``<x``: against the budget).

Every algorithm runs as ``optzoo bench`` would run it: ``model.parameters()`` as one group, so
Muon and FISMO take every matrix (first layers and heads too) and AdamW the biases. Evaluation
is every ``steps // 20`` steps (the resolution of steps-to-target). On models this small, wall
time measures implementation overhead more than the algorithm (DESIGN.md section 5): lead with
steps.

    .venv/bin/python benchmarks/muon.py                                 # default, ~3 min quiet
    .venv/bin/python benchmarks/muon.py --workloads mnist1d_mlp --seeds 5
    .venv/bin/python benchmarks/muon.py --steps mnist1d_cnn=1000,char_lm=400 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from typing import Any

import torch

from optzoo.bench.runner import Trial, TrialResult, run_trial
from optzoo.bench.workloads import WORKLOADS, get_workload, register_workload, target_for

ANCHOR = "AdamW"
# Centre of each algorithm's learning-rate grid; the sweep multiplies it by SWEEP.
CENTER_LR = {"AdamW": 1e-2, "Muon": 0.06, "FISMO": 0.06}
SWEEP = (1 / 3, 1.0, 3.0)
DEFAULT_STEPS = {"mnist1d_mlp": 250, "mnist1d_cnn": 250, "digits_cnn": 100, "char_lm": 80}
SCHEDULE = "warmup_cosine"


def bench_workload(name: str, steps: int) -> str:
    """Register (once) a copy of workload ``name`` that evaluates every ``steps // 20`` steps
    and return its name; targets are still looked up under ``name``."""
    variant = f"{name}@muon_bench_{steps}"
    if variant not in WORKLOADS:
        base = get_workload(name)
        register_workload(
            dataclasses.replace(base, name=variant, max_steps=steps, eval_every=max(1, steps // 20))
        )
    return variant


def trial(algorithm: str, workload: str, seed: int, steps: int, lr: float, target=None) -> Trial:
    return Trial(
        algorithm=algorithm,
        workload=workload,
        seed=seed,
        max_steps=steps,
        hyperparameters={"lr": lr},
        schedule=SCHEDULE,
        target=target,
    )


def first_step_at(result: TrialResult, target: float) -> int | None:
    for point in result.curve:
        if point.eval_metric is not None and point.eval_metric <= target:
            return point.step
    return None


def best_by(result: TrialResult, step: int) -> float:
    values = [p.eval_metric for p in result.curve if p.step <= step and p.eval_metric is not None]
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else math.inf


def median_or_inf(values: list[float | None]) -> float:
    return statistics.median([math.inf if v is None else v for v in values])


def run_workload(name: str, steps: int, seeds: int, algorithms: list[str]) -> dict[str, Any]:
    variant = bench_workload(name, steps)
    tuning: dict[str, dict[float, TrialResult]] = {}
    for algorithm in algorithms:
        tuning[algorithm] = {}
        for factor in SWEEP:
            lr = CENTER_LR[algorithm] * factor
            result = run_trial(trial(algorithm, variant, 0, steps, lr))
            tuning[algorithm][lr] = result
            print(
                f"  tune {name} {algorithm} lr={lr:.3g}: {result.status}, "
                f"final {result.final_metric}",
                file=sys.stderr,
                flush=True,
            )

    anchor_runs = tuning[ANCHOR]
    frozen = target_for(get_workload(name))
    if frozen is not None and any(first_step_at(r, frozen) for r in anchor_runs.values()):
        target, source = frozen, "frozen"
    else:
        target = min(best_by(r, (3 * steps) // 4) for r in anchor_runs.values())
        source = "adamw@3/4" if frozen is None else "adamw@3/4 (frozen not reached)"

    picks: dict[str, tuple[float, bool]] = {}
    for algorithm, runs in tuning.items():
        lrs = sorted(runs)

        def rank(lr: float, runs=runs) -> tuple[float, float]:
            reached = first_step_at(runs[lr], target)
            final = runs[lr].final_metric
            return (
                math.inf if reached is None else reached,
                math.inf if final is None else final,
            )

        lr = min(lrs, key=rank)
        picks[algorithm] = (lr, lr in (lrs[0], lrs[-1]))

    rows = {}
    for algorithm in algorithms:
        lr, edge = picks[algorithm]
        results = [
            run_trial(trial(algorithm, variant, seed, steps, lr, target))
            for seed in range(1, seeds + 1)
        ]
        rows[algorithm] = {
            "lr": lr,
            "edge": edge,
            "steps": [r.steps_to_target for r in results],
            "time_s": [r.time_to_target_s for r in results],
            "step_ms": statistics.median(r.median_step_ms or math.nan for r in results),
            "status": [r.status for r in results],
        }
        print(f"  report {name} {algorithm}: {rows[algorithm]}", file=sys.stderr, flush=True)
    return {"workload": name, "steps": steps, "target": target, "source": source, "rows": rows}


def ratio(value: float, anchor: float, anchor_bound: float | None = None) -> str:
    """``value / anchor``; where AdamW missed the target, ``<x`` with ``x = value /
    anchor_bound`` (AdamW needs more than the budget) when a bound is known."""
    if math.isinf(value):
        return "-" if math.isinf(anchor) else "never"
    if math.isinf(anchor):
        return "-" if anchor_bound is None else f"<{value / anchor_bound:.2f}"
    return f"{value / anchor:.2f}" if anchor else "-"


def show(value: float, digits: int = 0) -> str:
    return "never" if math.isinf(value) else f"{value:.{digits}f}"


def table(reports: list[dict[str, Any]]) -> str:
    header = (
        f"{'workload':<12} {'target':>18} {'algorithm':<6} {'lr':>8} "
        f"{'steps (median; seeds)':<26} {'x AdamW':>8} {'time s':>7} {'x AdamW':>8} {'ms/step':>8}"
    )
    lines = [header, "-" * len(header)]
    for report in reports:
        rows = report["rows"]
        anchor_steps = median_or_inf(rows[ANCHOR]["steps"])
        anchor_time = median_or_inf(rows[ANCHOR]["time_s"])
        target = f"{report['target']:.4g} {report['source'].split(' ')[0]}"
        for algorithm, row in rows.items():
            steps = median_or_inf(row["steps"])
            seconds = median_or_inf(row["time_s"])
            per_seed = ",".join("-" if s is None else str(s) for s in row["steps"])
            lr = f"{row['lr']:.3g}{'*' if row['edge'] else ''}"
            steps_ratio = ratio(steps, anchor_steps, report["steps"])
            lines.append(
                f"{report['workload']:<12} {target:>18} {algorithm:<6} {lr:>8} "
                f"{show(steps) + ' (' + per_seed + ')':<26} {steps_ratio:>8} "
                f"{show(seconds, 2):>7} {ratio(seconds, anchor_time):>8} {row['step_ms']:>8.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(DEFAULT_STEPS))
    parser.add_argument("--steps", default="", help="per-workload budgets: name=steps,...")
    parser.add_argument("--seeds", type=int, default=3, help="report seeds (after seed 0)")
    parser.add_argument("--algorithms", default="AdamW,Muon,FISMO")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    budgets = dict(DEFAULT_STEPS)
    for item in filter(None, args.steps.split(",")):
        key, _, value = item.partition("=")
        budgets[key] = int(value)
    algorithms = args.algorithms.split(",")
    if ANCHOR not in algorithms:
        algorithms.insert(0, ANCHOR)
    unknown = [a for a in algorithms if a not in CENTER_LR]
    if unknown:
        raise SystemExit(f"no learning-rate centre for {unknown}; known: {sorted(CENTER_LR)}")
    started = time.perf_counter()
    reports = []
    for name in args.workloads.split(","):
        steps = budgets.get(name) or get_workload(name).max_steps
        reports.append(run_workload(name, steps, args.seeds, algorithms))
    print(table(reports))
    print(
        f"\n{args.seeds} seeds, LR sweep x{', x'.join(f'{f:.3g}' for f in SWEEP)} around "
        f"{CENTER_LR}, schedule {SCHEDULE}, 1 thread; total {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(reports, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
