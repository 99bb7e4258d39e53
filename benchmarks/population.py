"""Vectorized population evaluation against a Python loop over the same population, in one run.

A population of P MLPs (64-32-10 on scikit-learn's digits, 2.4k parameters each; P = 256 by
default) is evaluated on a training batch two ways:

- anchor: a Python loop that writes each candidate into the model's parameters and calls the
  model (what ``opt.step(closure)`` does, one closure call per candidate);
- vectorized: ``optzoo.vectorized_loss`` (``torch.func.functional_call`` + ``vmap``), all P
  candidates in one call (what ``opt.step_population(loss_fn)`` does).

Both produce the same P losses (checked). Then one full CBO step (P particles) is timed both
ways, ``step(closure)`` against ``step_population``. Rounds alternate the two variants;
reported: median seconds and the median per-round speed-up (loop time / vectorized time).

    .venv/bin/python benchmarks/population.py                 # P = 256, batch 256, 15 rounds
    .venv/bin/python benchmarks/population.py --population 64 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional

import optzoo
from optzoo.bench.workloads.digits import load_digits_split


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    split = load_digits_split()
    x, y = split.x_train[: args.batch], split.y_train[: args.batch]
    model = mlp()
    params = list(model.parameters())
    population = [
        p.detach().unsqueeze(0) + 0.1 * torch.randn(args.population, *p.shape) for p in params
    ]

    def loss_of(values: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional.cross_entropy(functional_call(model, values, (x,)), y)

    batched = optzoo.vectorized_loss(model, loss_of)

    @torch.no_grad()
    def loop() -> torch.Tensor:
        losses = torch.empty(args.population)
        for k in range(args.population):
            for p, c in zip(params, population, strict=True):
                p.copy_(c[k])
            losses[k] = functional.cross_entropy(model(x), y)
        return losses

    @torch.no_grad()
    def vectorized() -> torch.Tensor:
        return batched(params, population)

    torch.testing.assert_close(loop(), vectorized(), rtol=1e-4, atol=1e-5)

    def cbo() -> optzoo.CBO:
        return optzoo.CBO(model.parameters(), population_size=args.population, init_std=0.1)

    shell, functional_opt = cbo(), cbo()
    closure = lambda: functional.cross_entropy(model(x), y)  # noqa: E731

    rows: dict[str, list[float]] = {k: [] for k in ("loop", "vmap", "cbo_loop", "cbo_vmap")}
    for _ in range(args.rounds):
        rows["loop"].append(timed(loop)[0])
        rows["vmap"].append(timed(vectorized)[0])
        rows["cbo_loop"].append(timed(lambda: shell.step(closure))[0])
        rows["cbo_vmap"].append(timed(lambda: functional_opt.step_population(batched))[0])

    def ratio(a: str, b: str) -> float:
        return statistics.median(s / v for s, v in zip(rows[a], rows[b], strict=True))

    n = sum(p.numel() for p in params)
    print(
        f"P = {args.population} MLPs 64-32-10 ({n} params each), digits batch {args.batch}, "
        f"{args.threads} thread(s), {args.rounds} rounds (median)"
    )
    print(f"{'what':<34}{'loop s':>10}{'vectorized s':>14}{'speed-up':>10}")
    print(
        f"{'evaluate the population':<34}{statistics.median(rows['loop']):>10.4f}"
        f"{statistics.median(rows['vmap']):>14.4f}{ratio('loop', 'vmap'):>9.1f}x"
    )
    print(
        f"{'one CBO step (P particles)':<34}{statistics.median(rows['cbo_loop']):>10.4f}"
        f"{statistics.median(rows['cbo_vmap']):>14.4f}{ratio('cbo_loop', 'cbo_vmap'):>9.1f}x"
    )


if __name__ == "__main__":
    main()
