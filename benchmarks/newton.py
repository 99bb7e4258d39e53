"""Regularized Newton (Algorithm 1 of "Gradient-Normalized Smoothness for Optimization with
Approximate Hessians", 2025) vs gradient descent on the bench's logistic regression, and its
Hessian approximations (exact, empirical Fisher, Gauss-Newton) compared.

Full-batch, float64, on the ``logistic`` workload's data (2048 x 32 correlated features,
L2 penalty 1e-3). Each method runs until the gradient norm is below 1e-8 or its iteration cap;
reported: iterations, gradient evaluations (Newton's adaptive search evaluates the gradient at
every trial point), wall time and final gradient norm, with iterations and time as ratios to
gradient descent (the anchor: step 1/L with L = |X|^2 / (4 n) + 1e-3, measured in the same run).

    .venv/bin/python benchmarks/newton.py      # well under a minute, 1 thread
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional

from optzoo import RegularizedNewton
from optzoo.bench.workloads.logistic import REGULARIZATION, LogisticTask

TOLERANCE = 1e-8


def problem(seed: int):
    task = LogisticTask(seed)
    model = task.model.double()
    x, y = task.x.double(), task.y.double()

    def losses() -> torch.Tensor:
        logits, penalty = model(x)
        return functional.binary_cross_entropy_with_logits(logits, y, reduction="none") + penalty

    return model, losses, x


def grad_norm(model, losses) -> float:
    with torch.enable_grad():
        grads = torch.autograd.grad(losses().mean(), list(model.parameters()))
    return float(torch.cat([g.reshape(-1) for g in grads]).norm())


def run_newton(kind: str, seed: int, cap: int):
    model, losses, _ = problem(seed)
    opt = RegularizedNewton(model.parameters(), hessian=kind)
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        return losses()

    start = time.perf_counter()
    iterations = 0
    norm = grad_norm(model, losses)
    while norm >= TOLERANCE and iterations < cap:
        opt.step(closure)
        iterations += 1
        norm = grad_norm(model, losses)
    return iterations, evaluations, time.perf_counter() - start, norm


def run_gradient_descent(seed: int, cap: int):
    model, losses, x = problem(seed)
    smoothness = float(torch.linalg.matrix_norm(x, ord=2)) ** 2 / (4 * len(x)) + REGULARIZATION
    params = list(model.parameters())
    start = time.perf_counter()
    iterations, norm = 0, float("inf")
    while iterations < cap:
        grads = torch.autograd.grad(losses().mean(), params)
        norm = float(torch.cat([g.reshape(-1) for g in grads]).norm())
        if norm < TOLERANCE:
            break
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(g / smoothness)
        iterations += 1
    return iterations, iterations + 1, time.perf_counter() - start, norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gd-cap", type=int, default=20000)
    parser.add_argument("--newton-cap", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {"gradient descent (1/L)": run_gradient_descent(args.seed, args.gd_cap)}
    for kind in ("exact", "fisher", "gauss_newton"):
        rows[f"Newton, {kind}"] = run_newton(kind, args.seed, args.newton_cap)
    anchor = rows["gradient descent (1/L)"]
    print(f"logistic workload (seed {args.seed}), float64, target |grad| < {TOLERANCE:g}, 1 thread")
    print(
        f"{'method':24} {'iters':>7} {'grad evals':>10} {'time s':>8} {'|grad|':>9}"
        f" {'iters/GD':>9} {'time/GD':>8}"
    )
    for name, (iterations, evaluations, seconds, norm) in rows.items():
        print(
            f"{name:24} {iterations:7d} {evaluations:10d} {seconds:8.2f} {norm:9.2e}"
            f" {iterations / max(anchor[0], 1):9.4f} {seconds / anchor[2]:8.3f}"
        )


if __name__ == "__main__":
    main()
