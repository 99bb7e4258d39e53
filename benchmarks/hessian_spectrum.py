"""Hessian spectrum of a small MLP trained on the digits workload, by Lanczos (top eigenvalues)
and stochastic Lanczos quadrature (density), as in "Empirical Analysis of the Hessian of
Over-Parametrized Neural Networks" (Sagun et al., 2017): expect a bulk of eigenvalues near zero
and a few outliers, about one per class. Writes ``hessian_spectrum.png``; prints the top
eigenvalues, the bulk's share of the spectral mass, and the time of the Lanczos estimate as a
ratio to one gradient evaluation (the anchor, measured in the same run).

    .venv/bin/python benchmarks/hessian_spectrum.py [--out hessian_spectrum.png]   # ~1 minute
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from optzoo.bench.workloads.digits import load_digits_split
from optzoo.diagnostics import plot_spectral_density, spectral_density, top_eigenvalues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="hessian_spectrum.png")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    split = load_digits_split()
    x, y = split.x_train.flatten(1), split.y_train
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(args.train_steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.double()
    xd = x.double()

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(xd), y)

    params = list(model.parameters())
    start = time.perf_counter()
    torch.autograd.grad(loss(), params)
    gradient_s = time.perf_counter() - start
    start = time.perf_counter()
    top = top_eigenvalues(loss, params, k=12, steps=args.steps)
    top_s = time.perf_counter() - start
    start = time.perf_counter()
    density = spectral_density(loss, params, probes=args.probes, steps=args.steps)
    density_s = time.perf_counter() - start
    n = sum(p.numel() for p in params)
    cut = 0.05 * float(top[0])
    bulk = float((density.weights * (density.nodes.abs() < cut)).sum(1).mean())
    print(f"digits MLP {x.shape[1]}-32-10, {n} parameters, train loss {float(loss().detach()):.4f}")
    print("top 12 eigenvalues:", ", ".join(f"{v:.3g}" for v in top.tolist()))
    print(f"spectral mass within 5% of the top eigenvalue of zero (bulk): {bulk:.3f}")
    print(f"{'estimate':22} {'seconds':>8} {'/gradient':>10}")
    print(f"{'gradient (anchor)':22} {gradient_s:8.3f} {1.0:10.1f}")
    print(f"{'Lanczos top-12':22} {top_s:8.3f} {top_s / gradient_s:10.1f}")
    print(f"{'SLQ density':22} {density_s:8.3f} {density_s / gradient_s:10.1f}")
    plot_spectral_density(
        density,
        path=args.out,
        outliers=10,
        title=f"Hessian spectral density, digits MLP ({n} params), SLQ {args.probes} probes",
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
