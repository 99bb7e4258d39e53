"""Sven vs Adam vs L-BFGS on the regression workloads at equal wall time.

The paper's claim ("Sven: Singular Value Descent as a Computationally Efficient Natural
Gradient Method", 2026): on regression Sven reaches a lower loss than Adam, and is competitive
with L-BFGS at a fraction of its wall time. Each method trains the workload's MLP from the same
seeded initialisation for the same wall-clock budget: Adam and Sven on the workload's
minibatches, L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search) on the full training set.
Reported: full-training-set MSE and held-out MSE at the end of the budget (medians over seeds),
steps taken, and each loss as a ratio to Adam's (the anchor, measured in the same run).

    .venv/bin/python benchmarks/sven.py                  # ~2.5 minutes, 1 thread
    .venv/bin/python benchmarks/sven.py --budget 30 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from optzoo import Sven
from optzoo.bench.workloads.regression import build_1d, build_diabetes

WORKLOADS = {"regression_1d": build_1d, "diabetes_mlp": build_diabetes}


def train(method: str, build, seed: int, budget: float, options: dict) -> tuple[float, float, int]:
    task = build(seed)
    model = task.model
    x, y = task.split.x_train, task.split.y_train
    if method == "Adam":
        opt = torch.optim.Adam(model.parameters(), lr=options.get("lr", 3e-3))
    elif method == "Sven":
        opt = Sven(model.parameters(), **options)
    else:
        opt = torch.optim.LBFGS(
            model.parameters(), lr=1.0, max_iter=20, history_size=20, line_search_fn="strong_wolfe"
        )
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        if method == "Adam":
            batch = task.batch(steps)
            opt.zero_grad()
            task.loss(batch).backward()
            opt.step()
        elif method == "Sven":
            batch = task.batch(steps)
            opt.step(lambda batch=batch: task.residuals(batch))
        else:

            def closure():
                opt.zero_grad()
                loss = task.loss((x, y))
                loss.backward()
                return loss

            opt.step(closure)
        steps += 1
    with torch.no_grad():
        train_mse = float(task.loss((x, y)))
    return train_mse, task.evaluate(), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per method and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sven-lr", type=float, default=0.5)
    parser.add_argument("--sven-k", type=int, default=32)
    parser.add_argument("--adam-lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = {
        "Adam": {"lr": args.adam_lr},
        "Sven": {"lr": args.sven_lr, "k": args.sven_k},
        "LBFGS": {},
    }
    print(f"budget {args.budget:g} s per run, seeds {args.seeds}, 1 thread")
    header = f"{'workload':14} {'method':6} {'train MSE':>10} {'test MSE':>10} {'steps':>7}"
    print(header + f" {'train/Adam':>10} {'test/Adam':>10}")
    for name, build in WORKLOADS.items():
        results = {}
        for method, options in methods.items():
            runs = [train(method, build, s, args.budget, options) for s in args.seeds]
            results[method] = [statistics.median(r[i] for r in runs) for i in range(3)]
        anchor = results["Adam"]
        for method, (train_mse, test_mse, steps) in results.items():
            print(
                f"{name:14} {method:6} {train_mse:10.4g} {test_mse:10.4g} {int(steps):7d}"
                f" {train_mse / anchor[0]:10.3f} {test_mse / anchor[1]:10.3f}"
            )


if __name__ == "__main__":
    main()
